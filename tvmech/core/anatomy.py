"""Block anatomy: what a decoder block reads and writes, so that decompositions hold on every architecture.

A block ``l`` maps the residual stream ``h`` entering it (``hook_resid_pre``) to the stream leaving it
(``hook_resid_post``) in one of two shapes:

    sequential:  m = h + A(h),     out = m + M(m)        (m: ``hook_resid_mid``)
    parallel:    out = h + A(h) + M(h)                   (GPT-NeoX with ``use_parallel_residual``, GPT-J, Phi-2)

with the attention and MLP sublayers

    A(x) = P_A( Σ_h z_h W_O[h] + b_O ),   z_h = Σ_k pattern_h[q, k] (N_A(x_k) W_V[h] + b_V[h])
    M(x) = P_M( MLP( N_M(x) ) )

``N_A`` / ``N_M`` are the input norms (``ln1`` / ``ln2``; OLMo-2 has none), ``P_A`` / ``P_M`` the output norms
(``ln1_post`` / ``ln2_post``: Gemma-2, Gemma-3 and OLMo-2; the identity elsewhere); ``hook_attn_out`` and
``hook_mlp_out`` are ``A(x)`` and ``M(x)`` *after* ``P_A`` / ``P_M``. :class:`BlockAnatomy` records which of these
a block has; :func:`tvmech.core.adapter.Adapter.anatomy` finds it from the loaded modules (the parallel shape by
running the block once and checking what its MLP reads), so no algorithm assumes a Llama-shaped block.

Frozen-scale linearisation. An RMS norm ``N(x) = g ⊙ x / rms(x)`` (``rms(x) = sqrt(mean(x²) + ε)``; Gemma's
gain is ``1 + w``) or a layer norm ``N(x) = g ⊙ (x − mean(x)) / sd(x) + β`` is not linear, but with its scale
held at the value it has for a given input ``a`` it is affine:

    N_a(x) = g ⊙ C(x) / s(a) (+ β),     C = identity (RMS) or centring (layer norm),   N_a(a) = N(a).

:func:`frozen_norm` applies the linear part ``x ↦ g ⊙ C(x) / s(a)``; summing it over parts ``x_i`` with
``Σ x_i = a`` and adding ``β`` once gives ``N(a)`` exactly. This is how a post-norm's output is split into
per-head outputs (:meth:`~tvmech.core.adapter.Adapter.head_outputs`): the heads' share of ``hook_attn_out``
with the norm's scale that the whole output has. Differences through a norm (the packaged OV effect of
Gemma's blocks) are taken exactly instead, as ``N(a + E) − N(a)`` (:mod:`tvmech.analysis.ov`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

NormKind = Literal["rms", "rms_offset", "layer"]


@dataclass(frozen=True)
class BlockAnatomy:
    """Which parts a block has (see the module docstring).

    ``attn_norm`` / ``mlp_norm``: the sublayers' input norms (``ln1`` / ``ln2``); ``attn_post_norm`` /
    ``mlp_post_norm``: their output norms (``ln1_post`` / ``ln2_post``); ``parallel``: the MLP reads the block's
    input ``h`` (not ``h + A(h)``); ``out_bias``: the attention output projection has a bias ``b_O``.
    """

    attn_norm: bool
    mlp_norm: bool
    attn_post_norm: bool
    mlp_post_norm: bool
    parallel: bool
    out_bias: bool

    @property
    def mlp_reads(self) -> str:
        """The residual point the MLP (its norm) reads: ``"resid_pre"`` (parallel) or ``"resid_mid"``."""
        return "resid_pre" if self.parallel else "resid_mid"


@dataclass(frozen=True)
class NormParams:
    """An RMS or layer norm as numbers: ``kind``, effective gain ``g`` (Gemma's ``1 + w`` included), bias ``β``
    (layer norm; ``None`` otherwise) and ``eps``."""

    kind: NormKind
    gain: Tensor
    bias: Tensor | None
    eps: float

    def scale(self, a: Float[Tensor, "... d"]) -> Float[Tensor, "... 1"]:
        """``1 / s(a)``: the reciprocal RMS (or standard deviation) of ``a`` with ``eps`` (at least float32)."""
        a = a.to(wide(a.dtype))
        if self.kind == "layer":
            a = a - a.mean(-1, keepdim=True)
        return torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + self.eps)

    def apply(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        """``N(x)`` (at least float32): what the module computes, to float rounding."""
        return frozen_norm(self, x, x) + (0 if self.bias is None else self.bias.to(wide(x.dtype)))


def norm_params(module: torch.nn.Module) -> NormParams:
    """The :class:`NormParams` of a Hugging Face norm module, identified by what it computes.

    Candidates: ``g ⊙ x / rms(x)`` with ``g`` the weight (Llama, Qwen, Mistral, Phi-3, OLMo-2) or ``1 + weight``
    (Gemma), and ``torch.nn.LayerNorm`` (GPT-2, GPT-NeoX). Each is compared with the module on a probe input.

    Raises:
        NotImplementedError: the module computes none of these (naming its class).
    """
    weight = getattr(module, "weight", None)
    eps = next((float(getattr(module, n)) for n in ("variance_epsilon", "eps", "epsilon") if hasattr(module, n)), None)
    if weight is None or eps is None:
        raise NotImplementedError(f"norm {type(module).__name__} has no weight/eps that tvmech recognises")
    w = weight.detach().to(wide(weight.dtype))
    bias = getattr(module, "bias", None)
    candidates = ([NormParams("layer", w, bias.detach().to(w.dtype) if bias is not None else None, eps)]
                  if isinstance(module, torch.nn.LayerNorm) else
                  [NormParams("rms", w, None, eps), NormParams("rms_offset", 1.0 + w, None, eps)])
    g = torch.Generator().manual_seed(0)
    probe = (3 * torch.randn(4, w.shape[-1], generator=g) + 0.5).to(w.device, weight.dtype)
    with torch.no_grad():
        want = module(probe).float()
    for c in candidates:
        if torch.allclose(c.apply(probe).float(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max())):
            return c
    raise NotImplementedError(f"tvmech cannot identify norm {type(module).__name__} as an RMS or layer norm")


def frozen_norm(params: NormParams, a: Float[Tensor, "... d"], x: Float[Tensor, "... k d"] | Float[Tensor, "... d"]
                ) -> Float[Tensor, "..."]:
    """The linear part of the norm with its scale frozen at ``a``: ``g ⊙ C(x) / s(a)`` (at least float32).

    Args:
        params: the norm.
        a: the input whose scale is used (``[..., d]``).
        x: parts to map, ``[..., d]`` (same leading shape as ``a``) or ``[..., k, d]`` (``k`` parts per ``a``).

    Returns:
        ``x`` mapped, ``x``'s shape.
    """
    s = params.scale(a)
    x = x.to(wide(x.dtype))
    if x.ndim == a.ndim + 1:
        s = s.unsqueeze(-2)
    if params.kind == "layer":
        x = x - x.mean(-1, keepdim=True)
    return params.gain.to(x.dtype) * x * s


def wide(dtype: torch.dtype) -> torch.dtype:
    """``dtype`` widened to at least float32 (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


__all__ = ["BlockAnatomy", "NormParams", "NormKind", "norm_params", "frozen_norm", "wide"]
