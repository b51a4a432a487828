"""tvmech: the mechanics of task vectors, on TransformerLens."""

from .adapter import Adapter, adapt
from .evaluate import EvalResult, evaluate, evaluate_prompts, last_logprobs
from .extract import vanilla_task_vector
from .function_vectors import function_vector, function_vector_heads
from .heads import key_heads, taylor_scores
from .inject import Injection
from .learn import LTVConfig, TrainingDiverged, learn_layer_sweep, learn_task_vector
from .lens import decode, lens_metrics
from .linear_map import MapConfig, exact_jacobian, fit_tv_map
from .models import DEFAULT_MODEL, ModelNotAvailable, default_gguf_path, load_model
from .ov import ov_circuits, packaged_ov_effect
from .polar import polar_decomposition, rotation_scaling
from .prompts import Batch, Prompt, encode, make_prompts
from .sinks import attention_stats
from .tasks import BUILTIN, Example, Splits, Task, Template, builtin_task, builtin_tasks, load_task
from .vectors import TaskVector

__version__ = "0.1.0"
__all__ = [
    "Adapter", "adapt", "EvalResult", "evaluate", "evaluate_prompts", "last_logprobs", "DEFAULT_MODEL",
    "ModelNotAvailable", "default_gguf_path", "load_model", "Batch", "Prompt", "encode", "make_prompts",
    "BUILTIN", "Example", "Splits", "Task", "Template", "builtin_task", "builtin_tasks", "load_task",
    "vanilla_task_vector", "function_vector", "function_vector_heads", "Injection", "LTVConfig", "TrainingDiverged",
    "learn_layer_sweep", "learn_task_vector", "TaskVector", "key_heads", "taylor_scores", "decode", "lens_metrics",
    "MapConfig", "exact_jacobian", "fit_tv_map", "ov_circuits", "packaged_ov_effect", "polar_decomposition",
    "rotation_scaling", "attention_stats",
]
