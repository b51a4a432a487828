"""OV / MLP reconstruction of an LTV: accuracy with θ replaced by its packaged OV effect, its direct MLP
path, the total measured changes, or θ restricted to some paths (``figures/ov_reconstruction.json``).

For a one-site LTV θ at layer ``l``, each :class:`~tvmech.analysis.ov.Reconstruction` re-injects, on the
zero-shot prompt *without* θ, one part of θ's effect (:mod:`tvmech.analysis.ov`: the packaged OV effect
``Σ_{l'} E_{l'}`` (``ov_direct``; layer by layer at each block's ``attn_out``; unweighted, raw, the paper's
``Σ_{l'≥l+1,h} θ W_V W_O`` as ``ov_paper``), the direct MLP path ``MLP(h_mid + θ) − MLP(h_mid)``
(``mlp_direct``), the total measured MLP / attention changes (``*_total_measured``), θ itself at the final
residual (``theta_final``)), optionally scaled by each ``α`` of ``Config.alphas`` (method ``<name>@<α>``),
and the accuracy shows how much of the LTV's effect that part carries. Path-restricted runs
(:class:`~tvmech.interventions.paths.PathRestricted`, method ``path_<paths>``) keep θ out of the residual
stream and show it only to the values (``v``), queries and keys (``qk``) or MLP inputs (``mlp``) of blocks
``≥ l``, or directly to the final norm (``direct``), with all downstream processing kept; ``path_all`` (every
path open) is the LTV run itself, exactly (the control of the decomposition: the same accuracy as ``ltv``).

Every accuracy is reported under each scoring of ``Config.scorings`` (default: the task's own, plus the
paper's full-vocabulary ``first_token`` for the label-set tasks), one row per (method, scoring), all
scorings read from the same forward pass; ``effect_norm`` and ``cos_attn`` do not depend on the scoring and
are the same in every scoring's row. The first scoring is the primary one (the one figures draw).

Also the base :class:`Config` of the three mechanism experiments (this one, :mod:`key_heads`, :mod:`sinks`):
LTVs at the middle layer, accuracies on the first ``n_test`` test queries of each task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from tvmech.analysis.evaluation import add_to_final, check_scorings, predict_from_final, resolve_scorings
from tvmech.analysis.ov import Reconstruction, ThetaEffects, capture, reconstruction_effect, reinjection, single_site
from tvmech.core.adapter import adapt
from tvmech.core.progress import tqdm
from tvmech.data.prompts import batches, make_prompts
from tvmech.data.tasks import SCORING_MODES, Example, Task, builtin_task
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
from tvmech.interventions.engine import compose, run_blocks
from tvmech.interventions.paths import PATHS, PathRestricted, check_paths
from tvmech.interventions.task_vector import TaskVector


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings shared by the mechanism experiments (flags ``--mech-*``), and this one's own (``alphas``;
    ``paths``: ``None`` by default, left out of the saved settings while ``None``)."""

    PREFIX = "mech"
    LABEL = "mechanism"
    DERIVED = {"layer": middle_layer}
    OPTIONAL_SETTINGS = ("alphas", "paths")

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks analysed", choices=ALL_TASKS)
    layer: int | None = option(None, "injection layer of the analysed LTVs (None: the middle layer n_layers // 2)")
    ltv_steps: int = option(150, "training steps per learned task vector")
    n_test: int | None = option(48, "test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits, the LTV training and the random head sets")
    alphas: tuple[float, ...] | None = option(
        (0.5, 1.0, 2.0, 4.0, 8.0), "OV/MLP reconstruction: scales α of every re-injected effect, to tell a wrong "
                                   "direction from a too small one (None: 1 only)")
    paths: tuple[str, ...] | None = option(
        ("v", "qk", "mlp", "v+qk+mlp", "all"),
        "OV/MLP reconstruction: path-restricted runs, each a path or paths joined by '+' of v, qk, mlp, direct, or "
        "'all' (every path open: the LTV run itself, the control); None: v qk mlp v+qk+mlp")
    scorings: tuple[str, ...] | None = option(
        None, "scoring modes of every accuracy (None: the task's own, plus first_token for label-set tasks)",
        choices=SCORING_MODES)

    def __post_init__(self):
        super().__post_init__()
        if self.scorings is not None:
            check_scorings(self.scorings, f"{self.label} scorings")
        if self.alphas is not None and (not self.alphas or any(a <= 0 for a in self.alphas)):
            raise ValueError(f"{self.label} alphas {self.alphas} is not valid: give one or more scales > 0")
        for spec in self.paths or ():
            parse_path(spec)


# paths of the path-restricted runs when Config.paths is None (settings saved before issue 24: no 'all' row)
DEFAULT_PATHS: tuple[str, ...] = ("v", "qk", "mlp", "v+qk+mlp")


