"""Attention patterns held fixed: :class:`FixedPatterns` writes given patterns over ``attn.hook_pattern``.

With every pattern of blocks ``≥ l`` taken from one run and written into another, the attention of those blocks
no longer depends on the input through queries and keys: only values change. That is the setting in which the
packaged OV effect (:mod:`tvmech.analysis.ov`) is exact, and the tests check it there. TransformerLens hooks
only (the pattern has no Hugging Face module of its own), so a pass with it takes the hooked path.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

from tvmech.interventions.engine import Intervention, Write
from tvmech.interventions.sites import Context


@dataclass
class FixedPatterns(Intervention):
    """``patterns[l]`` (``[batch, n_heads, query_pos, key_pos]``, e.g. captured in another run of the same batch)
    written over block ``l``'s attention pattern, for every ``l`` in ``patterns``."""

    patterns: dict[int, Float[Tensor, "batch n_heads q k"]]

    def writes(self, model) -> list[Write]:
        return [Write(l, "pattern", self._edit(l)) for l in sorted(self.patterns)]

    def _edit(self, layer: int):
        def edit(x: Tensor, ctx: Context) -> Tensor:
            p = self.patterns[layer]
            if p.shape != x.shape:
                raise ValueError(f"fixed pattern of block {layer} has shape {tuple(p.shape)}; the pass has "
                                 f"{tuple(x.shape)}")
            return p.to(x.device, x.dtype)

        return edit


__all__ = ["FixedPatterns"]
