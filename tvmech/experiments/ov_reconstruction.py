"""OV / MLP reconstruction of an LTV: accuracy with θ replaced by its packaged OV effect, its MLP
counterpart and the measured changes (``figures/ov_reconstruction.json``).

For a one-site LTV θ at layer ``l``, each :class:`~tvmech.analysis.ov.Reconstruction` re-injects, on the
zero-shot prompt *without* θ, one part of θ's effect (:mod:`tvmech.analysis.ov`: the packaged OV effect
``Σ_{l'} E_{l'}``, the measured MLP / attention changes), and the accuracy shows how much of the LTV's
effect that part carries.

Also the base :class:`Config` of the three mechanism experiments (this one, :mod:`key_heads`, :mod:`sinks`):
LTVs at the middle layer, accuracies on the first ``n_test`` test queries of each task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tvmech.analysis.evaluation import resolve_scoring, score_batch
from tvmech.analysis.ov import Reconstruction, capture, reconstruction_effect, reinjection_hooks, single_site
from tvmech.core.adapter import adapt
from tvmech.data.prompts import batches, make_prompts
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
    """Settings shared by the mechanism experiments (flags ``--mech-*``)."""

    PREFIX = "mech"
    LABEL = "mechanism"
    DERIVED = {"layer": middle_layer}

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks analysed", choices=ALL_TASKS)
    layer: int | None = option(None, "injection layer of the analysed LTVs (None: the middle layer n_layers // 2)")
    ltv_steps: int = option(150, "training steps per learned task vector")
    n_test: int | None = option(48, "test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits, the LTV training and the random head sets")


class Result(RecordsResult[Config]):
    """One record per (task, method): ``task, layer, method, accuracy, n, effect_norm, cos_attn``."""

    TABLE = "ov_reconstruction"


# the reconstructions of figures/ov_reconstruction.json: name -> what replaces θ
DEFAULT_RECONSTRUCTIONS: dict[str, Reconstruction] = {
    "ov": Reconstruction(),
    "ov_layerwise": Reconstruction(reinject="layerwise"),
    "ov_unweighted": Reconstruction(weighted=False),
    "ov_raw": Reconstruction(norm_aware=False),
    "mlp": Reconstruction("mlp"),
    "mlp_layerwise": Reconstruction("mlp", reinject="layerwise"),
    "attn": Reconstruction("attn"),
    "attn_mlp": Reconstruction("attn_mlp"),
}


def reconstruction_accuracy(model, vec: TaskVector, task: Task, queries: Sequence[Example],
                            reconstructions: dict[str, Reconstruction] | None = None, *, scoring: str | None = None,
                            batch_size: int = 16, progress: bool = False) -> list[dict]:
    """Accuracy on zero-shot prompts of ``queries``: without anything (``zero_shot``), with θ (``ltv``),
    and with each reconstruction instead of θ.

    Args:
        model: a loaded model.
        vec: a one-site additive ``resid_pre`` task vector θ.
        task: the task (its template, labels and scoring).
        queries: the test queries (at least one).
        reconstructions: name -> :class:`Reconstruction` (default :data:`DEFAULT_RECONSTRUCTIONS`).
        scoring: overrides the task's scoring mode.
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        Rows ``{task, layer, method, accuracy, n, effect_norm, cos_attn}``: ``effect_norm`` is the mean norm of
        the re-injected total ``Σ_{l'} E_{l'}``, ``cos_attn`` its mean cosine with the measured total attention
        change (``None`` for ``zero_shot`` and ``ltv``).
    """
    ad = adapt(model)
    layer, _ = single_site(ad, vec)
    recs = DEFAULT_RECONSTRUCTIONS if reconstructions is None else reconstructions
    scoring = resolve_scoring(task, scoring)
    if not queries:
        raise ValueError(f"task {task.name!r}: no queries to evaluate")
    prompts = make_prompts(task, queries, 0)
    names = ["zero_shot", "ltv", *recs]
    correct = dict.fromkeys(names, 0)
    norm = dict.fromkeys(names, 0.0)
    cos = dict.fromkeys(names, 0.0)
    it = batches(ad.tokenizer, task, prompts, batch_size, with_labels=scoring == "exact_match")
    for _, batch in tqdm(it, total=-(-len(prompts) // batch_size), desc=f"OV/MLP reconstruction {task.name}",
                         disable=not progress, leave=False):
        batch = batch.to(ad.device)
        cap = capture(ad, vec, batch)
        attn_total = cap.attn_delta.sum(1)
        correct["zero_shot"] += int(score_batch(ad, task, batch, scoring)[0].sum())
        correct["ltv"] += int(score_batch(ad, task, batch, scoring, vec.hooks_for(ad))[0].sum())
        norm["ltv"] += float(cap.theta.norm()) * len(batch)
        for name, rec in recs.items():
            effect = reconstruction_effect(ad, cap, rec)
            hooks = reinjection_hooks(ad, effect, cap.layers, batch.query_pos, rec.reinject, rec.point)
            correct[name] += int(score_batch(ad, task, batch, scoring, lambda b, h=hooks: h)[0].sum())
            total = effect.sum(1)
            norm[name] += float(total.norm(dim=-1).sum())
            cos[name] += float(torch.cosine_similarity(total, attn_total, dim=-1).sum())
    n = len(prompts)
    return [{"task": task.name, "layer": layer, "method": m, "accuracy": correct[m] / n, "n": n,
             "effect_norm": norm[m] / n if m != "zero_shot" else 0.0,
             "cos_attn": cos[m] / n if m in recs else None} for m in names]


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None, progress: bool = True) -> Result:
    """Reconstruction accuracies (:func:`reconstruction_accuracy`) of every task's LTV.

    Args:
        model: a loaded model.
        config: the mechanism settings.
        vectors: where the LTVs are kept (in memory when ``None``).
        progress: show a progress bar per task.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vecs = learned_vectors(model, config, config.layer, vectors)
    rows = []
    for name in config.tasks:
        task = builtin_task(name)
        rows += reconstruction_accuracy(model, vecs[name], task, heldout_queries(task, config.seed, config.n_test),
                                        progress=progress)
    return Result(config, rows)
