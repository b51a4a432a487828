"""Layer sweep: accuracy of a task vector injected at each layer (last position), LTV vs Vanilla TV vs
function vector, with zero-shot and k-shot ICL accuracy as reference lines (``figures/layer_sweep.json``).

Scorings. Every accuracy is reported under each scoring of :func:`headline_scorings` (one row per scoring, all
from the same forward pass): full-vocabulary first-token scoring first, the headline (the argmax over the whole
vocabulary must be the label's first token, so zero-shot is near 0 and a vector's effect shows), then the task's
own where it differs (label-set scoring for the classification tasks, under which zero-shot is already high:
sentiment 0.96 on the default model, 1/|labels| by chance alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvmech.analysis.evaluation import check_scorings, evaluate_multi, resolve_scorings
from tvmech.core.progress import tqdm
from tvmech.data.tasks import SCORING_MODES, Task, builtin_tasks
from tvmech.experiments.common import (
    ALL_TASKS,
    ExperimentConfig,
    RecordsResult,
    evenly_spaced_layers,
    every_nth_layer,
    heldout_queries,
    option,
)
from tvmech.methods.function_vectors import function_vector, function_vector_heads
from tvmech.methods.learned import LTVConfig, learn_layer_sweep
from tvmech.methods.vanilla import vanilla_task_vector

METHODS = ("ltv", "vanilla", "fv")


def headline_scorings(task: Task, scorings: Sequence[str] | None = None) -> tuple[str, ...]:
    """The scorings of a sweep or PEFT accuracy: ``scorings`` (``label_set`` left out for a task without a closed
    label set), or by default ``first_token`` (the headline) and then the task's own when it is another.

    Args:
        task: the task.
        scorings: scoring modes, or ``None``.

    Returns:
        At least one scoring mode; the first is the headline.
    """
    return tuple(dict.fromkeys(("first_token", task.scoring))) if scorings is None else \
        resolve_scorings(task, scorings)


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the layer sweep."""

    PREFIX = "sweep"
    DERIVED = {"layers": lambda n_layers, c: evenly_spaced_layers(n_layers, c.layer_count) if c.layer_count
               else every_nth_layer(n_layers, 3)}
    OPTIONAL_SETTINGS = ("layer_count", "fv_prompts", "scorings")

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks of the sweep", choices=ALL_TASKS)
    layers: tuple[int, ...] | None = option(None, "injection layers (None: every 3rd layer of the model, from 0, or "
                                                  "layer_count evenly spaced layers)")
    layer_count: int | None = option(None, "with --sweep-layers derived: this many evenly spaced layers instead of "
                                           "every 3rd (None: every 3rd)")
    ltv_steps: int = option(150, "training steps per learned task vector")
    k: int = option(5, "demonstrations of the Vanilla TV / function-vector prompts and of the ICL reference")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits, the demonstrations and the LTV training")
    fv_prompts: int | None = option(None, "k-shot prompts of the function vectors' mean head outputs and indirect "
                                          "effects (None: 16; the indirect effects dominate the step's cost)")
    scorings: tuple[str, ...] | None = option(
        None, "scoring modes of every accuracy, the first the headline (None: first_token, then the task's own "
              "where it differs)", choices=SCORING_MODES)

    def __post_init__(self):
        super().__post_init__()
        if self.scorings is not None:
            check_scorings(self.scorings, f"{self.label} scorings")

    def settings(self) -> dict:
        return {**super().settings(), "methods": list(METHODS)}


class Result(RecordsResult[Config]):
    """One record per (task, method, layer, scoring): ``task, method, layer, scoring, accuracy, n`` (``layer`` is
    ``None`` for the references ``zero_shot`` and ``icl_{k}shot``)."""

    TABLE = "layer_sweep"


def layer_sweep(model, tasks: Sequence[Task], layers: Sequence[int], *, config: LTVConfig = LTVConfig(),
                k: int = 5, n_test: int | None = None, seed: int = 0, fv_prompts: int = 16,
                scorings: Sequence[str] | None = None, progress: bool = True) -> list[dict]:
    """One record per (task, method, layer, scoring): ``task, method, layer, scoring, accuracy, n``.

    Methods: ``ltv`` (all layers trained together, see :func:`learn_layer_sweep`), ``vanilla``
    (:func:`vanilla_task_vector` from k-shot prompts), ``fv`` (:func:`function_vector`, top-10 heads
    by causal indirect effect, the same vector placed at each layer), and the references ``zero_shot`` and
    ``icl_{k}shot`` (``layer`` is ``None`` for those). Scorings: :func:`headline_scorings`, all from one pass.
    """
    rows: list[dict] = []
    for task in tqdm(tasks, desc="layer sweep", disable=not progress):
        sp = task.splits(seed)
        test = heldout_queries(task, seed, n_test)
        scored = headline_scorings(task, scorings)
        for method, kk in (("zero_shot", 0), (f"icl_{k}shot", k)):
            res = evaluate_multi(model, task, test, kk, sp.train, scorings=scored, seed=seed, progress=False)
            rows += [{"task": task.name, "method": method, "layer": None, "scoring": sc, "accuracy": r.accuracy,
                      "n": r.n} for sc, r in res.items()]
        ltvs = learn_layer_sweep(model, task, layers, sp.train, sp.val, config=config, progress=progress)
        heads = function_vector_heads(model, task, k=k, n_prompts=fv_prompts, seed=seed, progress=progress)
        for layer, vec in zip(layers, ltvs):
            for method, v in (("ltv", vec), ("vanilla", vanilla_task_vector(model, task, layer, k=k, seed=seed)),
                              ("fv", function_vector(model, task, layer, heads, k=k, n_prompts=fv_prompts, seed=seed))):
                res = evaluate_multi(model, task, test, 0, scorings=scored, intervention=v, progress=False)
                rows += [{"task": task.name, "method": method, "layer": layer, "scoring": sc, "accuracy": r.accuracy,
                          "n": r.n, "norm": float(v.vectors.norm()), "cie_seconds": v.metrics.get("cie_seconds")}
                         for sc, r in res.items()]
    return rows


def run(model, config: Config = Config(), *, progress: bool = True) -> Result:
    """Sweep every task of ``config`` over its layers (derived from ``model`` when ``None``).

    Args:
        model: a loaded model.
        config: the settings.
        progress: show progress bars.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    rows = layer_sweep(model, builtin_tasks(config.tasks), config.layers, config=LTVConfig(steps=config.ltv_steps,
                       seed=config.seed), k=config.k, n_test=config.n_test, seed=config.seed,
                       fv_prompts=config.fv_prompts or 16, scorings=config.scorings, progress=progress)
    return Result(config, rows)
