"""tvmech: the mechanics of task vectors, on TransformerLens."""

from .adapter import Adapter, adapt
from .evaluate import EvalResult, evaluate, evaluate_prompts, last_logprobs
from .models import DEFAULT_MODEL, ModelNotAvailable, default_gguf_path, load_model
from .prompts import Batch, Prompt, encode, make_prompts
from .tasks import BUILTIN, Example, Splits, Task, Template, builtin_task, builtin_tasks, load_task

__version__ = "0.1.0"
__all__ = [
    "Adapter", "adapt", "EvalResult", "evaluate", "evaluate_prompts", "last_logprobs", "DEFAULT_MODEL",
    "ModelNotAvailable", "default_gguf_path", "load_model", "Batch", "Prompt", "encode", "make_prompts",
    "BUILTIN", "Example", "Splits", "Task", "Template", "builtin_task", "builtin_tasks", "load_task",
]
