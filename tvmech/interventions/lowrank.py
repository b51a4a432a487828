"""A low-rank change of the attention output projection, written through the engine.

Block ``l``'s attention output is ``attn_out = z_flat W_O`` with ``z_flat ∈ R^{H·d_head}`` the heads'
``z`` concatenated (the input of ``W_O``). LoRA on ``W_O`` makes it ``W_O + A B`` with
``A ∈ R^{(H·d_head) × r}``, ``B ∈ R^{r × d_model}``, i.e.

    attn_out' = attn_out + (z_flat A) B        (rank 1: attn_out + (z_flat · a) b, a bᵀ = A B)

at every position. :class:`LowRankAttnOut` does this with two writes in block ``l``: a read of ``z``
(kept, not detached, so gradients reach ``A`` and whatever ``z`` depends on) and an addition at
``attn_out``, which the block's MLP then sees. It works on both engine paths (TransformerLens hooks and
the native hooks of KV-cache generation).
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.interventions.engine import Intervention, Write
from tvmech.interventions.sites import Context


def low_rank_delta(z: Float[Tensor, "batch pos n_heads d_head"],
                   a: Float[Tensor, " fan_in"] | Float[Tensor, "fan_in r"],
                   b: Float[Tensor, " d_model"] | Float[Tensor, "r d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """``(z_flat A) B``: the change of ``attn_out`` when ``W_O`` becomes ``W_O + A B``.

    Args:
        z: the heads' ``z``.
        a: ``[H·d_head]`` (rank 1) or ``[H·d_head, r]``.
        b: ``[d_model]`` (rank 1) or ``[r, d_model]``.

    Returns:
        The delta, in ``z``'s dtype.
    """
    if a.ndim == 1:
        return (z.flatten(2) @ a.to(z.dtype))[..., None] * b.to(z.dtype)
    return (z.flatten(2) @ a.to(z.dtype)) @ b.to(z.dtype)


@dataclass
class LowRankAttnOut(Intervention):
    """``W_O`` of block ``layer`` becomes ``W_O + a b`` (rank 1: ``a bᵀ``); see the module docstring."""

    layer: int
    a: Float[Tensor, " fan_in"] | Float[Tensor, "fan_in r"]
    """The left factor, ``fan_in = n_heads * d_head`` rows."""
    b: Float[Tensor, " d_model"] | Float[Tensor, "r d_model"]
    """The right factor, ``d_model`` columns."""

    def writes(self, model) -> list[Write]:
        ad = adapt(model)
        ad.check_layer(self.layer)
        fan_in = ad.n_heads * ad.d_head
        rank1 = self.a.shape == (fan_in,) and self.b.shape == (ad.d_model,)
        rank_r = (self.a.ndim == 2 and self.b.ndim == 2 and self.a.shape[0] == fan_in
                  and self.b.shape[1] == ad.d_model and self.a.shape[1] == self.b.shape[0])
        if not (rank1 or rank_r):
            raise ValueError(f"LoRA factors must have shapes ({fan_in},) and ({ad.d_model},) (rank 1) or "
                             f"({fan_in}, r) and (r, {ad.d_model}); "
                             f"got {tuple(self.a.shape)} and {tuple(self.b.shape)}")
        seen: dict[str, Tensor] = {}  # this set of writes' own z, from read to add

        def read(z: Tensor, ctx: Context) -> None:
            seen["z"] = z

        def add(out: Tensor, ctx: Context) -> Tensor:
            if "z" not in seen:
                raise RuntimeError(f"block {self.layer}'s attention output came without its z being read first")
            return out + low_rank_delta(seen.pop("z"), self.a, self.b).to(out.dtype)

        return [Write(self.layer, "z", read), Write(self.layer, "attn_out", add)]


__all__ = ["LowRankAttnOut", "low_rank_delta"]
