"""Tasks from Hugging Face ``datasets`` (needs the ``datasets`` package and the hub)."""

from __future__ import annotations

from tvmech.core.io import hub_reachable
from tvmech.data.tasks import Example, Task, Template

# name -> (dataset path, config, split, input columns, label column, label names, template)
HF_TASKS: dict[str, tuple] = {
    "sst2": ("glue", "sst2", "validation", ("sentence",), "label", ("negative", "positive"),
             Template("Review: {input}\nSentiment:", separator="\n\n")),
    "trec": ("trec", None, "test", ("text",), "coarse_label",
             ("abbreviation", "entity", "description", "human", "location", "number"),
             Template("Question: {input}\nAnswer type:", separator="\n\n")),
    "snli": ("snli", None, "validation", ("premise", "hypothesis"), "label",
             ("entailment", "neutral", "contradiction"), Template("{input}\nRelation:", separator="\n\n")),
    "rte": ("glue", "rte", "validation", ("sentence1", "sentence2"), "label",
            ("entailment", "not_entailment"), Template("{input}\nRelation:", separator="\n\n")),
}


def load_hf_task(name: str, limit: int = 1000) -> Task:
    """One of :data:`HF_TASKS` as a label-set task, downloaded with ``datasets``.

    Args:
        name: a key of :data:`HF_TASKS` (``"sst2"``, ``"trec"``, ``"snli"``, ``"rte"``).
        limit: read at most this many rows of the split (unlabelled rows are then skipped).

    Returns:
        The task; exact duplicate rows are dropped with one warning (see :class:`Task`).
    """
    if name not in HF_TASKS:
        raise ValueError(f"unknown Hugging Face task {name!r}; valid: {', '.join('hf:' + k for k in HF_TASKS)}")
    try:
        import datasets
    except ImportError:
        raise ImportError("Hugging Face tasks need the datasets package: pip install 'tvmech[datasets]'") from None
    if not hub_reachable():
        raise RuntimeError(f"hf:{name} must be downloaded from the Hugging Face hub, which is out of reach from here")
    path, config, split, cols, label_col, names, template = HF_TASKS[name]
    ds = datasets.load_dataset(path, config, split=split)
    examples = []
    for row in ds.select(range(min(limit, len(ds)))):
        if row[label_col] < 0:
            continue
        text = row[cols[0]] if len(cols) == 1 else f"Premise: {row[cols[0]]} Hypothesis: {row[cols[1]]}"
        examples.append(Example(text.strip(), names[row[label_col]]))
    return Task(name=name, examples=tuple(examples), template=template, labels=names, scoring="label_set")
