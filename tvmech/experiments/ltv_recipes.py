"""The LTV recipes side by side: tvmech's default (:class:`~tvmech.methods.learned.LTVConfig`) against the authors'
released recipe as reported (:meth:`LTVConfig.released`), at the input of the middle layer, last token
(``figures/ltv_recipes.json``).

Each recipe trains on its own splits (the default: the task's train split, validating on its val split; the released
recipe: train and val pooled, min(1,000, available), 60/40) and is scored on the same test split. Per (task, recipe,
scoring): test accuracy, the steps run (early stopping), the wall seconds of the whole training call (data
preparation, steps and validation; CUDA synchronised), the train and validation sizes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from tvmech.analysis.evaluation import evaluate_multi
from tvmech.core.adapter import adapt
from tvmech.core.progress import tqdm
from tvmech.data.tasks import builtin_tasks
from tvmech.experiments.common import ALL_TASKS, ExperimentConfig, RecordsResult, heldout_queries, middle_layer, option
from tvmech.experiments.layer_sweep import headline_scorings
from tvmech.methods.learned import LTVConfig, learn_task_vector

RECIPES = ("default", "released")


def recipe(name: str, seed: int, max_steps: int | None = None) -> LTVConfig:
    """The LTV config of recipe ``name`` (``default`` or ``released``) with ``seed``, its steps capped at
    ``max_steps`` (the released recipe then evaluates ten times over the capped run, and decays over it)."""
    cfg = LTVConfig(seed=seed) if name == "default" else LTVConfig.released(seed=seed)
    if max_steps is not None and max_steps < cfg.steps:
        cfg = replace(cfg, steps=max_steps, eval_every=max(1, min(cfg.eval_every, max_steps // 10 or 1)))
    return cfg


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the recipe comparison."""

    PREFIX = "recipes"
    DERIVED = {"layer": middle_layer}
    OPTIONAL_SETTINGS = ("max_steps",)

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks compared", choices=ALL_TASKS)
    recipes: tuple[str, ...] = option(RECIPES, "LTV recipes compared", choices=RECIPES)
    layer: int | None = option(None, "injection layer (None: the middle layer, n_layers // 2)")
    max_steps: int | None = option(None, "cap on every recipe's steps (None: each recipe's own: 150 default, 1,000 "
                                         "released)")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits, the initialisation and the batch order")


class Result(RecordsResult[Config]):
    """One row per (task, recipe, scoring): ``task, recipe, scoring, accuracy, n, steps_run, max_steps,
    stopped_early, wall_s, n_train, n_val, layer``."""

    TABLE = "ltv_recipes"


def run(model, config: Config = Config(), *, progress: bool = True) -> Result:
    """Train and score each recipe on each task of ``config``.

    Args:
        model: a loaded model.
        config: the settings.
        progress: show progress bars.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    ad = adapt(model)
    rows = []
    for task in tqdm(builtin_tasks(config.tasks), desc="LTV recipes", disable=not progress):
        test = heldout_queries(task, config.seed, config.n_test)
        scored = headline_scorings(task)
        for name in config.recipes:
            cfg = recipe(name, config.seed, config.max_steps)
            sync = torch.cuda.synchronize if ad.device.type == "cuda" else (lambda: None)
            sync()
            t0 = time.perf_counter()
            vec = learn_task_vector(ad, task, layers=(config.layer,), config=cfg, progress=False)
            sync()
            wall = time.perf_counter() - t0
            res = evaluate_multi(ad, task, test, 0, scorings=scored, intervention=vec)
            rows += [{"task": task.name, "recipe": name, "scoring": s, "accuracy": r.accuracy, "n": r.n,
                      "steps_run": vec.metrics["steps_run"], "max_steps": cfg.steps,
                      "stopped_early": vec.metrics["stopped_early"], "wall_s": wall,
                      "n_train": vec.metrics["n_train"], "n_val": vec.metrics["n_val"], "layer": config.layer}
                     for s, r in res.items()]
    return Result(config, rows)


__all__ = ["Config", "Result", "RECIPES", "recipe", "run"]
