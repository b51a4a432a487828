"""Where an intervention acts: a block, a point inside it, and token positions.

Points (TransformerLens hook names, relative to ``blocks.{l}``):

* ``resid_pre``  (``hook_resid_pre``)  the residual stream entering block ``l``, ``[batch, pos, d_model]``;
* ``resid_post`` (``hook_resid_post``) the residual stream leaving block ``l``;
* ``attn_out``   (``hook_attn_out``)   the attention output of block ``l``, before it joins the residual
  stream, so the block's own MLP sees what is written there;
* ``mlp_out``    (``hook_mlp_out``)    the MLP output of block ``l``;
* ``z``          (``attn.hook_z``)     every head's attention-weighted values, ``[batch, pos, n_heads, d_head]``.

Positions. A negative position counts back from each row's own query token (``-1`` is the query token,
``-2`` the token before it), so it is robust to right padding when the batch's query positions are given;
a non-negative position is an absolute token index. Without query positions, the last token of the
tensor is the query token (right for unpadded prompts).

Offsets. During KV-cache decoding a forward pass sees only the new tokens; the :class:`Context` says which
absolute position the first of them has, and a write whose target lies outside the tensor is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Int
from torch import Tensor

from tvmech.core.checks import as_int, as_ints

Point = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "z"]
POINTS: tuple[str, ...] = get_args(Point)
RESIDUAL_POINTS: tuple[str, ...] = ("resid_pre", "resid_post", "attn_out", "mlp_out")
Mode = Literal["add", "replace"]
MODES: tuple[str, ...] = get_args(Mode)


def check_point(point: str, valid: Sequence[str] = POINTS) -> str:
    """``point`` if it is one of ``valid``; a clear error otherwise."""
    if point not in valid:
        raise ValueError(f"hook point {point!r} is not supported here; valid: {', '.join(valid)}")
    return point


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not valid; choose one of {MODES}")
    return mode


@dataclass
class Context:
    """What a write needs to know about the batch it acts on.

    ``query_pos``: each row's query index (``None``: the last token of the tensor; an int: the same
    index for every row). ``offset``: the absolute position of the tensor's first token (0, except in
    KV-cache decoding steps).
    """

    query_pos: Tensor | int | None = None
    offset: int = 0
    # True: every position is known to lie inside its prompt (checked once, before a training loop) and at or
    # after the offset, so writes skip the range check and the filtering, which read values (device syncs)
    # and make shapes data-dependent (no CUDA graph)
    checked: bool = False

    def __post_init__(self) -> None:
        if self.query_pos is not None and not (isinstance(self.query_pos, Tensor) and self.query_pos.ndim):
            self.query_pos = as_int(self.query_pos, "query position")
        self.offset = as_int(self.offset, "offset")

    def queries(self, batch: int, seq: int, device: torch.device) -> Int[Tensor, " batch"]:
        if self.query_pos is None:
            return torch.full((batch,), self.offset + seq - 1, device=device)
        if isinstance(self.query_pos, int):
            return torch.full((batch,), self.query_pos, device=device)
        q = self.query_pos.to(device)
        if q.shape != (batch,):
            raise ValueError(f"query positions of shape {tuple(q.shape)} do not fit a batch of {batch} rows")
        return q


def resolve_positions(positions: Sequence[int], query_pos: Int[Tensor, " batch"], seq_len: int
                      ) -> Int[Tensor, "batch n_pos"]:
    """Absolute token index of every (row, position): ``q + 1 + p`` for ``p < 0``, ``p`` otherwise.

    Args:
        positions: site positions (negative: relative to the query token): one integer or a sequence.
        query_pos: each row's query index.
        seq_len: length of the sequence (unused in the check, kept for the message).

    Returns:
        ``[batch, n_pos]`` absolute indices; raises when one lies before the prompt or after its query.
    """
    positions = as_ints(positions, "position")
    idx = _absolute(positions, query_pos)
    bad = (idx < 0) | (idx > query_pos[:, None])
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"position {positions[col]} is out of range for prompt {row}, whose query token is at index "
            f"{int(query_pos[row])}: valid positions are -{int(query_pos[row]) + 1}..-1 or 0..{int(query_pos[row])}"
        )
    return idx


def _absolute(positions: tuple[int, ...], query_pos: Int[Tensor, " batch"]) -> Int[Tensor, "batch n_pos"]:
    # arithmetic with Python scalars only: no host-to-device copy (allowed inside a CUDA-graph capture)
    q = query_pos.long()
    return torch.stack([q + (1 + p) if p < 0 else torch.full_like(q, p) for p in positions], dim=1)


def local_targets(positions: Sequence[int], ctx: Context, rows: Int[Tensor, " n"], batch: int, seq: int,
                  device: torch.device) -> tuple[Int[Tensor, " m"], Int[Tensor, " m"], Int[Tensor, " m"]]:
    """The (row, column) pairs of a tensor of ``seq`` tokens that ``positions`` name for ``rows``, with
    each pair's index into the flattened ``[len(rows), len(positions)]`` grid (to pick its value).

    Targets outside the tensor (tokens already in a KV cache) are dropped.

    Args:
        positions: site positions (one integer or a sequence; see :func:`resolve_positions`).
        ctx: the batch's query positions and offset.
        rows: the rows of the batch that the write covers.
        batch, seq: the tensor's batch size and length.
        device: where the index tensors are made.

    Returns:
        ``(rows, columns, flat grid indices)`` of the targets inside the tensor.
    """
    q = ctx.queries(batch, seq, device)[rows]
    if ctx.checked:  # static shapes, no value read (see Context.checked)
        idx = _absolute(as_ints(positions, "position"), q) - ctx.offset
        return rows[:, None].expand_as(idx).flatten(), idx.flatten(), torch.arange(idx.numel(), device=device)
    idx = resolve_positions(positions, q, seq) - ctx.offset
    r = rows[:, None].expand_as(idx)
    keep = (idx >= 0) & (idx < seq)
    flat = torch.arange(idx.numel(), device=device).view_as(idx)
    return r[keep], idx[keep], flat[keep]


__all__ = ["Point", "POINTS", "RESIDUAL_POINTS", "Mode", "MODES", "Context", "check_point", "check_mode",
           "resolve_positions", "local_targets"]
