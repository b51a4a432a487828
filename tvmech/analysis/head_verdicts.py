"""Verdicts on key-head rows (``figures/key_heads_taylor.json``): pure functions, rows in, dict out.

A Taylor-vs-exact row pairs a head score with an exact intervention (:func:`comparison`): ``tv_reliance`` with
``revert`` (each head's query ``z`` set to its clean, no-θ value: the intervention it estimates), ``paper`` with
``zero`` (zero ablation: the one it estimates), or ``tv_reliance`` with ``zero`` (a score against an intervention
it does not estimate; every row saved before issue 24, which has no ``intervention`` field, is this one).

:func:`taylor_agreement` summarises each comparison over tasks: Spearman's ρ and precision@k (both repeated on
every head's row of a task), first averaged over tasks within a run seed, then mean ± sample sd over run seeds,
beside their nulls (a random ranking: ρ = 0 and, in expectation, precision@k = k / n for n heads).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean, stdev

# the exact intervention each head score estimates to first order (tvmech.analysis.head_attribution)
ESTIMATES: dict[str, str] = {"tv_reliance": "revert", "paper": "zero"}


def comparison(row: dict) -> tuple[str, str]:
    """``(score, intervention)`` of a Taylor-vs-exact row; rows without ``intervention`` compared with zero
    ablation (before issue 24), rows without ``score`` used the paper's (before issue 11)."""
    return row.get("score") or "paper", row.get("intervention") or "zero"


def _mean_sd(per_run: dict) -> tuple[float, float | None]:
    values = [fmean(v) for v in per_run.values()]
    return fmean(values), (stdev(values) if len(values) > 1 else None)


def taylor_agreement(rows: Sequence[dict]) -> dict:
    """Agreement of each head score with each exact intervention, over tasks and run seeds.

    Args:
        rows: Taylor-vs-exact rows (``task``, ``spearman``, ``precision_at_k``, ``k_precision``; ``score``,
            ``intervention``, ``run_seed`` where present), one per head of each task's exact subset.

    Returns:
        ``{"comparisons": {"<score>/<intervention>": {...}}, "estimate_beats_other": bool | None}``. Each
        comparison: ``score``, ``intervention``, ``estimates`` (the score is the first-order estimate of the
        intervention), ``tasks``, ``runs``, ``heads`` (mean heads per task), ``k``, ``spearman`` and
        ``spearman_sd``, ``precision_at_k`` and ``precision_sd`` (sd over run seeds, ``None`` for one run),
        ``spearman_null`` (0), ``precision_null`` (mean ``k / n``), ``above_null`` (both above their nulls).
        ``estimate_beats_other``: whether TV-reliance agrees better (Spearman) with the revert it estimates than
        with zero ablation; ``None`` unless both comparisons are present.
    """
    tasks: dict[tuple, dict[tuple, dict]] = {}  # comparison -> (run seed, task) -> that task's numbers
    for r in rows:
        one = tasks.setdefault(comparison(r), {}).setdefault((r.get("run_seed"), r["task"]), {"n": 0, **r})
        one["n"] += 1
    out = {}
    for (score, kind), per_task in tasks.items():
        stats: dict[str, dict] = {"spearman": {}, "precision_at_k": {}, "null": {}}
        for (run, _), t in per_task.items():
            for field in ("spearman", "precision_at_k"):
                if t.get(field) is not None:
                    stats[field].setdefault(run, []).append(float(t[field]))
            if t.get("k_precision"):
                stats["null"].setdefault(run, []).append(t["k_precision"] / t["n"])
        rho, rho_sd = _mean_sd(stats["spearman"]) if stats["spearman"] else (None, None)
        prec, prec_sd = _mean_sd(stats["precision_at_k"]) if stats["precision_at_k"] else (None, None)
        null = _mean_sd(stats["null"])[0] if stats["null"] else None
        ks = sorted({t.get("k_precision") for t in per_task.values() if t.get("k_precision")})
        out[f"{score}/{kind}"] = {
            "score": score, "intervention": kind, "estimates": ESTIMATES.get(score) == kind,
            "tasks": len({task for _, task in per_task}), "runs": len({run for run, _ in per_task}),
            "heads": fmean(t["n"] for t in per_task.values()), "k": ks[0] if len(ks) == 1 else ks,
            "spearman": rho, "spearman_sd": rho_sd, "spearman_null": 0.0,
            "precision_at_k": prec, "precision_sd": prec_sd, "precision_null": null,
            "above_null": None if rho is None or prec is None or null is None else rho > 0 and prec > null}
    mine, other = out.get("tv_reliance/revert"), out.get("tv_reliance/zero")
    beats = None if not (mine and other and mine["spearman"] is not None and other["spearman"] is not None) \
        else mine["spearman"] > other["spearman"]
    return {"comparisons": out, "estimate_beats_other": beats}


__all__ = ["ESTIMATES", "comparison", "taylor_agreement"]
