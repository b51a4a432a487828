"""Linear propagation and rotation: per task and layer, the noise fit of W_TV(l), its exact Jacobian, the
polar decomposition and the reconstructed TV on the test split (``figures/linear_map.json``).

The fit and the Jacobian are :mod:`tvmech.analysis.tv_map`'s, the rotation numbers
:mod:`tvmech.analysis.polar`'s. Per (task, layer) the row adds :func:`reconstruction_report` (accuracy with θ
at layer l vs ``W θ`` at the final stream, and the logit lens of each) and :func:`polar_report` (the
alignment of θ, ``Qθ`` and ``Wθ`` with the task's label directions, :mod:`tvmech.analysis.lens`, their
decoded tokens, and the rotation null: ``cos(Qθ, ū)`` against ``cos(Rθ, ū)`` for ``map_null`` Haar-random
orthogonal ``R``, :func:`tvmech.analysis.polar.rotation_null`). The rotation is the proper one ``Q₊`` (a
reflection split off where ``det Q = −1``: ``reflection``, ``det_q``; :mod:`tvmech.analysis.polar`). The fit's row
holds the R² of the mean response and each fit prompt's own R² against the shared W (``r2_per_prompt_centred*``,
the headline: residuals centred per prompt; ``r2_per_prompt*``, uncentred, kept), and the ray test ``Δ(αθ)`` vs
``αWθ`` (``ray_rel_error_<α>``, ``ray_cos_<α>``). The reconstructed TV (``Wθ`` at the final stream) is scored
with the same scoring function as θ at layer l.

Null of the polar statistics (:func:`null_report`, :mod:`tvmech.analysis.polar_null`). The exact Jacobian ``J``
is polar-decomposed like ``W`` (``jac_rotation_distance``, ``jac_cos_theta_qtheta``, ``jac_gain``, ``jac_det_q``,
``jac_reflection``). The same statistics are computed for ``map_random`` random vectors of norm ``‖θ‖``
(seeded by task, layer and seed; ``J`` of each, from one batched :func:`~tvmech.analysis.tv_map.jacobians`
call with θ's), for the first ``map_random_fits`` of them also from their own fitted ``W`` (the fit of θ without
its held-out and ray checks), and for the Vanilla TV at the same layer (``vanilla_*``, its own norm; ``J`` and
``W``). Per statistic and map the row holds the null values (``null_<stat>`` for W, ``null_jac_<stat>`` for
J) and θ's place in them (``null_[jac_]<stat>_{mean,sd,q025,q975,percentile,specific}``; specific = outside
the null's central 95 %). Every ``J`` of the null, θ's and the Vanilla TV's included, is taken on the first
``map_null_prompts`` fit prompts (default 4: a Jacobian's cost grows with the prompts, and the null needs
``map_random + 2`` of them per row), so θ's ``jac_<stat>`` compare with their null on the same prompts;
``jac_rel_frobenius`` (J against W) uses θ's J on every fit prompt, as W does.

Scorings. The accuracies are computed under each scoring of ``Config.scorings`` (default: the task's own,
plus the paper's full-vocabulary ``first_token`` for label-set tasks), all from the same forward passes. A
row stays one per (task, layer), since it carries many numbers (R², Jacobian, polar, null) that do not
depend on the scoring and must not be repeated: ``acc_zero_shot``, ``acc_original``, ``acc_reconstructed``
and ``agreement`` are those of the primary (first) scoring, named by ``scoring``, as in rows saved before;
``acc_by_scoring = {scoring: {"zero_shot", "original", "reconstructed"}}`` holds every scoring's three
accuracies (the primary's included). The logit-lens accuracies ``lens_acc_*`` are first-token argmaxes.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.evaluation import add_to_final, check_context, check_scorings, predict_from_final, resolve_scorings
from tvmech.analysis.lens import decode, label_directions
from tvmech.analysis.polar import polar_stats, proper_polar, rotation_null, rotation_scaling
from tvmech.analysis.polar_null import MAPS, STATISTICS, matched_random_vectors, null_verdict, verdict_fields
from tvmech.analysis.tv_map import (
    LinearMap,
    MapConfig,
    compare_maps,
    fit_prompts,
    fit_tv_map,
    jacobians,
)
from tvmech.core.adapter import adapt
from tvmech.data.prompts import Batch, batches, make_prompts
from tvmech.data.tasks import SCORING_MODES, Example, Task, builtin_task
from tvmech.experiments.common import (
    ALL_TASKS,
    ExperimentConfig,
    RecordsResult,
    evenly_spaced_layers,
    heldout_queries,
    learned_vectors,
    option,
)
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.engine import run_blocks
from tvmech.interventions.injection import Injection
from tvmech.methods.vanilla import vanilla_task_vector

SOLVERS = ("lstsq", "ridge")


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the linear-map experiment (flags ``--linear-*`` and ``--map-*``)."""

    PREFIX = "linear"
    DERIVED = {"layers": lambda n_layers, c: evenly_spaced_layers(n_layers, c.layer_count) if c.layer_count
               else tuple(range(n_layers // 10, n_layers, max(1, n_layers // 5)))}
    OPTIONAL_SETTINGS = ("layer_count",)

    tasks: tuple[str, ...] = option(("antonym", "country_capital", "question_type"), "tasks of the linear-map step",
                                    choices=ALL_TASKS)
    layers: tuple[int, ...] | None = option(None, "injection layers (None: every n_layers // 5-th from n_layers // 10, "
                                                  "i.e. 3, 9, ..., 27 of 30; or layer_count evenly spaced layers)")
    layer_count: int | None = option(None, "with --linear-layers derived: this many evenly spaced layers (None: the "
                                           "rule above)")
    ltv_steps: int = option(150, "training steps per learned task vector")
    map_prompts: int = option(16, "fit prompts (the shortest training prompts; 16-32 recommended)",
                              flag="--map-prompts")
    map_samples: int | None = option(None, "perturbed vectors per fit (None: 2 x d_model)", flag="--map-samples")
    map_heldout: int = option(128, "held-out perturbed vectors for R²", flag="--map-heldout")
    map_noise: tuple[float, ...] = option((0.05, 0.1, 0.2), "noise scales λ, relative to ‖θ‖", flag="--map-noise")
    map_solver: str = option("lstsq", "least squares or ridge", flag="--map-solver", choices=SOLVERS)
    map_ridge: float = option(1e-3, "ridge strength α (relative to the perturbations' variance per direction)",
                              flag="--map-ridge")
    map_ray: tuple[float, ...] = option((0.25, 0.5, 2.0, 4.0), "ray test scales α: Δ(αθ) against α W θ",
                                        flag="--map-ray")
    map_null: int = option(200, "Haar-random rotations of the rotation null cos(Rθ, ū)", flag="--map-null")
    map_random: int = option(10, "random vectors of norm ‖θ‖ whose polar statistics (of J) are the null of θ's "
                                 "(0: none; at least 2 for a verdict)", flag="--map-random")
    map_random_fits: int = option(0, "of those, how many also get their own fitted W (the W null; each costs a fit "
                                     "of 2 x d_model perturbed runs per prompt)", flag="--map-random-fits")
    map_vanilla: int = option(1, "1: polar statistics of J and W for the Vanilla TV at the same layer; 0: none",
                              flag="--map-vanilla", choices=(0, 1))
    map_null_prompts: int | None = option(4, "fit prompts (the first N) on which J is taken for the polar statistics "
                                             "of θ, of the Vanilla TV and of the null's random vectors (None: all "
                                             "map_prompts; fewer make the null's Jacobians cheaper; J against W "
                                             "uses all)",
                                          flag="--map-null-prompts")
    map_jacobian_chunk: int | None = option(64, "backward passes vectorised per Jacobian chunk (None: all d_model; "
                                                "smaller saves memory)", flag="--map-jacobian-chunk")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits, the LTV training and the perturbations")
    scorings: tuple[str, ...] | None = option(
        None, "scoring modes of every accuracy (None: the task's own, plus first_token for label-set tasks)",
        choices=SCORING_MODES)

    def __post_init__(self):
        super().__post_init__()
        if self.scorings is not None:
            check_scorings(self.scorings, f"{self.label} scorings")
        if self.map_solver not in SOLVERS:
            raise ValueError(f"{self.label} map_solver {self.map_solver!r} is not valid; valid: {list(SOLVERS)}")
        if self.map_prompts < 1:
            raise ValueError(f"{self.label} map_prompts {self.map_prompts} is not valid: it must be >= 1")
        if self.map_null < 1:
            raise ValueError(f"{self.label} map_null {self.map_null} is not valid: it must be >= 1")
        if not 0 <= self.map_random_fits <= self.map_random or self.map_random == 1:
            raise ValueError(f"{self.label} map_random {self.map_random} / {self.label} map_random_fits "
                             f"{self.map_random_fits} are not valid: the first must be 0 or >= 2, the second "
                             "from 0 to the first")
        if self.map_null_prompts is not None and self.map_null_prompts < 1:
            raise ValueError(f"{self.label} map_null_prompts {self.map_null_prompts} is not valid: give >= 1 or None")
        if self.map_jacobian_chunk is not None and self.map_jacobian_chunk < 1:
            raise ValueError(f"{self.label} map_jacobian_chunk {self.map_jacobian_chunk} is not valid: give >= 1 "
                             "or None")
        if any(a == 0 for a in self.map_ray):
            raise ValueError(f"{self.label} map_ray {list(self.map_ray)} is not valid: the scales must be non-zero")

    def map_config(self) -> MapConfig:
        """The fit's :class:`MapConfig`."""
        return MapConfig(n_samples=self.map_samples, n_heldout=self.map_heldout, noise_scales=tuple(self.map_noise),
                         solver=self.map_solver, ridge=self.map_ridge, seed=self.seed, ray_alphas=tuple(self.map_ray))


class Result(RecordsResult[Config]):
    """One record per (task, layer): fit quality, Jacobian distance, reconstruction and polar numbers."""

    TABLE = "linear_map"


def reconstruction_report(model, task: Task, queries: Sequence[Example], fit: LinearMap, *,
                          scorings: Sequence[str] | None = None, batch_size: int = 16) -> dict:
    """Accuracy on the zero-shot prompts of ``queries``, the three conditions scored alike, under each of
    ``scorings`` from the same forward passes; the flat keys are the primary (first) scoring's, recorded as
    ``scoring``:

    ``acc_zero_shot``; ``acc_original`` (θ at layer l); ``acc_reconstructed`` (W θ at the final stream);
    ``acc_by_scoring`` (scoring -> ``{zero_shot, original, reconstructed}``, every scoring);
    ``agreement`` (fraction of prompts where the two predict the same first token); and the first-token
    logit-lens accuracies ``lens_acc_layer`` of ``h_l[q] + θ`` (decoding at layer l, without the map) and
    ``lens_acc_map`` of ``h_L[q] + W θ`` (with the map).

    Args:
        model: a loaded model.
        task: the task.
        queries: the test queries.
        fit: the fitted map (its θ, layer and ``W θ``).
        scorings: scoring modes (``None``: :func:`~tvmech.analysis.evaluation.default_scorings`).
        batch_size: prompts per forward pass.

    Returns:
        The numbers above, ``scoring`` (the primary) and ``n``.
    """
    ad = adapt(model)
    scorings = resolve_scorings(task, scorings)
    prompts = make_prompts(task, queries, 0)
    check_context(ad, task, prompts, with_labels="exact_match" in scorings)
    theta = fit.theta.to(ad.device)
    wt = fit.reconstructed.to(ad.device, ad.dtype)
    conditions = ("zero_shot", "original", "reconstructed")
    hits = {c: dict.fromkeys(scorings, 0) for c in conditions}
    firsts: dict[str, list[str]] = {c: [] for c in conditions}
    hits_layer = hits_map = 0
    for _, b in batches(ad.tokenizer, task, prompts, batch_size, with_labels="exact_match" in scorings):
        b = b.to(ad.device)
        rows, q = torch.arange(len(b), device=ad.device), b.query_pos
        with torch.no_grad():
            resid = ad.residual(b.tokens, fit.layer)  # shared by the three conditions
            clean = ad.run_blocks(resid, fit.layer)
            original = run_blocks(ad, resid, fit.layer, intervention=Injection.single(theta, fit.layer), ctx=q)
            reconstructed = add_to_final(clean, q, wt)  # W θ at the final stream, at the query
            for c, stream in zip(conditions, (clean, original, reconstructed)):
                for sc, (ok, first) in predict_from_final(ad, task, b, stream, scorings).items():
                    hits[c][sc] += int(ok.sum())
                    if sc == scorings[0]:
                        firsts[c] += [ad.tokenizer.decode([int(t)]) for t in first]
            h_l = resid[rows, q] + theta.to(ad.dtype)
            hits_layer += int((ad.unembed(h_l).argmax(-1) == b.label_first).sum())
            hits_map += int((ad.unembed(reconstructed[rows, q]).argmax(-1) == b.label_first).sum())
    n = len(queries)
    by_scoring = {sc: {c: hits[c][sc] / n for c in conditions} for sc in scorings}
    primary = scorings[0]
    return {"n": n, "scoring": primary, "acc_zero_shot": by_scoring[primary]["zero_shot"],
            "acc_original": by_scoring[primary]["original"], "acc_reconstructed": by_scoring[primary]["reconstructed"],
            "acc_by_scoring": by_scoring,
            "agreement": sum(a == b for a, b in zip(firsts["original"], firsts["reconstructed"])) / n,
            "lens_acc_layer": hits_layer / n, "lens_acc_map": hits_map / n}


def polar_report(model, task: Task, W: Float[Tensor, "d d"], theta: Float[Tensor, " d"], *, top: int = 5,
                 k: int = 5, null_draws: int = 200, seed: int = 0) -> dict:
    """:func:`rotation_scaling` plus alignment with the task's labels and decoded tokens of θ, Qθ, Wθ (``Q`` the
    proper rotation ``Q₊``), and the rotation null (:func:`~tvmech.analysis.polar.rotation_null`, ``rot_*`` keys;
    ``null_draws = 0``: none).

    ``align_{v}`` = cos(v, ū); ``align_max_{v}`` = max over the task's label first tokens t of cos(v, u_t);
    ``tokens_{v}`` = top-``k`` logit-lens tokens; ``label_in_top_{v}``: whether one of them is a label first token.

    Args:
        model: a loaded model.
        task: the task whose label directions are compared.
        W: the map (d x d).
        theta: the task vector (d).
        top: singular values kept.
        k: decoded tokens per vector.
        null_draws: Haar-random rotations of the null.
        seed: their seed.

    Returns:
        One flat row: the :func:`rotation_scaling` numbers, the keys above for ``v`` in ``theta, qtheta,
        wtheta`` and the ``rot_*`` null numbers.
    """
    row = rotation_scaling(W, theta, top)
    Q, _, _ = proper_polar(W)
    th = theta.detach().double().cpu().reshape(-1)
    vecs = {"theta": th, "qtheta": Q @ th, "wtheta": W.detach().double().cpu() @ th}
    dirs = label_directions(model, task)
    unit_u = dirs.u.double() / dirs.u.double().norm(dim=1, keepdim=True)
    stacked = torch.stack(list(vecs.values()))
    unit_v = stacked / stacked.norm(dim=1, keepdim=True)
    decoded = decode(model, stacked.float(), k)
    labels = set(dirs.tokens)
    for (name, _), v, dec in zip(vecs.items(), unit_v, decoded):
        row[f"align_{name}"] = float(v @ dirs.mean.double())
        row[f"align_max_{name}"] = float((unit_u @ v).max())
        row[f"tokens_{name}"] = dec.text()
        row[f"label_in_top_{name}"] = bool(labels & set(dec.ids))
    if null_draws:
        row.update(rotation_null(Q, th, dirs.mean, n=null_draws, seed=seed, device=adapt(model).device))
    return row


def _other_scorings(row: dict) -> str:
    """`` (first_token: θ 0.10 → Wθ 0.05)`` for each non-primary scoring of a row (for the progress line)."""
    return "".join(f" ({s}: θ {a['original']:.2f} → Wθ {a['reconstructed']:.2f})"
                   for s, a in row["acc_by_scoring"].items() if s != row["scoring"])


def null_seed(task: str, layer: int, seed: int) -> int:
    """The seed of the random null vectors of ``(task, layer, seed)`` (only θ's norm enters the vectors)."""
    return zlib.crc32(f"{task}/{layer}/{seed}".encode())


def first_rows(batch: Batch, n: int) -> Batch:
    """The first ``n`` prompts of ``batch`` (its role indices too)."""
    roles = None if batch.roles is None else {k: v[:n] for k, v in batch.roles.items()}
    return Batch(batch.tokens[:n], batch.query_pos[:n], batch.label_first[:n], batch.targets[:n], batch.lengths[:n],
                 roles)


def null_report(model, config: Config, task: Task, batch, theta: Float[Tensor, " d"], layer: int,
                W: Float[Tensor, "d d"]) -> dict:
    """The polar statistics of θ's exact Jacobian, of the Vanilla TV's ``J`` and ``W``, and of ``map_random``
    random vectors of norm ``‖θ‖`` (``J``; ``W`` for the first ``map_random_fits``), with θ's place in that null
    (see the module docstring).

    Args:
        model: a loaded model.
        config: the settings (``map_random``, ``map_random_fits``, ``map_vanilla``, ``map_jacobian_chunk``, the
            fit's settings).
        task: the task (for the Vanilla TV).
        batch: the fit prompts.
        theta: the LTV.
        layer: the injection layer.
        W: θ's fitted map.

    Returns:
        One flat dict: ``jac_rel_frobenius``/``jac_cosine``/``jac_rel_theta`` (:func:`compare_maps`),
        ``jac_<stat>`` and ``<stat>`` (:func:`~tvmech.analysis.polar.polar_stats` of θ's ``J``, on the first
        ``map_null_prompts`` fit prompts like every other ``J`` of the null, and of ``W``), ``null_prompts``,
        ``vanilla_*``, ``null_n``, ``null_fits``, ``null_[jac_]<stat>`` (lists) and their verdict fields,
        ``seconds_jacobian`` (θ's and the null's Jacobians, one batched call) and ``seconds_null_fits``.
    """
    theta = theta.detach().double().cpu().reshape(-1)
    extra = [vanilla_task_vector(model, task, layer, seed=config.seed).vectors.reshape(-1).double().cpu()
             ] if config.map_vanilla else []
    t0 = time.perf_counter()
    rand = (matched_random_vectors(float(theta.norm()), theta.shape[0], config.map_random,
                                   null_seed(task.name, layer, config.seed)) if config.map_random
            else theta.new_zeros(0, theta.shape[0]))
    points = torch.cat([theta[None], *(v[None] for v in extra), rand])
    n = config.map_null_prompts
    sub = batch if n is None or n >= len(batch) else first_rows(batch, n)
    Js = jacobians(model, sub, points, layer, chunk_size=config.map_jacobian_chunk)
    J = Js[0] if sub is batch else jacobians(model, batch, theta, layer, chunk_size=config.map_jacobian_chunk)[0]
    ltv = {**{f"jac_{k}": v for k, v in polar_stats(Js[0], theta).items()}, **polar_stats(W, theta)}
    row = {**compare_maps(J, W, theta), **ltv, "null_prompts": len(sub), "seconds_jacobian": time.perf_counter() - t0}
    t0 = time.perf_counter()
    light = replace(config.map_config(), n_heldout=0, ray_alphas=())  # the fit of θ without its quality checks
    if extra:
        v = extra[0]
        fit = fit_tv_map(model, batch, v, layer, light)
        row.update({"vanilla_theta_norm": float(v.norm()), "vanilla_r2_train": fit.r2_train,
                    **{f"vanilla_{k}": x for k, x in polar_stats(fit.W, v).items()},
                    **{f"vanilla_jac_{k}": x for k, x in polar_stats(Js[1], v).items()}})
    J_rand = Js[1 + len(extra):]
    nulls = {"jac_": [polar_stats(J, r) for J, r in zip(J_rand, rand)],
             "": [polar_stats(fit_tv_map(model, batch, r, layer, light).W, r) for r in rand[: config.map_random_fits]]}
    row.update({"null_n": config.map_random, "null_fits": config.map_random_fits,
                "seconds_null_fits": time.perf_counter() - t0})
    for pre in MAPS.values():
        if len(nulls[pre]) < 2:
            continue
        for stat in STATISTICS:
            values = [r[stat] for r in nulls[pre]]
            row[f"null_{pre}{stat}"] = values
            row.update(verdict_fields(null_verdict(ltv[pre + stat], values, stat), f"null_{pre}{stat}"))
        row[f"null_{pre}reflections"] = sum(r["reflection"] for r in nulls[pre])
    return row


def _task_rows(model, config: Config, name: str, vectors: VectorStore, progress: bool) -> list[dict]:
    task = builtin_task(name)
    sp = task.splits(config.seed)
    test = heldout_queries(task, config.seed, config.n_test)
    shortest = sorted(sp.train, key=lambda e: len(task.template.prompt([], e.input)))[: config.map_prompts]
    batch = fit_prompts(model, task, shortest)
    rows = []
    for layer in config.layers:
        theta = learned_vectors(model, config, layer, vectors, [name], progress=progress)[name].vectors.reshape(-1)
        fit = fit_tv_map(model, batch, theta, layer, config.map_config(), progress=progress)
        row = {"task": name, **fit.summary(), "theta_norm": float(theta.norm()),
               **null_report(model, config, task, batch, theta, layer, fit.W),
               **reconstruction_report(model, task, test, fit, scorings=config.scorings),
               **polar_report(model, task, fit.W, theta, null_draws=config.map_null, seed=config.seed)}
        ray = ", ".join(f"α={r['alpha']:g} {r['rel_error']:.2f}" for r in fit.ray)
        pct = row.get("null_jac_rotation_distance_percentile")
        null = (f", J's ‖Q−I‖/√d {row['jac_rotation_distance']:.3f} (percentile {pct:.0f} of {config.map_random} "
                "random vectors')" if pct is not None else "")
        print(f"  {name} L{layer}: R² held-out {row['r2_heldout']:.3f} (per prompt, centred, mean "
              f"{row.get('r2_per_prompt_centred_mean', float('nan')):.3f}), ray rel. error {ray}, "
              f"‖J−W‖/‖J‖ {row['jac_rel_frobenius']:.3f}, acc θ {row['acc_original']:.2f} → Wθ "
              f"{row['acc_reconstructed']:.2f}{_other_scorings(row)}, ‖Q−I‖/√d {row['rotation_distance']:.3f}"
              f"{' (reflection split off)' if row['reflection'] else ''}{null}, gain {row['gain']:.1f}, "
              f"cos(Qθ,ū) {row['rot_align']:+.3f} ≥ {row['rot_null_percentile']:.0f}% of the null", flush=True)
        rows.append(row)
    return rows


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None, progress: bool = True) -> Result:
    """Fit, compare and decompose W_TV(l) for every task and layer of ``config``.

    Args:
        model: a loaded model.
        config: the settings.
        vectors: where the LTVs are kept (in memory when ``None``; missing ones are trained).
        progress: show progress bars (also off under ``TQDM_DISABLE=1``).

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vectors = vectors or VectorStore()
    return Result(config, [r for name in config.tasks for r in _task_rows(model, config, name, vectors, progress)])
