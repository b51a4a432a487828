"""Layer sweep: accuracy of a task vector injected at each layer (last position), LTV vs Vanilla TV vs
function vector, with zero-shot and k-shot ICL accuracy as reference lines (``figures/layer_sweep.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvmech.analysis.evaluation import evaluate
from tvmech.core.progress import tqdm
from tvmech.data.tasks import Task, builtin_tasks
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


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the layer sweep."""

    PREFIX = "sweep"
    DERIVED = {"layers": lambda n_layers, c: evenly_spaced_layers(n_layers, c.layer_count) if c.layer_count
               else every_nth_layer(n_layers, 3)}
    OPTIONAL_SETTINGS = ("layer_count", "fv_prompts")

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

    def settings(self) -> dict:
        return {**super().settings(), "methods": list(METHODS)}


class Result(RecordsResult[Config]):
    """One record per (task, method, layer): ``task, method, layer, accuracy, n`` (``layer`` is ``None``
    for the references ``zero_shot`` and ``icl_{k}shot``)."""

    TABLE = "layer_sweep"


def layer_sweep(model, tasks: Sequence[Task], layers: Sequence[int], *, config: LTVConfig = LTVConfig(),
                k: int = 5, n_test: int | None = None, seed: int = 0, fv_prompts: int = 16,
                progress: bool = True) -> list[dict]:
    """One record per (task, method, layer): ``task, method, layer, accuracy, n``.

    Methods: ``ltv`` (all layers trained together, see :func:`learn_layer_sweep`), ``vanilla``
    (:func:`vanilla_task_vector` from k-shot prompts), ``fv`` (:func:`function_vector`, top-10 heads
    by causal indirect effect, the same vector placed at each layer), and the references ``zero_shot`` and
    ``icl_{k}shot`` (``layer`` is ``None`` for those).
    """
    rows: list[dict] = []
    for task in tqdm(tasks, desc="layer sweep", disable=not progress):
        sp = task.splits(seed)
        test = heldout_queries(task, seed, n_test)
        for method, kk in (("zero_shot", 0), (f"icl_{k}shot", k)):
            r = evaluate(model, task, test, kk, sp.train, seed=seed)
            rows.append({"task": task.name, "method": method, "layer": None, "accuracy": r.accuracy, "n": r.n})
        ltvs = learn_layer_sweep(model, task, layers, sp.train, sp.val, config=config, progress=progress)
        heads = function_vector_heads(model, task, k=k, n_prompts=fv_prompts, seed=seed)
        for layer, vec in zip(layers, ltvs):
            for method, v in (("ltv", vec), ("vanilla", vanilla_task_vector(model, task, layer, k=k, seed=seed)),
                              ("fv", function_vector(model, task, layer, heads, k=k, n_prompts=fv_prompts, seed=seed))):
                r = evaluate(model, task, test, 0, hooks_for=v.hooks_for(model))
                rows.append({"task": task.name, "method": method, "layer": layer, "accuracy": r.accuracy,
                             "n": r.n, "norm": float(v.vectors.norm()), "cie_seconds": v.metrics.get("cie_seconds")})
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
                       fv_prompts=config.fv_prompts or 16, progress=progress)
    return Result(config, rows)
