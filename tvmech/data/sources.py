"""Where a task comes from: :func:`load_task` reads a built-in name, a JSON/JSONL file or ``"hf:<name>"``;
:func:`load_tasks` reads every task file of a folder (the layout of function_vectors' ``dataset_files/``).

It sits above the two readers it dispatches to, :mod:`tvmech.data.tasks` (the :class:`~tvmech.data.tasks.Task`
type, built-in and file tasks) and :mod:`tvmech.data.hf` (Hugging Face datasets, which imports ``tasks``), so no
import runs back between them.
"""

from __future__ import annotations

import warnings
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


def load_tasks(path: str | Path, *, coerce: bool = False, **overrides) -> dict[str, Task]:
    """Every task file of a folder: the ``.json`` / ``.jsonl`` files in ``path`` and its subfolders, each read by
    :func:`load_task` (the same validation), in place (nothing is copied).

    This is the layout of the function_vectors repository's ``dataset_files/`` (Todd et al. 2024): one JSON list of
    ``{"input", "output"}`` records per task, in ``abstractive/`` and ``extractive/``. A ``.json`` file whose top
    level is a JSON object is not a task file (their ``generate/categories.json``): it is skipped, and one warning
    names every file skipped. Hidden folders (``.git``) are not read.

    Args:
        path: the folder (``~`` is expanded).
        coerce: convert number and boolean inputs/outputs with ``str()`` (see :func:`load_task`).
        **overrides: ``template``, ``labels``, ``scoring``, ``description``: replace the defaults of every task.

    Returns:
        ``{name: task}`` in path order; the name is the file's stem, and the task's ``description`` is the file's
        path relative to ``path`` (``"abstractive/antonym.json"``: the subfolder it came from) unless overridden.

    Raises:
        FileNotFoundError: ``path`` is not a folder, or holds no task file.
        ValueError: a file is not a valid task file (the message names the file), or two files share a name.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        hint = " (a single task file loads with load_task)" if root.is_file() else ""
        raise FileNotFoundError(f"task folder {str(path)!r} is not a folder{hint}")
    if "name" in overrides:
        raise ValueError("load_tasks names each task after its file; 'name' cannot be overridden")
    files = sorted(f for f in root.rglob("*") if f.suffix in (".json", ".jsonl") and f.is_file()
                   and not any(part.startswith(".") for part in f.relative_to(root).parts))
    tasks: dict[str, Task] = {}
    where: dict[str, Path] = {}
    skipped = []
    for f in files:
        if f.suffix == ".json" and f.read_text(encoding="utf-8-sig", errors="replace").lstrip().startswith("{"):
            skipped.append(f.relative_to(root).as_posix())
            continue
        if f.stem in tasks:
            raise ValueError(f"two task files are named {f.stem!r}: {where[f.stem]} and {f}; load the subfolders "
                             "one at a time")
        try:
            task = load_task(f, coerce=coerce, **{"description": f.relative_to(root).as_posix(), **overrides})
        except ValueError as e:
            if str(f) in str(e):
                raise
            raise ValueError(f"{f}: {e}") from e
        tasks[f.stem], where[f.stem] = task, f
    if skipped:
        warnings.warn(f"{root}: skipped {len(skipped)} JSON file(s) holding an object, not a list of records: "
                      f"{', '.join(skipped)}", UserWarning, stacklevel=2)
    if not tasks:
        raise FileNotFoundError(f"task folder {str(root)!r} holds no task file (.json list or .jsonl of "
                                "{'input': ..., 'output': ...} records)")
    return tasks


__all__ = ["load_task", "load_tasks"]
