"""Attention-sink statistics per head, at the query position of (task-vector-injected) zero-shot prompts.

For head ``(l, h)`` and prompt ``i`` with query position ``q`` and injected position ``p``, the attention
row ``A[l, h, q, :]`` is split into

* ``first``: ``A[q, 0]``, the first token (the tokenizers used here add no BOS, so it is the first text
  token; with a BOS it is the BOS);
* ``self``: ``A[q, q]``; ``injected``: ``A[q, p]`` (with the default ``p = q`` the two coincide);
* ``rest``: the attention on all other positions, ``1 − Σ_{k ∈ {0, q, p}} A[q, k]`` (each distinct
  position counted once).

Each is averaged over prompts. The **sink rate** of a head is the share of prompts whose ``first`` exceeds
``threshold`` (default 0.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import HookFn, adapt
from tvmech.analysis.heads import Head, _batch, check_heads, mean_std
from tvmech.interventions.sites import resolve_positions
from tvmech.analysis.ov import single_site
from tvmech.data.prompts import Prompt
from tvmech.data.tasks import Task
from tvmech.interventions.task_vector import TaskVector

METRICS = ("first", "self", "injected", "rest", "sink_rate")


@dataclass
class AttentionStats:
    """Per-head means over ``n`` prompts (each ``[n_layers, n_heads]``) and the sink rate."""

    first: Float[Tensor, "n_layers n_heads"]
    self_: Float[Tensor, "n_layers n_heads"]
    injected: Float[Tensor, "n_layers n_heads"]
    rest: Float[Tensor, "n_layers n_heads"]
    sink_rate: Float[Tensor, "n_layers n_heads"]
    threshold: float
    n: int

    def metric(self, name: str) -> Tensor:
        if name not in METRICS:
            raise ValueError(f"metric {name!r} is not known; valid: {', '.join(METRICS)}")
        return self.self_ if name == "self" else getattr(self, name)

    def over(self, heads: Sequence[Head]) -> dict[str, float]:
        """Each metric averaged over ``heads``."""
        heads = [tuple(h) for h in heads]
        if not heads:
            raise ValueError("the head set is empty: need at least one (layer, head)")
        li, hi = torch.tensor([l for l, _ in heads]), torch.tensor([h for _, h in heads])
        return {m: float(self.metric(m)[li, hi].mean()) for m in METRICS}


def check_threshold(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold {threshold!r} is not valid: it must be in [0, 1]")
    return float(threshold)


def attention_stats(model, task: Task, prompts: Sequence[Prompt], vec: TaskVector | None = None, *,
                    threshold: float = 0.3) -> AttentionStats:
    """Attention from the query position to the first token, itself, the injected position and the rest,
    for every head, on ``prompts`` with ``vec`` injected (without: ``p = q``)."""
    ad = adapt(model)
    threshold = check_threshold(threshold)
    pos = single_site(ad, vec)[1] if vec is not None else -1
    batch = _batch(ad, task, prompts)
    B, T = batch.tokens.shape
    rows, q = torch.arange(B, device=ad.device), batch.query_pos
    p = resolve_positions((pos,), q, T)[:, 0]
    named = torch.zeros(B, T, device=ad.device)
    for idx in (torch.zeros_like(q), q, p):
        named[rows, idx] = 1.0
    got: dict[int, Tensor] = {}

    def grab(layer: int) -> HookFn:
        def hook(pattern: Tensor, hook=None) -> None:
            a = pattern[rows, :, q].float()  # [B, H, T]: each prompt's query row
            got[layer] = torch.stack([a[:, :, 0], a[rows, :, q], a[rows, :, p],
                                      1 - (a * named[:, None]).sum(-1)], 0)  # [4, B, H]
        return hook

    hooks = (vec.hooks_for(ad)(batch) if vec is not None else []) + [(ad.act_name(l, "pattern"), grab(l))
                                                                    for l in range(ad.n_layers)]
    with torch.no_grad(), ad.hooks(hooks):
        ad.residual(batch.tokens, ad.n_layers)
    s = torch.stack([got[l] for l in range(ad.n_layers)], 2).cpu()  # [4, B, L, H]
    first, self_, inj, rest = s.mean(1)
    return AttentionStats(first, self_, inj, rest, (s[0] > threshold).float().mean(0), threshold, B)


def compare_sets(stats: AttentionStats, key: Sequence[Head], random_sets: Sequence[Sequence[Head]],
                 model=None) -> list[dict]:
    """Rows ``{set, seed, metric, value}``: the key set's means, each random set's, and the random sets'
    mean and standard deviation (``set = "random_mean"``, ``value``, ``std``)."""
    if model is not None:
        check_heads(model, key)
        for s in random_sets:
            check_heads(model, s)
    if not random_sets:
        raise ValueError("no random sets to compare with")
    rows = [{"set": "key", "seed": None, "metric": m, "value": v, "std": 0.0} for m, v in stats.over(key).items()]
    per = [stats.over(s) for s in random_sets]
    rows += [{"set": "random", "seed": i, "metric": m, "value": v, "std": 0.0} for i, d in enumerate(per)
             for m, v in d.items()]
    for m in METRICS:
        mu, sd = mean_std([d[m] for d in per])
        rows.append({"set": "random_mean", "seed": None, "metric": m, "value": mu, "std": sd})
    return rows


__all__ = ["METRICS", "AttentionStats", "check_threshold", "attention_stats", "compare_sets"]
