"""Where a task comes from: :func:`load_task` reads a built-in name, a JSON/JSONL file or ``"hf:<name>"``.

It sits above the two readers it dispatches to, :mod:`tvmech.data.tasks` (the :class:`~tvmech.data.tasks.Task`
type, built-in and file tasks) and :mod:`tvmech.data.hf` (Hugging Face datasets, which imports ``tasks``), so no
import runs back between them.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tvmech.data.hf import load_hf_task
from tvmech.data.tasks import BUILTIN, Task, builtin_task, read_records, suggest_label_set


def load_task(source: str | Path, *, coerce: bool = False, **overrides) -> Task:
    """A built-in task name, a ``.json``/``.jsonl`` file path, or ``"hf:<name>"`` (needs the hub).

    A file is UTF-8 (a byte-order mark and ``\\r\\n`` line ends are accepted) holding a JSON list of
    ``{"input": ..., "output": ...}`` records, or one record per line (``.jsonl``); errors name the record by
    its 1-based number (and line, for JSONL) and a missing key by name.

    Scoring of a file task. It is first-token scoring unless ``scoring`` says otherwise. When the outputs look
    like a closed label set (2 to :data:`~tvmech.data.tasks.MAX_LABELS` distinct outputs, each used twice on
    average), one ``UserWarning`` suggests ``scoring="label_set"``; it is suggested, not chosen, because the
    scoring mode decides what every accuracy means (over the whole vocabulary, or among the labels), and a
    mode picked by a heuristic would change that meaning silently when a file gains or loses a few rows.
    ``scoring="label_set"`` without ``labels`` takes the file's distinct outputs, in order of first use, as
    the label set; passing any ``scoring`` silences the suggestion.

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
        examples = read_records(src, coerce=coerce)
        if overrides.get("scoring") == "label_set" and not overrides.get("labels"):
            overrides["labels"] = tuple(dict.fromkeys(e.output for e in examples))
        task = Task(name=Path(src).stem, examples=examples)
        if "scoring" not in overrides:
            suggest_label_set(task, src)
    else:
        raise ValueError(
            f"unknown task {src!r}; valid: a built-in name ({', '.join(BUILTIN)}), a .json/.jsonl file, "
            "or 'hf:<dataset>'"
        )
    return replace(task, **overrides) if overrides else task


__all__ = ["load_task"]
