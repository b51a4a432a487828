"""Head sets and rank statistics of head attribution (:mod:`tvmech.analysis.head_attribution` re-exports them).

* Comparison sets of the key heads' size, seeded (set ``i`` depends only on ``seed + i``) and disjoint from the
  key set: drawn from all other heads (:func:`random_head_sets`) or *layer-matched*
  (:func:`layer_matched_sets`: as many heads in each layer as the key set has there, drawn among that layer's
  other heads).
* Taylor vs exact: the Spearman correlation (:func:`spearman`) and
  ``precision@k = |top_k(score) ∩ top_k(exact)| / k`` with ``k = round(frac · n)`` (:func:`precision_at_k`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

Head = tuple[int, int]


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation (scipy) of two equally long score vectors."""
    from scipy.stats import spearmanr

    x, y = x.flatten().double().cpu().numpy(), y.flatten().double().cpu().numpy()
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need two score vectors of the same length >= 3, got {len(x)} and {len(y)}")
    return float(spearmanr(x, y).statistic)


def n_key(n_total: int, frac: float) -> int:
    if not 0 < frac <= 1:
        raise ValueError(f"frac {frac!r} is not valid: the share of heads must be in (0, 1]")
    return max(1, round(frac * n_total))


def random_head_sets(n_layers: int, n_heads: int, size: int, n_sets: int = 5, seed: int = 0,
                     exclude: Sequence[Head] = ()) -> list[list[Head]]:
    """``n_sets`` random sets of ``size`` distinct heads outside ``exclude``; set ``i`` depends only on
    ``seed + i``."""
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(map(tuple, exclude))]
    if not 1 <= size <= len(pool):
        raise ValueError(f"set size {size} is not valid: must be in 1..{len(pool)} (heads outside the excluded set)")
    if n_sets < 1:
        raise ValueError(f"n_sets must be >= 1, got {n_sets}")
    return [sorted(random.Random(seed + i).sample(pool, size)) for i in range(n_sets)]


def layer_matched_sets(key: Sequence[Head], n_layers: int, n_heads: int, n_sets: int = 5, seed: int = 0
                       ) -> list[list[Head]]:
    """``n_sets`` random head sets with the layer histogram of ``key``: for each layer, as many heads as ``key``
    has there, drawn among that layer's heads outside ``key``; set ``i`` depends only on ``seed + i``.

    Args:
        key: the key heads (their layer histogram is matched; they are excluded).
        n_layers: the model's layers.
        n_heads: heads per layer.
        n_sets: how many sets.
        seed: the first set's seed.

    Returns:
        ``n_sets`` sorted lists of ``(layer, head)``; raises when a layer has fewer non-key heads than key heads.
    """
    key = [tuple(h) for h in key]
    if not key:
        raise ValueError("the key set is empty: nothing to match")
    if n_sets < 1:
        raise ValueError(f"n_sets must be >= 1, got {n_sets}")
    counts = layer_histogram(key, n_layers)
    taken = set(key)
    pools = {l: [(l, h) for h in range(n_heads) if (l, h) not in taken] for l in range(n_layers) if counts[l]}
    short = [(l, int(counts[l]), len(pool)) for l, pool in pools.items() if len(pool) < counts[l]]
    if short:
        l, c, free = short[0]
        raise ValueError(f"no layer-matched set: layer {l} has {c} key heads but only {free} other heads")
    out = []
    for i in range(n_sets):
        rng = random.Random(seed + i)
        out.append(sorted(h for l, pool in pools.items() for h in rng.sample(pool, int(counts[l]))))
    return out


def heads_from_layer(n_layers: int, n_heads: int, first_layer: int) -> list[Head]:
    """Every head of layers ``first_layer .. n_layers − 1`` (those at or above an injection layer)."""
    if not 0 <= first_layer < n_layers:
        raise ValueError(f"layer {first_layer} is out of range: valid layers are 0..{n_layers - 1}")
    return [(l, h) for l in range(first_layer, n_layers) for h in range(n_heads)]


def precision_at_k(scores: Tensor, reference: Tensor, frac: float = 0.1) -> tuple[float, int]:
    """Overlap of the top ``k = n_key(n, frac)`` entries of two equally long score vectors, divided by ``k``.

    Args:
        scores: e.g. Taylor scores of ``n`` heads.
        reference: e.g. exact ablation effects of the same heads, in the same order.
        frac: share of the entries in the top set.

    Returns:
        ``(precision, k)``: 1 when both rank the same ``k`` entries on top (ties broken by position).
    """
    x, y = scores.flatten().double().cpu(), reference.flatten().double().cpu()
    if len(x) != len(y) or not len(x):
        raise ValueError(f"need two non-empty score vectors of the same length, got {len(x)} and {len(y)}")
    k = n_key(len(x), frac)
    top = [set(v.argsort(descending=True, stable=True)[:k].tolist()) for v in (x, y)]
    return len(top[0] & top[1]) / k, k


def layer_histogram(heads: Sequence[Head], n_layers: int) -> Int[Tensor, " n_layers"]:
    """Number of heads of ``heads`` in each layer."""
    counts = torch.zeros(n_layers, dtype=torch.long)
    for layer, _ in heads:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} is out of range: valid layers are 0..{n_layers - 1}")
        counts[layer] += 1
    return counts


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = list(values)
    if not v:
        raise ValueError("no values")
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


__all__ = ["Head", "spearman", "n_key", "random_head_sets", "layer_matched_sets", "heads_from_layer",
           "precision_at_k", "layer_histogram", "mean_std"]
