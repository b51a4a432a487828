"""Is a polar statistic of ``W_TV(l)`` specific to the task vector? A null of random vectors of matched norm.

Why a null. The map ``W`` (fitted around θ) and the Jacobian ``J`` (evaluated at θ) are those of the model
*near θ*; their polar statistics (:func:`tvmech.analysis.polar.polar_stats`: ``rotation_distance =
‖Q₊ − I‖/√d``, ``cos_theta_qtheta = cos(θ, Q₊θ)``, ``gain = ‖Σθ‖/‖θ‖``) change with the injection layer
whatever the vector: a random model shows the same "rotation then scaling" trend for a random θ. A statistic
says something about *task vectors* only where θ's value differs from what other vectors of the same norm,
at the same layer and on the same prompts, get.

Null vectors (:func:`matched_random_vectors`). ``r_k = ‖θ‖ g_k / ‖g_k‖`` with ``g_k`` standard Gaussian
(``k = 1..n``): uniform on the sphere of radius ``‖θ‖``, drawn by a generator seeded independently of θ
(only θ's norm is used). Each ``r_k`` gets its own ``J(r_k)`` (and its own fitted ``W(r_k)``, where the
experiment affords it), and the same statistic, with ``r_k`` in place of θ (:func:`polar_table`).

Verdict (:func:`null_verdict`, pure: numbers in, a dict out). For a statistic with value ``t`` (the task
vector's) and null values ``z_1..z_n``: the null's mean, sample sd, the quantiles ``q2.5`` and ``q97.5``
(linear interpolation between order statistics, ``numpy.quantile``'s default), and the percentile of ``t``
in the null, ``100 · (#{z_k < t} + ½ #{z_k = t}) / n`` (mid-rank). The effect is called task-vector-specific
(``specific``) only when ``t`` lies outside the null's central 95 %: ``t < q2.5`` or ``t > q97.5``. With few
draws this one-row rule is loose: when θ is itself a random vector of the same norm (exchangeable with the
draws), ``t`` falls below the smallest of ``n`` draws with probability ``1/(n+1)``, and the interpolated
``q2.5`` lies above it, so about one random θ in five is called specific with n = 10 draws (21-22 % in a
simulation with normal and exponential nulls; 13-14 % with 19 draws), against 5 % for the pooled test below.
:func:`row_verdicts` reads the null values that :mod:`tvmech.experiments.linear_map` stores in a row (keys
``null_<stat>`` for ``W``, ``null_jac_<stat>`` for ``J``) and returns one verdict per statistic and map.

Pooled verdict (:func:`pooled_verdict`, pure). Over ``m`` rows with independent nulls (tasks and seeds at one
layer; each row's null is seeded by task, layer and seed), the mean percentile ``p̄``. If every θ were
exchangeable with its null draws, each θ's rank among its ``n`` draws would be uniform on ``0..n``, its
percentile ``100 r/n`` of mean 50 and sd ``σ_n = 100 √((n+2)/(12 n))`` (31.6 for n = 10), and ``p̄`` about
normal with sd ``σ_n/√m``. The statistic is called task-vector-specific at that layer when
``|p̄ − 50| > 1.96 σ_n/√m`` (a two-sided 5 % test), the share of rows called specific one by one is reported
beside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.polar import polar_stats

STATISTICS: tuple[str, ...] = ("rotation_distance", "cos_theta_qtheta", "gain")
MAPS: dict[str, str] = {"W": "", "J": "jac_"}  # map -> key prefix of its statistics in a linear_map row


def matched_random_vectors(norm: float, d: int, n: int, seed: int) -> Float[Tensor, "n d"]:
    """``n`` vectors uniform on the sphere of radius ``norm`` in ``d`` dimensions (float64, seeded).

    Args:
        norm: their common norm (``‖θ‖``), > 0.
        d: the dimension.
        n: how many (>= 1).
        seed: the generator's seed.

    Returns:
        ``[n, d]`` float64 on the CPU.
    """
    if n < 1 or d < 1:
        raise ValueError(f"need n >= 1 vectors of dimension d >= 1, got n={n}, d={d}")
    if not norm > 0:
        raise ValueError(f"the null vectors' norm must be > 0, got {norm}")
    g = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return norm * g / g.norm(dim=1, keepdim=True)


def polar_table(maps: Float[Tensor, "k d d"], vectors: Float[Tensor, "k d"]) -> dict[str, list[float]]:
    """:func:`~tvmech.analysis.polar.polar_stats` of each ``(maps[k], vectors[k])``, as lists per statistic
    (:data:`STATISTICS` and ``det_q``)."""
    if maps.shape[0] != vectors.shape[0]:
        raise ValueError(f"{maps.shape[0]} maps for {vectors.shape[0]} vectors")
    rows = [polar_stats(M, v) for M, v in zip(maps, vectors)]
    return {s: [r[s] for r in rows] for s in (*STATISTICS, "det_q")}


def null_verdict(value: float, null: Sequence[float], statistic: str = "") -> dict:
    """Where ``value`` lies in the ``null`` draws, and whether it is outside their central 95 %.

    Args:
        value: the task vector's statistic.
        null: the same statistic for the null vectors (>= 2 finite values).
        statistic: its name (copied into the result).

    Returns:
        ``{statistic, ltv, null_n, null_mean, null_sd, null_q025, null_q975, percentile, specific}``
        (see the module docstring; ``specific`` is a bool).
    """
    z = np.asarray(list(null), dtype=np.float64)
    if z.ndim != 1 or len(z) < 2:
        raise ValueError(f"the null of {statistic or 'a statistic'} needs at least 2 values, got {len(z)}")
    if not (np.isfinite(z).all() and np.isfinite(value)):
        raise ValueError(f"the null of {statistic or 'a statistic'} or its value is not finite")
    q025, q975 = (float(x) for x in np.quantile(z, [0.025, 0.975]))
    pct = 100 * (float((z < value).sum()) + 0.5 * float((z == value).sum())) / len(z)
    return {"statistic": statistic, "ltv": float(value), "null_n": len(z), "null_mean": float(z.mean()),
            "null_sd": float(z.std(ddof=1)), "null_q025": q025, "null_q975": q975, "percentile": pct,
            "specific": bool(value < q025 or value > q975)}


def pooled_verdict(verdicts: Sequence[dict]) -> dict:
    """One verdict over several rows' :func:`null_verdict` results of the same statistic (see the module
    docstring).

    Args:
        verdicts: per-row verdicts (independent nulls, e.g. the tasks and seeds at one layer), each with
            ``percentile`` and ``null_n``.

    Returns:
        ``{statistic, m, null_n, mean_percentile, z, share_specific, specific}`` with ``z = (p̄ − 50)/(σ_n/√m)``
        (``null_n``: the smallest over the rows, used for σ_n).
    """
    if not verdicts:
        raise ValueError("a pooled verdict needs at least one row's verdict")
    m, n = len(verdicts), min(int(v["null_n"]) for v in verdicts)
    mean = float(np.mean([v["percentile"] for v in verdicts]))
    z = (mean - 50) / (100 * ((n + 2) / (12 * n)) ** 0.5 / m**0.5)
    return {"statistic": verdicts[0].get("statistic", ""), "m": m, "null_n": n, "mean_percentile": mean, "z": z,
            "share_specific": float(np.mean([bool(v["specific"]) for v in verdicts])), "specific": bool(abs(z) > 1.96)}


def verdict_fields(verdict: dict, prefix: str) -> dict:
    """A verdict as flat row keys ``<prefix>_mean``, ``_sd``, ``_q025``, ``_q975``, ``_percentile``,
    ``_specific`` (e.g. ``null_jac_gain_percentile``)."""
    return {f"{prefix}_{k[5:] if k.startswith('null_') else k}": verdict[k]
            for k in ("null_mean", "null_sd", "null_q025", "null_q975", "percentile", "specific")}


def row_verdicts(row: dict) -> list[dict]:
    """The verdict of every statistic and map whose value and null a ``linear_map`` row holds (none for rows
    saved before the null existed), each with ``map`` (``'W'`` or ``'J'``) added."""
    out = []
    for name, pre in MAPS.items():
        for s in STATISTICS:
            null = row.get(f"null_{pre}{s}")
            if row.get(f"{pre}{s}") is not None and null is not None and len(null) >= 2:
                out.append({"map": name, **null_verdict(row[f"{pre}{s}"], null, s)})
    return out


__all__ = ["STATISTICS", "MAPS", "matched_random_vectors", "polar_table", "null_verdict", "pooled_verdict",
           "verdict_fields", "row_verdicts"]
