"""Tasks and prompts: (input, output) examples with a template, a label set and a scoring mode; seeded
train / val / test splits; zero-shot and k-shot prompts in right-padded batches with known query positions.

:func:`load_task` reads a built-in task, a JSON/JSONL file or a Hugging Face dataset (``"hf:sst2"``);
:func:`make_prompts` and :func:`encode` turn examples into a :class:`Batch`.
"""

from tvmech.data.hf import HF_TASKS, load_hf_task
from tvmech.data.prompts import Batch, Prompt, batches, encode, make_prompts
from tvmech.data.sources import load_task, load_tasks
from tvmech.data.tasks import (
    BUILTIN,
    SCORING_MODES,
    Example,
    Splits,
    Task,
    Template,
    builtin_task,
    builtin_tasks,
    parse_records,
    read_records,
)

__all__ = ["Task", "Template", "Example", "Splits", "BUILTIN", "SCORING_MODES", "builtin_task", "builtin_tasks",
           "load_task", "load_tasks", "read_records", "parse_records", "HF_TASKS", "load_hf_task", "Prompt", "Batch",
           "make_prompts", "encode", "batches"]
