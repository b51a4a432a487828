"""Rank-1 LoRA on the attention output projection ``W_O`` of one layer.

``W_O ∈ R^{(H·d_head) × d_model}`` (heads' ``z`` concatenated as input) becomes ``W_O + a bᵀ``,
``a ∈ R^{H·d_head}``, ``b ∈ R^{d_model}``, i.e. ``attn_out += (z_flat · a) b`` at every position
(:class:`~tvmech.interventions.lowrank.LowRankAttnOut`). ``a ~ U(±1/√(H·d_head))`` (seeded; PEFT's
kaiming-uniform init of LoRA's A), ``b = 0``, so training starts from the unmodified model; no α/r
scaling (α = r = 1). lr is absolute, the same for ``a`` and ``b``. Only blocks ``l`` and above change,
so the training data is prepared at block ``l`` and each step runs those blocks only; the loop is the
shared one of :mod:`tvmech.methods.training` (its fast lane: static shapes and a CUDA graph on CUDA).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.interventions.lowrank import LowRankAttnOut
from tvmech.interventions.lowrank import low_rank_delta as lora_delta
from tvmech.methods.training import LabelLoss, Objective, Rows, TrainData


def lora_init(model, seed: int) -> Float[Tensor, " n_heads_d_head"]:
    """``a ~ U(±1/√(H·d_head))`` drawn with ``torch.Generator().manual_seed(seed)`` (on the CPU)."""
    ad = adapt(model)
    fan_in = ad.n_heads * ad.d_head
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(fan_in, generator=gen) * 2 - 1) / math.sqrt(fan_in)


def lora_objective(model, data: TrainData, layer: int, lr: float, seed: int = 0, weight_decay: float = 0.01
                   ) -> tuple[Objective, dict[str, Tensor]]:
    """The rank-1 LoRA objective on ``W_O`` of ``layer``.

    Args:
        model: a TransformerLens model or its adapter.
        data: training data prepared at a block ``<= layer`` (``layer`` is the cheapest).
        layer: the block whose ``W_O`` changes.
        lr: absolute learning rate of ``a`` and ``b``.
        seed: ``a`` is drawn with :func:`lora_init` and ``seed + 1``.
        weight_decay: AdamW's decoupled weight decay.

    Returns:
        The :class:`Objective` (values: ``{"a": ..., "b": ...}``) and its trainable leaves by name.
    """
    ad = adapt(model)
    ad.check_layer(layer)
    if data.start > layer:
        raise ValueError(f"LoRA on layer {layer} needs training data prepared at a block <= {layer}, got {data.start}")
    a = lora_init(ad, seed + 1).to(ad.device, ad.dtype).requires_grad_(True)
    b = torch.zeros(ad.d_model, device=ad.device, dtype=ad.dtype, requires_grad=True)
    LowRankAttnOut(layer, a, b).writes(ad)  # validate the shapes now

    def forward(rows: Rows) -> Tensor:
        return rows.run(LowRankAttnOut(layer, a, b))

    # W_O changes at every position: nothing to freeze (positions None)
    obj = Objective([[a, b]], [lr], [weight_decay], LabelLoss(ad, forward),
                    lambda: [{"a": a.detach().clone(), "b": b.detach().clone()}], [f"lora layer {layer}"])
    return obj, {"a": a, "b": b}


__all__ = ["lora_delta", "lora_init", "lora_objective"]
