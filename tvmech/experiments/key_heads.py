"""Key heads of an LTV: Taylor scores vs the exact interventions they estimate, key vs random head ablation,
and where the key heads sit (``figures/key_heads_{taylor,ablation,layers}.json``).

Heads are scored, chosen and ablated on the first ``n_score`` *training* queries, so that they are chosen
on other prompts than those they are evaluated on. The key-head score (``score``, recorded in every row) is the
TV-reliance score ``|(a_θ − a_clean)·∂p/∂a|`` by default or the paper's ``|a·∂p/∂a|``
(:mod:`tvmech.analysis.head_attribution`).

Taylor vs exact (``key_heads_taylor``). Every ``exact_every``-th head at or above the injection layer, in the
order of the key-score ranking (all of them by default: 135 of 270 heads for layer 15 of 30), is patched exactly
at the query in the ways ``exact`` names (both by default): reverted to its clean (no-θ) ``z``
(``intervention = "revert"``) and zero-ablated (``"zero"``). Each comparison of :data:`COMPARISONS` pairs a
score with an intervention (``estimates`` says whether the score is the first-order estimate of that
intervention: TV-reliance of revert, the paper's score of zero ablation) and is summarised by Spearman's ρ and
precision@k (the overlap of the top ``frac`` by score and by exact effect among those heads); both scores are
computed whatever ``score`` is. The key heads are ablated against random sets of the same size: layer-matched
(same layer histogram, ``set = "random_layer_matched"``) and/or drawn from all layers (``set = "random"``), by
zero and by mean ablation (``kind``). Every ablation accuracy is reported under each scoring of
``Config.scorings`` (default: the task's own, plus ``first_token`` for label-set tasks), one row per (set, seed,
kind, scoring), all scorings from the same forward passes; the first scoring is the primary one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from tvmech.analysis.evaluation import evaluate_multi, resolve_scorings
from tvmech.analysis.head_attribution import (
    ESTIMATES,
    KINDS,
    SCORES,
    HeadScores,
    ablated_accuracies_many,
    ablation_effects,
    clean_query_z,
    heads_from_layer,
    key_heads,
    layer_matched_sets,
    precision_at_k,
    random_head_sets,
    spearman,
    taylor_scores,
)
from tvmech.analysis.ov import single_site
from tvmech.core.adapter import adapt
from tvmech.data.prompts import make_prompts
from tvmech.data.tasks import Example, Task, builtin_task
from tvmech.experiments import ov_reconstruction
from tvmech.experiments.common import heldout_queries, learned_vectors, option
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.function_vectors import mean_head_z

Head = tuple[int, int]
EXACT = ("revert", "zero")  # exact interventions of the Taylor vs exact comparisons
# comparison sets: config name -> the ``set`` of their rows
RANDOM_SETS: dict[str, str] = {"layer_matched": "random_layer_matched", "all_layers": "random"}


def comparison_sets(key: Sequence[Head], n_layers: int, n_heads: int, n_sets: int, seed: int,
                    kinds: Sequence[str] = tuple(RANDOM_SETS)) -> list[tuple[str, int, list[Head]]]:
    """Random head sets of the key set's size, disjoint from it: ``(set name, seed, heads)`` per set.

    Args:
        key: the key heads.
        n_layers: the model's layers.
        n_heads: heads per layer.
        n_sets: sets (seeds ``seed .. seed + n_sets − 1``) of each kind.
        seed: the first seed.
        kinds: ``"layer_matched"`` (same layer histogram) and/or ``"all_layers"``.

    Returns:
        The sets; a layer-matched kind that cannot be drawn (a layer with too few non-key heads) is left
        out with a printed note.
    """
    bad = [k for k in kinds if k not in RANDOM_SETS]
    if bad or not kinds:
        raise ValueError(f"random set kind(s) {bad or '(none given)'} not valid; choose from {list(RANDOM_SETS)}")
    out = []
    for kind in kinds:
        if kind == "layer_matched":
            try:
                sets = layer_matched_sets(key, n_layers, n_heads, n_sets, seed)
            except ValueError as err:
                print(f"  layer-matched random sets left out: {err}", flush=True)
                continue
        else:
            sets = random_head_sets(n_layers, n_heads, len(key), n_sets, seed, exclude=key)
        out += [(RANDOM_SETS[kind], seed + i, s) for i, s in enumerate(sets)]
    return out


@dataclass(frozen=True)
class Config(ov_reconstruction.Config):
    """Settings of the key-head experiment (the mechanism settings and the head selection)."""

    n_score: int = option(32, "training queries per task for Taylor scores, exact ablations and ablation means",
                          flag="--mech-n-score")
    frac: float = option(0.1, "share of heads that are key heads", flag="--key-frac")
    n_random: int = option(5, "random head sets (seeds) per comparison and kind of set", flag="--n-random")
    exact_every: int = option(1, "exact revert and zero ablation of every n-th head (in ranking order) at or above "
                                 "the injection layer", flag="--exact-every")
    score: str = option("tv_reliance", "head score: tv_reliance |(a_θ − a_clean)·∂p/∂a| or paper |a·∂p/∂a|",
                        flag="--key-score", choices=SCORES)
    random_sets: tuple[str, ...] = option(("layer_matched", "all_layers"), "random comparison sets: layer_matched "
                                          "(key set's layer histogram) and/or all_layers", flag="--random-sets",
                                          choices=tuple(RANDOM_SETS))
    exact: tuple[str, ...] = option(EXACT, "exact interventions of the Taylor vs exact comparisons: revert (each "
                                           "head's query z set to its clean z, what tv_reliance estimates) and/or "
                                           "zero (zero ablation, what paper estimates)", flag="--exact-kinds",
                                    choices=EXACT)

    def __post_init__(self):
        super().__post_init__()
        if self.exact_every < 1:
            raise ValueError(f"{self.label} exact_every {self.exact_every} is not valid: it must be >= 1")
        if not 0 < self.frac <= 1:
            raise ValueError(f"{self.label} frac {self.frac} is not valid: it must be in (0, 1]")
        if self.n_score < 1 or self.n_random < 1:
            raise ValueError(f"{self.label} n_score {self.n_score} / {self.label} n_random {self.n_random}: both "
                             "must be >= 1")
        if self.score not in SCORES:
            raise ValueError(f"{self.label} score {self.score!r} is not valid; valid: {list(SCORES)}")
        if not self.random_sets or any(k not in RANDOM_SETS for k in self.random_sets):
            raise ValueError(f"{self.label} random_sets {list(self.random_sets)} is not valid; choose from "
                             f"{list(RANDOM_SETS)}")
        if not self.exact or any(k not in EXACT for k in self.exact):
            raise ValueError(f"{self.label} exact {list(self.exact)} is not valid; choose from {list(EXACT)}")

    def settings(self) -> dict:
        """The saved settings, without the OV reconstruction's own ``alphas`` and ``paths`` (the numbers of this
        experiment do not depend on them)."""
        out = super().settings()
        for name in ("alphas", "paths"):
            out.pop(name, None)
        return out


@dataclass
class Result:
    """Per task and head the scores (``scores``), the Taylor vs exact rows (``taylor``) and the key vs random
    ablation records (``ablation``)."""

    config: Config
    # task, score, layer, head, rank, taylor, signed, key, eligible (at or above the injection layer), exact (mean
    # |Δp| of zero ablation; None off the subset), exact_revert (mean |Δp| of the revert to the clean z)
    scores: list[dict]
    taylor: list[dict]  # one row per (comparison, head of the subset) (TAYLOR_KEYS)
    ablation: list[dict]  # task, score, set, seed, kind, size, scoring, accuracy, n

    TABLES: ClassVar[tuple[str, ...]] = ("key_heads_ablation", "key_heads_taylor", "key_heads_layers")

    def rows(self) -> list[dict]:
        return list(self.scores)

    def key_sets(self) -> dict[str, list[Head]]:
        """Task -> its key heads."""
        return key_sets_from_rows(self.scores)

    def tables(self) -> dict[str, list[dict]]:
        return {"key_heads_ablation": self.ablation, "key_heads_taylor": self.taylor, "key_heads_layers": self.scores}


def key_sets_from_rows(scores: list[dict]) -> dict[str, list[Head]]:
    """Task -> key heads, from ``scores`` rows (``figures/key_heads_layers.json``), in ranking order."""
    out: dict[str, list[Head]] = {}
    for r in scores:
        if r["key"]:
            out.setdefault(r["task"], []).append((r["layer"], r["head"]))
    return out


def data(config: Config, name: str) -> tuple[Task, list, list]:
    """A task, its first ``n_test`` test queries and its first ``n_score`` training queries as prompts."""
    task = builtin_task(name)
    sp = task.splits(config.seed)
    return task, heldout_queries(task, config.seed, config.n_test), make_prompts(task, sp.train[: config.n_score], 0)


def key_vs_random(model, vec: TaskVector, task: Task, queries: Sequence[Example], scores: HeadScores, *,
                  frac: float = 0.1, n_random: int = 5, seed: int = 0, kinds: Sequence[str] = KINDS,
                  random_sets: Sequence[str] = ("all_layers",), means: Tensor | None = None,
                  scorings: Sequence[str] | None = None, batch_size: int = 16, progress: bool = True) -> list[dict]:
    """LTV accuracy without ablation, with the key heads ablated, and with each of ``n_random`` random sets
    of the same size ablated (zero and/or mean).

    Args:
        model: a loaded model.
        vec: the task vector θ injected in every run.
        task: the task.
        queries: the test queries.
        scores: the Taylor scores that choose the key heads.
        frac: share of all heads that are key heads.
        n_random: random head sets (seeds ``seed .. seed + n_random - 1``) of each kind, disjoint from the key set.
        seed: first seed of the random sets.
        kinds: ablation kinds (``zero``, ``mean``).
        random_sets: kinds of random sets (:func:`comparison_sets`): ``layer_matched``, ``all_layers``.
        means: per-head mean ``z`` for mean ablation (``None``: :func:`mean_head_z` of the zero-shot prompts of
            ``queries``, computed only when ``kinds`` has ``"mean"``).
        scorings: scoring modes of every accuracy, from the same forward passes (``None``:
            :func:`~tvmech.analysis.evaluation.default_scorings`).
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        Rows ``{task, score, set, seed, kind, size, scoring, accuracy, n}``, one per (set, seed, kind,
        scoring), first the unablated ``set = "none"``; ``set`` is ``key``, ``random_layer_matched`` or
        ``random`` (all layers).
    """
    ad = adapt(model)
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    key = key_heads(scores, frac)
    sets = [("key", None, key)] + comparison_sets(key, ad.n_layers, ad.n_heads, n_random, seed, random_sets)
    scorings = resolve_scorings(task, scorings)
    if means is None and "mean" in kinds:
        means = mean_head_z(ad, task, make_prompts(task, queries, 0))
    base = evaluate_multi(ad, task, queries, 0, scorings=scorings, batch_size=batch_size, intervention=vec,
                          progress=progress)
    rows = [{"task": task.name, "score": scores.score, "set": "none", "seed": None, "kind": "none", "size": 0,
             "scoring": sc, "accuracy": r.accuracy, "n": r.n} for sc, r in base.items()]
    jobs = [(k, s) for k in kinds for s in sets]
    results = ablated_accuracies_many(ad, vec, task, queries, [(heads, kind) for kind, (_, _, heads) in jobs],
                                      scorings=scorings, means=means, batch_size=batch_size, progress=progress)
    for (kind, (name, s, heads)), res in zip(jobs, results):
        rows += [{"task": task.name, "score": scores.score, "set": name, "seed": s, "kind": kind,
                  "size": len(heads), "scoring": sc, "accuracy": r.accuracy, "n": r.n} for sc, r in res.items()]
    return rows


# (score, exact intervention) pairs of the Taylor vs exact table: each score against the intervention it
# estimates, and the TV-reliance score against zero ablation (the comparison made before issue 24)
COMPARISONS: tuple[tuple[str, str], ...] = (("tv_reliance", "revert"), ("paper", "zero"), ("tv_reliance", "zero"))
TAYLOR_KEYS = ("task", "score", "intervention", "estimates", "layer", "head", "rank", "taylor", "exact", "spearman",
               "precision_at_k", "k_precision")


def exact_subset(model, vec: TaskVector, ranking: Sequence[Head], every: int = 1) -> list[Head]:
    """Every ``every``-th head of ``ranking`` at or above θ's injection layer (those θ can reach)."""
    ad = adapt(model)
    layer, _ = single_site(ad, vec)
    eligible = set(heads_from_layer(ad.n_layers, ad.n_heads, layer))
    return [h for h in ranking if h in eligible][::every]


