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

from tvmech.analysis.head_attribution import Head, prompt_batch
from tvmech.analysis.ov import single_site
from tvmech.core.adapter import adapt
from tvmech.data.prompts import Prompt
from tvmech.data.tasks import Task
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import residual
from tvmech.interventions.sites import resolve_positions
from tvmech.interventions.task_vector import TaskVector

METRICS = ("first", "self", "injected", "rest", "sink_rate")


@dataclass
class AttentionStats:
    """Per-head means over ``n`` prompts (each ``[n_layers, n_heads]``) and the sink rate."""

    first: Float[Tensor, "n_layers n_heads"]
    """Mean attention from the query to the first token."""
    self_: Float[Tensor, "n_layers n_heads"]
    """Mean attention from the query to itself (metric ``"self"``)."""
    injected: Float[Tensor, "n_layers n_heads"]
    """Mean attention from the query to the injected position."""
    rest: Float[Tensor, "n_layers n_heads"]
    """Mean attention to every other token."""
    sink_rate: Float[Tensor, "n_layers n_heads"]
    """The share of prompts whose ``first`` exceeds ``threshold``."""
    threshold: float
    """The sink threshold on ``first``."""
    n: int
    """The number of prompts."""

    def metric(self, name: str) -> Tensor:
        """The ``[n_layers, n_heads]`` means of metric ``name`` (one of ``METRICS``)."""
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
    batch = prompt_batch(ad, task, prompts)
    B, T = batch.tokens.shape
    rows, q = torch.arange(B, device=ad.device), batch.query_pos
    p = resolve_positions((pos,), q, T)[:, 0]
    named = torch.zeros(B, T, device=ad.device)
    for idx in (torch.zeros_like(q), q, p):
        named[rows, idx] = 1.0
    pattern = Capture([(l, "pattern") for l in range(ad.n_layers)], positions=(-1,))  # [B, 1, H, T] per layer
    both = pattern if vec is None else vec.injection + pattern
    with torch.no_grad():
        residual(ad, batch.tokens, ad.n_layers, intervention=both, ctx=q)

    def split(a: Tensor) -> Tensor:  # a: [B, H, T], each prompt's query row -> [4, B, H]
        return torch.stack([a[:, :, 0], a[rows, :, q], a[rows, :, p], 1 - (a * named[:, None]).sum(-1)], 0)

    s = torch.stack([split(pattern[l, "pattern"][:, 0].float()) for l in range(ad.n_layers)], 2).cpu()  # [4, B, L, H]
    first, self_, inj, rest = s.mean(1)
    return AttentionStats(first, self_, inj, rest, (s[0] > threshold).float().mean(0), threshold, B)


__all__ = ["METRICS", "AttentionStats", "check_threshold", "attention_stats"]
