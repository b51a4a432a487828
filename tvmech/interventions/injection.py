"""Adding vectors to the residual stream at chosen layers and positions.

An :class:`Injection` holds one vector per (layer, position) site, or one vector shared by all sites,
and turns into TransformerLens forward hooks on ``blocks.{l}.hook_resid_pre`` (or ``hook_resid_post``).

Positions: a negative position counts back from each prompt's own query token (``-1`` is the query
token itself, ``-2`` the token before it), so it is robust to right padding when the batch's query
positions are given; a non-negative position is an absolute token index. Without query positions,
the last token of the sequence is the query token (right for unpadded prompts and for generation).

``mode="add"`` computes ``h[b, p] + v``; ``mode="replace"`` sets ``h[b, p] = v``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.adapter import HookFn, adapt

MODES = ("add", "replace")


def resolve_positions(positions: Sequence[int], query_pos: Int[Tensor, " batch"], seq_len: int) -> Int[Tensor, "batch n_pos"]:
    """Absolute token index of every (row, position): ``q + 1 + p`` for ``p < 0``, ``p`` otherwise."""
    pos = torch.tensor(list(positions), device=query_pos.device)
    idx = torch.where(pos < 0, query_pos[:, None] + 1 + pos[None], pos[None].expand(len(query_pos), -1))
    bad = (idx < 0) | (idx > query_pos[:, None])
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"position {positions[col]} is out of range for prompt {row}, whose query token is at index "
            f"{int(query_pos[row])}: valid positions are -{int(query_pos[row]) + 1}..-1 or 0..{int(query_pos[row])}"
        )
    return idx


@dataclass
class Injection:
    """Vectors for (layer, position) sites; ``vectors[i, j]`` goes to ``layers[i]``, ``positions[j]``.

    A shared vector has shape ``[1, 1, d_model]`` and is used at every site.
    """

    vectors: Float[Tensor, "n_layers n_positions d_model"]
    layers: tuple[int, ...]
    positions: tuple[int, ...] = (-1,)
    point: str = "resid_pre"
    mode: str = "add"

    def __post_init__(self) -> None:
        self.layers, self.positions = tuple(self.layers), tuple(self.positions)
        if self.vectors.ndim == 1:
            self.vectors = self.vectors[None, None]
        if not self.layers or not self.positions:
            raise ValueError("an injection needs at least one layer and one position")
        if len(set(self.layers)) != len(self.layers) or len(set(self.positions)) != len(self.positions):
            raise ValueError(f"layers {self.layers} and positions {self.positions} must not repeat")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} is not valid; choose one of {MODES}")
        shape = tuple(self.vectors.shape[:2])
        if shape not in ((1, 1), (len(self.layers), len(self.positions))):
            raise ValueError(
                f"vectors of shape {tuple(self.vectors.shape)} do not fit {len(self.layers)} layers x "
                f"{len(self.positions)} positions: expected [{len(self.layers)}, {len(self.positions)}, d_model] "
                "or [1, 1, d_model] (shared)"
            )

    @classmethod
    def single(cls, vector: Float[Tensor, " d_model"], layer: int, position: int = -1, **kw) -> Injection:
        return cls(vector[None, None], (layer,), (position,), **kw)

    @property
    def shared(self) -> bool:
        return self.vectors.shape[:2] == (1, 1) and len(self.layers) * len(self.positions) > 1

    def vector_at(self, i: int) -> Float[Tensor, "n_positions d_model"]:
        v = self.vectors[0 if self.vectors.shape[0] == 1 else i]
        return v.expand(len(self.positions), -1)

    def check(self, model) -> None:
        ad = adapt(model)
        if self.vectors.shape[-1] != ad.d_model:
            raise ValueError(f"vector size {self.vectors.shape[-1]} does not match the model's d_model {ad.d_model}")
        for layer in self.layers:
            ad.hook_name(layer, self.point)

    def hooks(self, model, query_pos: Int[Tensor, " batch"] | int | None = None) -> list[tuple[str, HookFn]]:
        """Forward hooks for ``run_with_hooks`` / ``model.hooks``."""
        self.check(model)
        ad = adapt(model)
        return [(ad.hook_name(layer, self.point), self._hook(i, query_pos)) for i, layer in enumerate(self.layers)]

    def _hook(self, i: int, query_pos: Tensor | int | None) -> HookFn:
        def hook(x: Tensor, hook=None) -> Tensor:
            batch, seq = x.shape[:2]
            if query_pos is None:
                q = torch.full((batch,), seq - 1, device=x.device)
            elif isinstance(query_pos, int):
                q = torch.full((batch,), query_pos, device=x.device)
            else:
                q = query_pos.to(x.device)
            if seq == 1 and bool((q > 0).any()):
                return x  # an incremental decoding step: the injected positions are already in the cache
            idx = resolve_positions(self.positions, q, seq)
            rows = torch.arange(batch, device=x.device)[:, None].expand_as(idx)
            v = self.vector_at(i).to(device=x.device, dtype=x.dtype)[None].expand(batch, -1, -1)
            return x.index_put((rows.reshape(-1), idx.reshape(-1)), v.reshape(-1, x.shape[-1]),
                               accumulate=self.mode == "add")

        return hook

    def hooks_for(self, model):
        """A ``Batch -> hooks`` function for :func:`tvmech.analysis.evaluation` (uses each batch's query positions)."""
        return lambda batch: self.hooks(model, batch.query_pos)

    @contextlib.contextmanager
    def apply(self, model, query_pos: Tensor | int | None = None) -> Iterator[None]:
        """Context manager: every forward pass inside it carries the injection."""
        with adapt(model).hooks(self.hooks(model, query_pos)):
            yield