def parse_path(spec: str) -> tuple[str, ...]:
    """``"v+qk"`` -> ``("v", "qk")``; ``"all"`` -> every path (:data:`~tvmech.interventions.paths.PATHS`)."""
    return PATHS if spec == "all" else check_paths(spec.split("+"))


class Result(RecordsResult[Config]):
    """One record per (task, method, scoring): ``task, layer, method, variant, path, alpha, scoring, accuracy, n,
    effect_norm, cos_attn``."""

    TABLE = "ov_reconstruction"


# the reconstructions of figures/ov_reconstruction.json: name -> what replaces θ (named for what it is)
DEFAULT_RECONSTRUCTIONS: dict[str, Reconstruction] = {
    "ov_direct": Reconstruction(),
    "ov_direct_layerwise": Reconstruction(reinject="layerwise"),  # at each block's attn_out
    "ov_unweighted": Reconstruction(weighted=False),
    "ov_raw": Reconstruction(norm_aware=False),
    "ov_paper": Reconstruction(weighted=False, norm_aware=False, from_next=True),  # Σ_{l'≥l+1,h} θ W_V W_O
    "mlp_direct": Reconstruction("mlp_direct"),
    "mlp_direct_layerwise": Reconstruction("mlp_direct", reinject="layerwise"),
    "mlp_total_measured": Reconstruction("mlp"),
    "mlp_total_measured_layerwise": Reconstruction("mlp", reinject="layerwise"),
    "attn_total_measured": Reconstruction("attn"),
    "attn_mlp_total_measured": Reconstruction("attn_mlp"),
    "theta_final": Reconstruction("theta"),  # control: θ itself on the final residual (paper Fig. 36)
}


def method_name(name: str, alpha: float) -> str:
    """A row's ``method``: the variant's name, with ``@α`` when ``α != 1`` (e.g. ``mlp_direct@4``)."""
    return name if alpha == 1 else f"{name}@{alpha:g}"


def final_stream(cap: ThetaEffects, total: Tensor, rec: Reconstruction) -> Tensor:
    """The clean final residual stream of ``cap`` with ``total`` added at the query (θ's position for the direct
    MLP path and θ): what adding it at ``blocks.{L-1}.hook_resid_post`` gives, without a forward pass."""
    return add_to_final(cap.clean_stream, cap.inj_pos if rec.at_injected_position else cap.query_pos, total)


def layerwise_streams(model, cap: ThetaEffects, runs: list[tuple[str, Reconstruction, Tensor]]) -> dict[str, Tensor]:
    """Final residual streams of the layer-wise re-injections ``(method, reconstruction, per-block effect)``,
    all in one pass from block ``l``: the batch stacked once per run, each run's injection on its rows."""
    if not runs:
        return {}
    ad = adapt(model)
    B, layer = len(cap.query_pos), cap.layers[0]
    injections = [replace(reinjection(ad, effect, cap.layers, "layerwise", rec.layerwise_point,
                                      cap.position if rec.at_injected_position else -1), rows=(i * B, (i + 1) * B))
                  for i, (_, rec, effect) in enumerate(runs)]
    with torch.no_grad():
        out = run_blocks(ad, cap.start.repeat(len(runs), 1, 1), layer, intervention=compose(injections),
                         ctx=cap.query_pos.repeat(len(runs)))
    return {m: out[i * B:(i + 1) * B] for i, (m, _, _) in enumerate(runs)}


