"""Every task-vector method side by side, each at its own site and strength chosen on a dev split
(``figures/methods.json``, the dev tables in ``figures/methods_dev.json``).

Methods (each a vector added at the query's ``resid_pre`` of one layer of a zero-shot prompt):

* ``mean_diff``: the mean ICL-minus-zero-shot difference (Vanilla TV's ``add`` form; Hendel et al. 2023),
  ``pca_diff`` and ``pca_center``: the first principal component of those differences (repeng's two PCA
  variants), :mod:`tvmech.methods.pca_vectors`;
* ``fv``: the function vector (Todd et al. 2024), :func:`~tvmech.methods.function_vectors.function_vector`;
* ``ltv``: the learned task vector (Yang et al. 2026), one per layer trained together
  (:func:`~tvmech.methods.learned.learn_layer_sweep`).

Matched budget. With ``budget`` = ``B`` (default: the whole train split), the mean-difference and PCA vectors and the
LTV see the same ``B`` training examples: the extracted vectors use them as queries (ICL prompts of ``k``
demonstrations drawn from the same ``B``) and the LTV trains on them. The function vector is the exception: its mean
head outputs and indirect effects take ``fv_prompts`` (default 16, at most ``B``) of those queries, with
demonstrations from the whole train split (:func:`~tvmech.methods.function_vectors.function_vector_heads` draws them
so), because the indirect effects cost ``n_layers × n_heads`` patched passes per prompt. Every row carries
``budget`` (``B``) and ``source`` (the examples the method itself used).

Site and strength. For every method the layer (of ``layers``) and, for the extracted vectors, the strength α (of
``alphas``; α = 1 is the vector as extracted, the PCA vectors have the mean difference's norm) are chosen on the dev
split, the task's validation split (disjoint from train and test; the LTV's own validation, which keeps its best
step, is the same split): :func:`~tvmech.analysis.site_selection.select_sites`, under the first scoring. The test
accuracy of that choice is reported under each scoring, with zero-shot and k-shot ICL as references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from tvmech.analysis.evaluation import check_scorings, evaluate_multi
from tvmech.analysis.site_selection import ALPHAS, select_sites
from tvmech.core.adapter import adapt
from tvmech.core.progress import tqdm
from tvmech.data.prompts import make_prompts
from tvmech.data.tasks import SCORING_MODES, Task, builtin_tasks
from tvmech.experiments.common import (
    ALL_TASKS,
    ExperimentConfig,
    evenly_spaced_layers,
    every_nth_layer,
    heldout_queries,
    option,
)
from tvmech.experiments.layer_sweep import headline_scorings
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.function_vectors import function_vector, function_vector_heads
from tvmech.methods.learned import LTVConfig, learn_layer_sweep
from tvmech.methods.pca_vectors import difference_vector
from tvmech.methods.vanilla import query_states_at

METHODS: tuple[str, ...] = ("mean_diff", "pca_diff", "pca_center", "fv", "ltv")
EXTRACTED = ("mean_diff", "pca_diff", "pca_center")


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the methods comparison."""

    PREFIX = "methods"
    DERIVED = {"layers": lambda n_layers, c: evenly_spaced_layers(n_layers, c.layer_count) if c.layer_count
               else every_nth_layer(n_layers, 3)}
    OPTIONAL_SETTINGS = ("layer_count", "budget", "fv_prompts", "n_dev", "scorings")

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks compared", choices=ALL_TASKS)
    methods: tuple[str, ...] = option(METHODS, "task-vector methods compared", choices=METHODS)
    layers: tuple[int, ...] | None = option(None, "candidate injection layers (None: every 3rd layer of the model, "
                                                  "from 0, or layer_count evenly spaced layers)")
    layer_count: int | None = option(None, "with --methods-layers derived: this many evenly spaced layers instead of "
                                           "every 3rd (None: every 3rd)")
    alphas: tuple[float, ...] = option(ALPHAS, "strengths tried for the extracted vectors (mean_diff, pca_diff, "
                                               "pca_center, fv); the LTV is tried at 1 only")
    budget: int | None = option(None, "training examples of every method: the LTV's training set and the extracted "
                                      "vectors' source queries (None: the whole train split)")
    k: int = option(5, "demonstrations of the extraction prompts and of the ICL reference")
    ltv_steps: int = option(150, "training steps of the learned task vectors")
    fv_prompts: int | None = option(None, "prompts of the function vector's mean head outputs and indirect effects, "
                                          "at most the budget (None: 16)")
    n_dev: int | None = option(None, "cap on dev queries per task (None: the whole validation split)")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits, the demonstrations and the LTV training")
    scorings: tuple[str, ...] | None = option(
        None, "scoring modes of every accuracy, the first also choosing the site on dev (None: first_token, then "
              "the task's own where it differs)", choices=SCORING_MODES)

    def __post_init__(self):
        super().__post_init__()
        if self.scorings is not None:
            check_scorings(self.scorings, f"{self.label} scorings")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"{self.label} methods {list(self.methods)} is not valid: name each of {list(METHODS)} "
                             "at most once, at least one")
        bad = [a for a in self.alphas if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0 < a < 1e6]
        if bad or not self.alphas:
            raise ValueError(f"{self.label} alphas {list(self.alphas)} is not valid: give finite strengths > 0")
        for name in ("budget", "fv_prompts", "n_dev"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 2):
                raise ValueError(f"{self.label} {name} {v!r} is not valid: give a whole number >= 2, or None")


