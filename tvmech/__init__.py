"""tvmech: the mechanics of task vectors, on TransformerLens."""

from tvmech.core.adapter import Adapter, adapt
from tvmech.analysis.evaluation import EvalResult, evaluate, evaluate_prompts, last_logprobs
from tvmech.methods.vanilla import vanilla_task_vector
from tvmech.methods.function_vectors import function_vector, function_vector_heads
from tvmech.analysis.heads import key_heads, taylor_scores
from tvmech.interventions.injection import Injection
from tvmech.methods.learned import LTVConfig, TrainingDiverged, learn_layer_sweep, learn_task_vector
from tvmech.analysis.lens import decode, lens_metrics
from tvmech.analysis.linear_map import MapConfig, exact_jacobian, fit_tv_map
from tvmech.core.models import DEFAULT_MODEL, ModelNotAvailable, default_gguf_path, load_model
from tvmech.analysis.ov import ov_circuits, packaged_ov_effect
from tvmech.analysis.polar import polar_decomposition, rotation_scaling
from tvmech.data.prompts import Batch, Prompt, encode, make_prompts
from tvmech.analysis.sinks import attention_stats
from tvmech.data.tasks import BUILTIN, Example, Splits, Task, Template, builtin_task, builtin_tasks, load_task
from tvmech.interventions.task_vector import TaskVector

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
