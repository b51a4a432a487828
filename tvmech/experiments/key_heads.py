"""Key heads of an LTV: Taylor scores vs exact ablation, key vs random head ablation, and where the key
heads sit (``figures/key_heads_{taylor,ablation,layers}.json``).

Heads are scored, chosen and ablated on the first ``n_score`` *training* queries, so that they are chosen
on other prompts than those they are evaluated on; every ``exact_every``-th head of the Taylor ranking is
also ablated exactly (27 of 270 heads by default), spread over all ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor
from tqdm.auto import tqdm

from tvmech.analysis.evaluation import evaluate
from tvmech.analysis.heads import (
    KINDS,
    HeadScores,
    ablated_accuracy,
    ablation_effects,
    key_heads,
    random_head_sets,
    spearman,
    taylor_scores,
)
from tvmech.core.adapter import adapt
from tvmech.data.prompts import make_prompts
from tvmech.data.tasks import Example, Task, builtin_task
from tvmech.experiments import ov_reconstruction
from tvmech.experiments.common import heldout_queries, learned_vectors, option
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.function_vectors import mean_head_z

Head = tuple[int, int]


@dataclass(frozen=True)
class Config(ov_reconstruction.Config):
    """Settings of the key-head experiment (the mechanism settings and the head selection)."""

    n_score: int = option(32, "training queries per task for Taylor scores, exact ablations and ablation means",
                          flag="--mech-n-score")
    frac: float = option(0.1, "share of heads that are key heads", flag="--key-frac")
    n_random: int = option(5, "random head sets (seeds) per comparison", flag="--n-random")
    exact_every: int = option(10, "exact ablation of every n-th head of the Taylor ranking", flag="--exact-every")

    def __post_init__(self):
        super().__post_init__()
        if self.exact_every < 1:
            raise ValueError(f"--exact-every {self.exact_every} is not valid: it must be >= 1")
        if not 0 < self.frac <= 1:
            raise ValueError(f"--key-frac {self.frac} is not valid: it must be in (0, 1]")
        if self.n_score < 1 or self.n_random < 1:
            raise ValueError(f"--mech-n-score {self.n_score} / --n-random {self.n_random}: both must be >= 1")


@dataclass
class Result:
    """Per task and head the Taylor score (``scores``), the Taylor vs exact subset (``taylor``) and the key vs
    random ablation records (``ablation``)."""

    config: Config
    scores: list[dict]  # task, layer, head, rank, taylor, signed, key, exact (None off the subset), spearman
    taylor: list[dict]  # the scores rows with an exact ablation: task, layer, head, rank, taylor, exact, spearman
    ablation: list[dict]  # task, set, seed, kind, size, accuracy, n

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
                  means: Tensor | None = None, batch_size: int = 16, progress: bool = False) -> list[dict]:
    """LTV accuracy without ablation, with the key heads ablated, and with each of ``n_random`` random sets
    of the same size ablated (zero and/or mean).

    Args:
        model: a loaded model.
        vec: the task vector θ injected in every run.
        task: the task.
        queries: the test queries.
        scores: the Taylor scores that choose the key heads.
        frac: share of all heads that are key heads.
        n_random: random head sets (seeds ``seed .. seed + n_random - 1``), drawn from the other heads.
        seed: first seed of the random sets.
        kinds: ablation kinds (``zero``, ``mean``).
        means: per-head mean ``z`` for mean ablation.
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        Rows ``{task, set, seed, kind, size, accuracy, n}``, first the unablated ``set = "none"``.
    """
    ad = adapt(model)
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    key = key_heads(scores, frac)
    sets = [("key", None, key)] + [("random", seed + i, s) for i, s in enumerate(
        random_head_sets(ad.n_layers, ad.n_heads, len(key), n_random, seed, exclude=key))]
    base = evaluate(ad, task, queries, 0, batch_size=batch_size, hooks_for=vec.hooks_for(ad))
    rows = [{"task": task.name, "set": "none", "seed": None, "kind": "none", "size": 0, "accuracy": base.accuracy,
             "n": base.n}]
    jobs = [(k, s) for k in kinds for s in sets]
    for kind, (name, s, heads) in tqdm(jobs, desc=f"ablations {task.name}", disable=not progress, leave=False):
        r = ablated_accuracy(ad, vec, task, queries, heads, kind=kind, means=means, batch_size=batch_size)
        rows.append({"task": task.name, "set": name, "seed": s, "kind": kind, "size": len(heads),
                     "accuracy": r.accuracy, "n": r.n})
    return rows


def _task_rows(model, config: Config, name: str, vec, progress: bool) -> tuple[list[dict], list[dict]]:
    task, test, score_prompts = data(config, name)
    scores = taylor_scores(model, vec, task, score_prompts)
    ranking = scores.ranking()
    key = set(key_heads(scores, config.frac))
    subset = ranking[:: config.exact_every]
    exact = ablation_effects(model, vec, task, score_prompts, subset, progress=progress).abs().mean(1)
    exact_of = {h: float(e) for h, e in zip(subset, exact)}
    rho = spearman(scores.taylor[tuple(zip(*subset))], exact)
    rows = [{"task": name, "layer": l, "head": h, "rank": i, "taylor": float(scores.taylor[l, h]),
             "signed": float(scores.signed[l, h]), "key": (l, h) in key, "exact": exact_of.get((l, h)),
             "spearman": rho} for i, (l, h) in enumerate(ranking)]
    means = mean_head_z(model, task, score_prompts)
    ablations = key_vs_random(model, vec, task, test, scores, frac=config.frac, n_random=config.n_random,
                              seed=config.seed, means=means, progress=progress)
    return rows, list(ablations)


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
    vecs = learned_vectors(model, config, config.layer, vectors)
    scores, ablation = [], []
    for name in config.tasks:
        s, a = _task_rows(model, config, name, vecs[name], progress)
        scores += s
        ablation += a
    taylor = [{k: r[k] for k in ("task", "layer", "head", "rank", "taylor", "exact", "spearman")}
              for r in scores if r["exact"] is not None]
    return Result(config, scores, taylor, ablation)