@dataclass
class Result:
    """``methods``: one row per (task, method, scoring): ``task, method, scoring, accuracy, n`` (test), ``layer``,
    ``alpha`` and ``dev_accuracy`` (the dev choice; ``None`` for the references ``zero_shot`` and ``icl_{k}shot``),
    ``budget``, ``source`` (the examples the method used: the budget, ``fv_prompts`` for ``fv``), ``n_dev``, ``norm``
    (of the injected vector). ``methods_dev``: the dev tables, one row per (task,
    method, layer, alpha): ``accuracy`` (dev), ``chosen``."""

    TABLES: ClassVar[tuple[str, ...]] = ("methods", "methods_dev")
    TABLE: ClassVar[str] = "methods"

    config: Config
    records: list[dict]
    dev: list[dict]

    def rows(self) -> list[dict]:
        return list(self.records)

    def tables(self) -> dict[str, list[dict]]:
        return {"methods": self.rows(), "methods_dev": list(self.dev)}


def extracted_vectors(model, task: Task, layers: Sequence[int], source, *, k: int, seed: int,
                      kinds: Sequence[str] = EXTRACTED) -> dict[str, dict[int, torch.Tensor]]:
    """Every extracted vector of ``kinds`` at every layer, from one pass per batch of ICL and of zero-shot prompts.

    Args:
        model: a loaded model or its adapter.
        task: the task.
        layers: the layers.
        source: the source examples: the queries, and the pool their ``k`` demonstrations are drawn from.
        k, seed: demonstrations per ICL prompt and their seed.

    Returns:
        Kind -> layer -> ``[d_model]``.
    """
    icl = query_states_at(model, task, make_prompts(task, source, k, source, seed=seed), layers)
    zs = query_states_at(model, task, make_prompts(task, source, 0), layers)
    return {kind: {layer: difference_vector(icl[:, j], zs[:, j], kind) for j, layer in enumerate(layers)}
            for kind in kinds}


def compare_methods(model, task: Task, config: Config, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """The rows of :class:`Result` for one task (``config`` resolved)."""
    ad = adapt(model)
    sp = task.splits(config.seed)
    source = list(sp.train[:config.budget] if config.budget else sp.train)
    dev = list(sp.val[:config.n_dev] if config.n_dev else sp.val)
    test = heldout_queries(task, config.seed, config.n_test)
    scored = headline_scorings(task, config.scorings)
    layers, B = config.layers, len(source)
    base = {"task": task.name, "budget": B, "n_dev": len(dev)}
    rows = []
    for method, kk in (("zero_shot", 0), (f"icl_{config.k}shot", config.k)):
        res = evaluate_multi(ad, task, test, kk, source, scorings=scored, seed=config.seed)
        rows += [{**base, "method": method, "scoring": s, "accuracy": r.accuracy, "n": r.n, "layer": None,
                  "alpha": None, "dev_accuracy": None} for s, r in res.items()]
    n_fv = None
    vectors = extracted_vectors(ad, task, layers, source, k=config.k, seed=config.seed,
                                kinds=[m for m in EXTRACTED if m in config.methods])
    if "fv" in config.methods:
        n_fv = min(config.fv_prompts or 16, B)
        heads = function_vector_heads(ad, task, k=config.k, n_prompts=n_fv, seed=config.seed)
        fv = function_vector(ad, task, layers[0], heads, k=config.k, seed=config.seed).vectors[0, 0]
        vectors["fv"] = {layer: fv for layer in layers}
    if "ltv" in config.methods:
        ltvs = learn_layer_sweep(ad, task, layers, source, dev, config=LTVConfig(steps=config.ltv_steps,
                                 seed=config.seed), progress=progress)
        vectors["ltv"] = {layer: v.vectors[0, 0] for layer, v in zip(layers, ltvs)}
    vectors = {m: vectors[m] for m in config.methods}
    alphas = {m: (1.0,) if m == "ltv" else config.alphas for m in vectors}
    choices = select_sites(ad, task, vectors, dev, alphas=alphas, scoring=scored[0], disjoint_from=[*source, *test])
    dev_rows = []
    for m, choice in choices.items():
        dev_rows += [{**base, "method": m, "scoring": choice.scoring, **r,
                      "chosen": (r["layer"], r["alpha"]) == (choice.layer, choice.alpha)} for r in choice.table]
        v = choice.alpha * vectors[m][choice.layer]
        vec = TaskVector.for_model(ad, v[None, None], (choice.layer,), task=task.name, method=m)
        res = evaluate_multi(ad, task, test, 0, scorings=scored, intervention=vec)
        rows += [{**base, "method": m, "scoring": s, "accuracy": r.accuracy, "n": r.n, "layer": choice.layer,
                  "alpha": choice.alpha, "dev_accuracy": choice.accuracy, "norm": float(v.norm()),
                  "source": n_fv if m == "fv" else B}
                 for s, r in res.items()]
    return rows, dev_rows


def run(model, config: Config = Config(), *, progress: bool = True) -> Result:
    """Compare every method of ``config`` on each of its tasks.

    Args:
        model: a loaded model.
        config: the settings (layers derived from ``model`` when ``None``).
        progress: show progress bars.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    rows, dev = [], []
    for task in tqdm(builtin_tasks(config.tasks), desc="methods", disable=not progress):
        r, d = compare_methods(model, task, config, progress)
        rows += r
        dev += d
    return Result(config, rows, dev)


__all__ = ["Config", "Result", "METHODS", "EXTRACTED", "extracted_vectors", "compare_methods", "run"]
