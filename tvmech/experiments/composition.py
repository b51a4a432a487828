"""Composition: english_french + masculine_feminine LTVs (and their sum) on the composed task
(``figures/composition.json``).

The composed task maps an English masculine word to its French feminine counterpart (king → reine), so it
needs both parts; :func:`composition_experiment` compares zero-shot, each part's LTV alone, their sum
``w_fr θ_fr + w_fem θ_fem`` (:func:`tvmech.analysis.geometry.compose`) and k-shot ICL.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from tvmech.analysis.evaluation import evaluate
from tvmech.analysis.geometry import compose
from tvmech.data.tasks import Example, Task, Template, parse_records
from tvmech.experiments.common import ExperimentConfig, RecordsResult, learned_vectors, middle_layer, option
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.task_vector import TaskVector

PARTS = ("english_french", "masculine_feminine")
SCORINGS = ("exact_match", "first_token")
COMPOSITION_TASK = "english_french_feminine"
COMPOSITION_FRACTIONS = (0.3, 0.1, 0.6)


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the composition experiment."""

    PREFIX = "composition"
    DERIVED = {"layer": middle_layer}

    layer: int | None = option(None, "layer of the two LTVs (None: the model's middle layer n_layers // 2)",
                               flag="--geometry-layer")
    ltv_steps: int = option(150, "training steps per learned task vector")
    k: int = option(5, "demonstrations of the ICL reference")
    seed: int = option(0, "seed of the splits and the LTV training")
    # first-token scoring cannot tell French 'mar'(quis) from 'mar'(quise)
    scoring: str = option("exact_match", "how an answer is scored", choices=SCORINGS)

    def __post_init__(self):
        super().__post_init__()
        if self.scoring not in SCORINGS:
            raise ValueError(f"composition scoring {self.scoring!r} is not valid; valid: {list(SCORINGS)}")


class Result(RecordsResult[Config]):
    """One record per method: ``method, accuracy, n, k, task, scoring``."""

    TABLE = "composition"


def composition_task() -> Task:
    """English masculine word → French feminine counterpart (king → reine), with the default template.

    Returns:
        The task, written for tvmech (``tvmech/data/builtin/composition/english_french_feminine.json``).
    """
    data = resources.files("tvmech") / "data" / "builtin" / "composition" / f"{COMPOSITION_TASK}.json"
    examples = parse_records(json.loads(data.read_text(encoding="utf-8")), f"composition task {COMPOSITION_TASK}")
    return Task(name=COMPOSITION_TASK, examples=examples, template=Template(),
                description="English masculine word -> French feminine counterpart (king -> reine)")


def composition_experiment(model, vec_fr: TaskVector, vec_fem: TaskVector, task: Task | None = None, *,
                           n_test: int | None = None, k: int = 5, seed: int = 0,
                           fractions: tuple[float, float, float] = COMPOSITION_FRACTIONS,
                           weights: tuple[float, float] = (1.0, 1.0), demos: Sequence[Example] | None = None,
                           scoring: str | None = None, batch_size: int = 16, progress: bool = False) -> list[dict]:
    """Accuracy on the composition task's test split for five methods.

    ``zero_shot`` (no vector), ``english_french LTV`` (θ_fr alone), ``masculine_feminine LTV``
    (θ_fem alone), ``sum of both`` (:func:`compose`, ``w_fr θ_fr + w_fem θ_fem``) and ``icl_{k}shot``
    (``k`` demonstrations from ``demos``, by default the task's own train split). ``task`` defaults to
    :func:`composition_task`; it is split with ``fractions`` and ``seed``, and the first ``n_test``
    test items are used.

    Args:
        model: a loaded model.
        vec_fr: the english_french vector θ_fr.
        vec_fem: the masculine_feminine vector θ_fem (same sites as θ_fr).
        task: the composed task (default :func:`composition_task`).
        n_test: cap on test queries (``None``: all).
        k: demonstrations of the ICL run.
        seed: seed of the split and the demonstrations.
        fractions: train / val / test fractions of the split.
        weights: ``(w_fr, w_fem)``.
        demos: where the demonstrations come from.
        scoring: overrides the task's scoring mode.
        batch_size: prompts per forward pass.
        progress: show progress bars.

    Returns:
        ``[{"method", "accuracy", "n", "k", "task", "scoring"}]``.
    """
    task = composition_task() if task is None else task
    sp = task.splits(seed, fractions)
    test = sp.test[:n_test]
    if not test:
        raise ValueError(f"task {task.name!r}: the test split is empty")
    demos = sp.train if demos is None else demos
    runs: list[tuple[str, int, TaskVector | None]] = [
        ("zero_shot", 0, None), ("english_french LTV", 0, vec_fr), ("masculine_feminine LTV", 0, vec_fem),
        ("sum of both", 0, compose(vec_fr, vec_fem, weights)), (f"icl_{k}shot", k, None),
    ]
    rows = []
    for method, shots, vec in runs:
        res = evaluate(model, task, test, k=shots, demos=demos if shots else (), seed=seed, scoring=scoring,
                       batch_size=batch_size, hooks_for=vec.hooks_for(model) if vec is not None else None,
                       progress=progress)
        rows.append({"method": method, "accuracy": res.accuracy, "n": res.n, "k": shots, "task": task.name,
                     "scoring": res.scoring})
    return rows


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None) -> Result:
    """Zero-shot, each LTV, their sum and k-shot ICL on the composed task.

    Args:
        model: a loaded model.
        config: the settings.
        vectors: where the two LTVs are kept (in memory when ``None``).

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vecs = learned_vectors(model, config, config.layer, vectors, PARTS)
    rows = composition_experiment(model, vecs[PARTS[0]], vecs[PARTS[1]], k=config.k, seed=config.seed,
                                  scoring=config.scoring)
    return Result(config, rows)
