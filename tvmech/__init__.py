"""tvmech: the mechanics of task vectors, on TransformerLens.

The subpackages, one role each: ``core`` (the TransformerLens adapter, model loading, files), ``data``
(tasks, prompts), ``interventions`` (everything that writes into a forward pass), ``methods`` (how task
vectors are made), ``analysis`` (what is measured), ``experiments`` (one module per paper experiment),
``synthetic`` (small models trained from scratch), ``plots`` (plotly builders) and ``pipeline`` (the command
line that runs the experiments and writes the figures).
The names below are the primitives, grouped as in ``__all__``.
"""

from tvmech.analysis.attention_stats import AttentionStats, attention_stats
from tvmech.analysis.continuation import generation_accuracy
from tvmech.analysis.evaluation import EvalResult, evaluate, evaluate_prompts, last_logprobs, score_batch
from tvmech.analysis.head_attribution import (
                                  HeadScores,
                                  ablated_accuracy,
                                  ablation,
                                  ablation_effects,
                                  key_heads,
                                  taylor_scores,
)
from tvmech.analysis.lens import Decoded, LabelDirections, decode, label_directions, lens_metrics, query_states
from tvmech.analysis.ov import Reconstruction, ov_circuits, packaged_ov_effect, reinjection
from tvmech.analysis.polar import polar_decomposition, rotation_scaling
from tvmech.analysis.tv_map import LinearMap, MapConfig, exact_jacobian, fit_tv_map
from tvmech.core.adapter import Adapter, adapt
from tvmech.core.fast import fast_path, set_fast_path
from tvmech.core.models import DEFAULT_MODEL, GEMMA3_MODEL, ModelNotAvailable, default_gguf_path, load_model, wrap
from tvmech.data.prompts import Batch, Prompt, encode, make_prompts
from tvmech.data.sources import load_task, load_tasks
from tvmech.data.tasks import BUILTIN, Example, Splits, Task, Template, builtin_task, builtin_tasks
from tvmech.interventions import (
                                  Capture,
                                  Compose,
                                  Context,
                                  Generation,
                                  HeadPatch,
                                  Injection,
                                  Intervention,
                                  LowRankAttnOut,
                                  Mode,
                                  Point,
                                  TaskVector,
                                  compose,
                                  generate,
)
from tvmech.methods.function_vectors import FunctionVectorHeads, function_vector, function_vector_heads
from tvmech.methods.learned import LTVConfig, learn_layer_sweep, learn_task_vector
from tvmech.methods.peft_training import train_peft
from tvmech.methods.prompt_tuning import evaluate_prefix
from tvmech.methods.training import TrainingDiverged
from tvmech.methods.vanilla import vanilla_task_vector

__version__ = "0.1.0"
__all__ = [
    # core: models and the adapter
    "load_model", "wrap", "DEFAULT_MODEL", "GEMMA3_MODEL", "ModelNotAvailable", "default_gguf_path", "Adapter",
    "adapt", "fast_path", "set_fast_path",
    # data: tasks and prompts
    "Task", "Template", "Example", "Splits", "BUILTIN", "builtin_task", "builtin_tasks", "load_task", "load_tasks",
    "Prompt", "Batch", "make_prompts", "encode",
    # interventions: writes into the forward pass, vectors, generation
    "Intervention", "Compose", "compose", "Context", "Point", "Mode", "Injection", "HeadPatch", "Capture",
    "LowRankAttnOut", "TaskVector", "generate", "Generation",
    # methods: making task vectors
    "LTVConfig", "TrainingDiverged", "learn_task_vector", "learn_layer_sweep", "vanilla_task_vector",
    "function_vector", "function_vector_heads", "FunctionVectorHeads", "train_peft", "evaluate_prefix",
    # analysis: measuring
    "EvalResult", "evaluate", "evaluate_prompts", "score_batch", "last_logprobs", "HeadScores", "taylor_scores",
    "key_heads", "ablation", "ablation_effects", "ablated_accuracy", "AttentionStats", "attention_stats", "Decoded",
    "LabelDirections", "decode", "label_directions", "lens_metrics", "query_states", "Reconstruction", "ov_circuits",
    "packaged_ov_effect", "reinjection", "MapConfig", "LinearMap", "fit_tv_map", "exact_jacobian",
    "polar_decomposition", "rotation_scaling",
    "generation_accuracy",
]