def taylor_vs_exact(model, vec: TaskVector, task: Task, prompts: Sequence, scores: dict[str, HeadScores],
                    subset: Sequence[Head], *, frac: float = 0.1, kinds: Sequence[str] = EXACT,
                    progress: bool = True) -> tuple[list[dict], dict[str, dict[Head, float]]]:
    """Exact effects ``mean |Δp|`` of each intervention of ``kinds`` (revert, zero) on each head of ``subset``
    alone, and each comparison of :data:`COMPARISONS` with one of them (Spearman ρ, precision@k of the top
    ``frac``).

    Args:
        model: a loaded model.
        vec: the task vector θ.
        task: the task.
        prompts: the scoring prompts (zero-shot).
        scores: score name -> :class:`HeadScores` on ``prompts`` (every score :data:`COMPARISONS` names).
        subset: the heads patched exactly.
        frac: share of the heads in the top set of precision@k.
        kinds: the exact interventions.
        progress: show progress bars.

    Returns:
        ``(rows, exact)``: one row per (comparison, head of ``subset``) with :data:`TAYLOR_KEYS`, and
        intervention -> head -> exact effect.
    """
    ad = adapt(model)
    clean = clean_query_z(ad, task, prompts) if "revert" in kinds else None
    exact = {kind: ablation_effects(ad, vec, task, prompts, subset, kind=kind, clean=clean, progress=progress
                                    ).abs().mean(1) for kind in dict.fromkeys(kinds)}
    rows = []
    for score, kind in (c for c in COMPARISONS if c[1] in exact):
        rank = {h: i for i, h in enumerate(scores[score].ranking())}
        taylor = scores[score].taylor[tuple(zip(*subset))]
        prec, k = precision_at_k(taylor, exact[kind], frac)
        rho = spearman(taylor, exact[kind])
        rows += [{"task": task.name, "score": score, "intervention": kind, "estimates": ESTIMATES[score] == kind,
                  "layer": l, "head": h, "rank": rank[(l, h)], "taylor": float(t), "exact": float(e), "spearman": rho,
                  "precision_at_k": prec, "k_precision": k} for (l, h), t, e in zip(subset, taylor, exact[kind])]
    return rows, {kind: {h: float(e) for h, e in zip(subset, eff)} for kind, eff in exact.items()}


