"""Where a task comes from: :func:`load_task` reads a built-in name, a JSON/JSONL file or ``"hf:<name>"``.

It sits above the two readers it dispatches to, :mod:`tvmech.data.tasks` (the :class:`~tvmech.data.tasks.Task`
type, built-in and file tasks) and :mod:`tvmech.data.hf` (Hugging Face datasets, which imports ``tasks``), so no
import runs back between them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tvmech.data.hf import load_hf_task
from tvmech.data.tasks import BUILTIN, Task, builtin_task, read_records


def load_task(source: str | Path, *, coerce: bool = False, **overrides) -> Task:
    """A built-in task name, a ``.json``/``.jsonl`` file path, or ``"hf:<name>"`` (needs the hub).

    Args:
        source: the task.
        coerce: for a file, convert number and boolean inputs/outputs with ``str()`` instead of
            refusing them (see :func:`~tvmech.data.tasks.parse_records`).
        **overrides: ``template``, ``labels``, ``scoring``, ``name``, ``description``: replace the defaults.

    Returns:
        The task; exact duplicate examples are dropped with one warning.
    """
    src = str(source)
    if src.startswith("hf:"):
        task = load_hf_task(src[3:])
    elif src in BUILTIN:
        task = builtin_task(src)
    elif src.endswith((".json", ".jsonl")):
        if not Path(src).is_file():
            raise FileNotFoundError(f"task file {src!r} does not exist")
        task = Task(name=Path(src).stem, examples=read_records(src, coerce=coerce))
    else:
        raise ValueError(
            f"unknown task {src!r}; valid: a built-in name ({', '.join(BUILTIN)}), a .json/.jsonl file, "
            "or 'hf:<dataset>'"
        )
    return replace(task, **overrides) if overrides else task


__all__ = ["load_task"]
