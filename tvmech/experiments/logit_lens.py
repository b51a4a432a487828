"""Logit lens at the query position over all layers, for zero-shot, k-shot ICL and LTV-injected prompts
(``figures/logit_lens.json``).

Per task, :func:`lens_conditions` runs :func:`tvmech.analysis.lens.lens_metrics` (lens accuracy, probability of
the correct first token and task alignment at every layer 0..L) on three kinds of prompts of the same test
queries: zero-shot, k-shot, and zero-shot with the task's LTV added at ``tv_layer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvmech.analysis.lens import lens_metrics
from tvmech.core.progress import tqdm
from tvmech.data.prompts import Prompt, make_prompts
from tvmech.data.tasks import Example, Task, builtin_task
from tvmech.experiments.common import (
    ALL_TASKS,
    ExperimentConfig,
    RecordsResult,
    heldout_queries,
    learned_vectors,
    middle_layer,
    option,
)
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.task_vector import TaskVector


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the logit-lens experiment (flags ``--lens-*``)."""

    PREFIX = "lens"
    DERIVED = {"tv_layer": middle_layer}

    tasks: tuple[str, ...] = option(ALL_TASKS, "tasks of the logit-lens heatmap", choices=ALL_TASKS)
    tv_layer: int | None = option(None, "layer of the LTV in the lens's TV condition (None: the middle layer)")
    ltv_steps: int = option(150, "training steps per learned task vector")
    k: int = option(5, "demonstrations of the ICL condition")
    n_test: int | None = option(40, "test queries per task (None or 0: the whole test split)")
    seed: int = option(0, "seed of the splits, the demonstrations and the LTV training")


class Result(RecordsResult[Config]):
    """One record per (task, condition, layer): ``accuracy, p_correct, task_alignment, top_tokens, ...``."""

    TABLE = "logit_lens"


def lens_conditions(model, task: Task, queries: Sequence[Example], vector: TaskVector | None = None, *, k: int = 5,
                    demos: Sequence[Example] = (), seed: int = 0, top_k: int = 5) -> list[dict]:
    """:func:`lens_metrics` for the zero-shot prompts, the ``k``-shot prompts (demonstrations from
    ``demos``) and, with ``vector``, the zero-shot prompts with the vector injected; each record gets
    ``task`` and ``condition``.

    Args:
        model: a loaded model.
        task: the task.
        queries: the test queries.
        vector: a one-site task vector at the query position (no TV condition when ``None``).
        k: demonstrations of the ICL condition (none when 0).
        demos: where the demonstrations come from.
        seed: seed of the demonstrations drawn.
        top_k: lens tokens kept per layer.

    Returns:
        The records of the conditions ``zero_shot``, ``icl_{k}shot`` and ``tv_L{layer}``, layer by layer.
    """
    zero_shot = make_prompts(task, queries, 0)
    conditions: list[tuple[str, list[Prompt], TaskVector | None]] = [("zero_shot", zero_shot, None)]
    if k:
        conditions.append((f"icl_{k}shot", make_prompts(task, queries, k, demos, seed=seed), None))
    if vector is not None:
        conditions.append((f"tv_L{vector.layers[0]}", conditions[0][1], vector))
    rows = []
    for name, prompts, vec in conditions:
        for r in lens_metrics(model, task, prompts, vec, top_k=top_k):
            rows.append({"task": task.name, "condition": name, **r})
    return rows


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None, progress: bool = True) -> Result:
    """The lens of every task in the three conditions (:func:`lens_conditions`).

    Args:
        model: a loaded model.
        config: the settings.
        vectors: where the LTVs are kept (in memory when ``None``).
        progress: show progress bars (also off under ``TQDM_DISABLE=1``).

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vecs = learned_vectors(model, config, config.tv_layer, vectors, progress=progress)
    rows = []
    for name in tqdm(config.tasks, desc="logit lens", disable=not progress):
        task = builtin_task(name)
        rows += lens_conditions(model, task, heldout_queries(task, config.seed, config.n_test), vecs[name], k=config.k,
                                demos=task.splits(config.seed).train, seed=config.seed)
    return Result(config, rows)