def reconstruction_accuracy(model, vec: TaskVector, task: Task, queries: Sequence[Example],
                            reconstructions: dict[str, Reconstruction] | None = None, *,
                            scorings: Sequence[str] | None = None,
                            alphas: Sequence[float] = (1.0,), paths: Sequence[str] = DEFAULT_PATHS,
                            batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Accuracy on zero-shot prompts of ``queries``: without anything (``zero_shot``), with θ (``ltv``),
    with each reconstruction (times each α) instead of θ, and with θ restricted to each path.

    Args:
        model: a loaded model.
        vec: a one-site additive ``resid_pre`` task vector θ.
        task: the task (its template, labels and scoring).
        queries: the test queries (at least one).
        reconstructions: name -> :class:`Reconstruction` (default :data:`DEFAULT_RECONSTRUCTIONS`); their own
            ``alpha`` is replaced by each of ``alphas``.
        scorings: scoring modes of every accuracy, all from the same forward passes (``None``:
            :func:`~tvmech.analysis.evaluation.default_scorings`; ``label_set`` is left out for a task
            without a label set).
        alphas: scales of every re-injected effect.
        paths: path-restricted runs (:func:`parse_path` specs; :class:`~tvmech.interventions.paths.
            PathRestricted`), method ``path_<spec>``.
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        Rows ``{task, layer, method, variant, path, alpha, scoring, accuracy, n, effect_norm, cos_attn}``, one
        per (method, scoring), the scorings of a method in a row: ``variant``
        is the reconstruction's name (``path_restricted`` for path runs, whose ``path`` names the open
        paths), ``effect_norm`` the mean norm of the re-injected total ``α Σ_{l'} E_{l'}``, ``cos_attn`` its
        mean cosine with the measured total attention change (``None`` for ``zero_shot``, ``ltv`` and paths;
        ``effect_norm`` is θ's norm for ``ltv``, 0 for ``zero_shot``, ``None`` for paths).
    """
    ad = adapt(model)
    layer, position = single_site(ad, vec)
    recs = DEFAULT_RECONSTRUCTIONS if reconstructions is None else reconstructions
    alphas, paths = tuple(float(a) for a in alphas), tuple(paths)
    open_paths = {spec: parse_path(spec) for spec in paths}
    scorings = resolve_scorings(task, scorings)
    if not queries:
        raise ValueError(f"task {task.name!r}: no queries to evaluate")
    prompts = make_prompts(task, queries, 0)
    meta = {"zero_shot": ("zero_shot", None, None), "ltv": ("ltv", None, None)}
    runs = {method_name(n, a): (n, replace(r, alpha=a)) for n, r in recs.items() for a in alphas}
    meta.update({m: (n, None, rec.alpha) for m, (n, rec) in runs.items()})
    meta.update({f"path_{spec}": ("path_restricted", spec, 1.0) for spec in paths})
    correct = {m: dict.fromkeys(scorings, 0) for m in meta}
    norm = dict.fromkeys(meta, 0.0)
    cos = dict.fromkeys(meta, 0.0)
    it = batches(ad.tokenizer, task, prompts, batch_size, with_labels="exact_match" in scorings)
    for _, batch in tqdm(it, total=-(-len(prompts) // batch_size), desc=f"OV/MLP reconstruction {task.name}",
                         disable=not progress, leave=False):
        batch = batch.to(ad.device)
        cap = capture(ad, vec, batch)
        attn_total = cap.attn_delta.sum(1)
        streams = {"zero_shot": cap.clean_stream, "ltv": cap.injected_stream}
        norm["ltv"] += float(cap.theta.norm()) * len(batch)
        layerwise = []
        for m, (_, rec) in runs.items():
            effect = reconstruction_effect(ad, cap, rec)
            total = effect.sum(1)
            norm[m] += float(total.norm(dim=-1).sum())
            cos[m] += float(torch.cosine_similarity(total, attn_total, dim=-1).sum())
            if rec.reinject == "final":  # a vector at the final stream: only its position's logits change
                streams[m] = final_stream(cap, total, rec)
            else:
                layerwise.append((m, rec, effect))
        streams.update(layerwise_streams(ad, cap, layerwise))
        for spec, open_ in open_paths.items():
            with torch.no_grad():
                streams[f"path_{spec}"] = run_blocks(ad, cap.start, layer, ctx=batch.query_pos,
                                                     intervention=PathRestricted(cap.theta, layer, open_, position))
        for m, stream in streams.items():
            for s, (ok, _) in predict_from_final(ad, task, batch, stream, scorings).items():
                correct[m][s] += int(ok.sum())
    n = len(prompts)
    return [{"task": task.name, "layer": layer, "method": m, "variant": v, "path": path, "alpha": alpha,
             "scoring": s, "accuracy": correct[m][s] / n, "n": n,
             "effect_norm": norm[m] / n if m in runs or m == "ltv" else (0.0 if m == "zero_shot" else None),
             "cos_attn": cos[m] / n if m in runs else None} for m, (v, path, alpha) in meta.items() for s in scorings]


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None, progress: bool = True) -> Result:
    """Reconstruction accuracies (:func:`reconstruction_accuracy`) of every task's LTV.

    Args:
        model: a loaded model.
        config: the mechanism settings (``alphas``, ``paths``, ``scorings``: see :class:`Config`).
        vectors: where the LTVs are kept (in memory when ``None``).
        progress: show a progress bar per task.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vecs = learned_vectors(model, config, config.layer, vectors, progress=progress)
    alphas = config.alphas if config.alphas is not None else (1.0,)
    paths = config.paths if config.paths is not None else DEFAULT_PATHS
    rows = []
    for name in config.tasks:
        task = builtin_task(name)
        rows += reconstruction_accuracy(model, vecs[name], task, heldout_queries(task, config.seed, config.n_test),
                                        alphas=alphas, paths=paths, scorings=config.scorings, progress=progress)
    return Result(config, rows)
