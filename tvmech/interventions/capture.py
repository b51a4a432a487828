"""Reading activations during a forward pass (the engine's read-only intervention).

:class:`Capture` records the activation at each ``(layer, point)`` site into ``values``: the whole
tensor, or only each row's entries at ``positions`` (negative: relative to the query, as everywhere).
With ``detach=False`` the recorded tensor is the one the forward pass goes on with, so gradients can be
taken with respect to it (Taylor scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tvmech.interventions.engine import Intervention, Write
from tvmech.interventions.sites import Context, resolve_positions


@dataclass
class Capture(Intervention):
    """Record activations; ``values[(layer, point)]`` after the pass.

    With ``positions``, the stored tensor is ``[batch, n_positions, ...]`` (for ``"pattern"``, the query
    axis is the one indexed: ``[batch, n_positions, n_heads, key_pos]``).
    """

    sites: Sequence[tuple[int, str]]
    """The ``(layer, point)`` sites to record."""
    positions: tuple[int, ...] | None = None
    """Token positions to keep (negative: relative to each row's query; ``None``: every position)."""
    detach: bool = True
    """Store detached tensors (``False``: keep the graph, for gradients through the recording)."""
    values: dict[tuple[int, str], Tensor] = field(default_factory=dict)
    """``(layer, point)`` -> the recorded tensor, filled by the pass."""

    def writes(self, model) -> list[Write]:
        return [Write(layer, point, self._edit(layer, point)) for layer, point in self.sites]

    def _edit(self, layer: int, point: str):
        def edit(x: Tensor, ctx: Context) -> Tensor | None:
            y = x.detach() if self.detach else x
            if self.positions is not None:
                seq = x.shape[2] if point == "pattern" else x.shape[1]
                idx = resolve_positions(self.positions, ctx.queries(x.shape[0], seq, x.device), seq)
                rows = torch.arange(x.shape[0], device=x.device)[:, None]
                y = y[:, :, ...].transpose(1, 2)[rows, idx] if point == "pattern" else y[rows, idx]
            self.values[layer, point] = y
            return None if self.detach else x

        return edit

    def __getitem__(self, site: tuple[int, str]) -> Tensor:
        return self.values[site]


__all__ = ["Capture"]