def _task_rows(model, config: Config, name: str, vec, progress: bool) -> tuple[list[dict], list[dict], list[dict]]:
    task, test, score_prompts = data(config, name)
    scores = {s: taylor_scores(model, vec, task, score_prompts, score=s) for s in SCORES}
    chosen = scores[config.score]
    key = set(key_heads(chosen, config.frac))
    subset = exact_subset(model, vec, chosen.ranking(), config.exact_every)
    taylor, exact = taylor_vs_exact(model, vec, task, score_prompts, scores, subset, frac=config.frac,
                                    kinds=config.exact, progress=progress)
    layer, _ = single_site(model, vec)
    rows = [{"task": name, "score": chosen.score, "layer": l, "head": h, "rank": i,
             "taylor": float(chosen.taylor[l, h]), "signed": float(chosen.signed[l, h]), "key": (l, h) in key,
             "eligible": l >= layer, "exact": exact.get("zero", {}).get((l, h)),
             "exact_revert": exact.get("revert", {}).get((l, h))}
            for i, (l, h) in enumerate(chosen.ranking())]
    means = mean_head_z(model, task, score_prompts)
    ablations = key_vs_random(model, vec, task, test, chosen, frac=config.frac, n_random=config.n_random,
                              seed=config.seed, random_sets=config.random_sets, means=means, scorings=config.scorings,
                              progress=progress)
    return rows, taylor, list(ablations)


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None, progress: bool = True) -> Result:
    """Score, select and ablate heads for every task's LTV.

    Args:
        model: a loaded model.
        config: the mechanism settings and the head selection.
        vectors: where the LTVs are kept (in memory when ``None``).
        progress: show the exact-ablation and key-vs-random progress bars.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vecs = learned_vectors(model, config, config.layer, vectors, progress=progress)
    scores, taylor, ablation = [], [], []
    for name in config.tasks:
        s, t, a = _task_rows(model, config, name, vecs[name], progress)
        scores += s
        taylor += t
        ablation += a
    return Result(config, scores, taylor, ablation)
