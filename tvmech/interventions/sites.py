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

Roles. A position may also name a token by its role in the prompt, resolved row by row (:data:`ROLES`):
``"query"`` (the query token, the same site as ``-1``), ``"input_first"`` (the first token of the query's
input: the first token whose character span overlaps the input text, so a token that merges the space
before the input with its first word counts) and ``"before_input"`` (the token before that one;
undefined, stored as -1, when the input starts the prompt). The batch records each row's absolute index of
each role (:class:`tvmech.data.prompts.Batch` ``roles``) and :meth:`Context.of` carries them to the writes;
like an absolute index, a role's index does not move with right padding.

Every position. ``"all"`` (:data:`ALL`, alone) names every token of each row, prompt and generated tokens alike
(in KV-cache decoding, each new token): what llama.cpp's control vectors and repeng do. Padding tokens are
written too (harmless after the query under right padding). It has no single index per row, so
:func:`resolve_positions` refuses it.

Offsets. During KV-cache decoding a forward pass sees only the new tokens; the :class:`Context` says which
absolute position the first of them has, and a write whose target lies outside the tensor is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Int
from torch import Tensor

from tvmech.core.checks import as_int

Point = Literal["resid_pre", "resid_post", "attn_out", "mlp_out", "z"]
Position = int | str  # a token index (negative: from the query) or a role name (ROLES)
ROLES: tuple[str, ...] = ("query", "input_first", "before_input")
ALL = "all"  # every position (alone)
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


def as_positions(positions: Any, what: str = "position") -> tuple[Position, ...]:
    """One position or a sequence of them as a tuple of Python ints and role names (:data:`ROLES`).

    Args:
        positions: an integer (Python, numpy or 0-d tensor; not ``bool``), a role name, or a sequence of them.
        what: how messages name one item.

    Returns:
        The positions, in order.

    Raises:
        ArgumentTypeError: an item that is neither an integer nor a string.
        ValueError: a string that is not a role (nor ``"all"``), naming the valid ones; ``"all"`` with others.
    """
    items = [positions] if isinstance(positions, str) else positions
    if getattr(items, "ndim", None) == 0 or not isinstance(items, Iterable):
        items = [items]
    out = tuple(p if isinstance(p, str) else as_int(p, what) for p in items)
    bad = [p for p in out if isinstance(p, str) and p not in (*ROLES, ALL)]
    if bad:
        raise ValueError(f"{what} {bad[0]!r} is not a role: valid roles are {', '.join(ROLES)} (or an integer index, "
                         f"or {ALL!r} alone for every position)")
    if ALL in out and len(out) > 1:
        raise ValueError(f"{what}s {out}: {ALL!r} (every position) already covers the others; give it alone")
    return out


def every_position(positions: Sequence[Position]) -> bool:
    """Whether ``positions`` is ``("all",)``: every token of each row."""
    return tuple(positions) == (ALL,)


def site_key(position: Position) -> Position:
    """The site a position names, up to spelling: ``"query"`` and ``-1`` are the same site."""
    return -1 if position == "query" else position


@dataclass
class Context:
    """What a write needs to know about the batch it acts on.

    ``query_pos``: each row's query index (``None``: the last token of the tensor; an int: the same
    index for every row). ``offset``: the absolute position of the tensor's first token (0, except in
    KV-cache decoding steps). ``roles``: role name -> each row's absolute index of that token
    (``[batch]``; -1 where the role is undefined), what role positions resolve to (:meth:`of` takes them from
    a batch).
    """

    query_pos: Tensor | int | None = None
    offset: int = 0
    checked: bool = False
    """``True``: every position is known to lie inside its prompt (checked once, before a training loop) and at
    or after the offset, so writes skip the range check and the filtering, which read values (device syncs) and
    make shapes data-dependent (no CUDA graph)."""
    roles: dict[str, Tensor] | None = None

    @classmethod
    def of(cls, batch: Any, **kw) -> Context:
        """The context of a :class:`~tvmech.data.prompts.Batch`: its query positions and role positions (``kw``:
        ``offset``, ``checked``)."""
        return cls(batch.query_pos, roles=getattr(batch, "roles", None), **kw)

    def role(self, name: str, batch: int, device: torch.device) -> Int[Tensor, " batch"]:
        """Each row's absolute index of role ``name`` (-1 where undefined); a clear error without role positions."""
        if self.roles is None or name not in self.roles:
            raise ValueError(f"position {name!r} names a role of the prompt, but this pass has no role positions: "
                             "give the batch's (Context.of(batch), or tvmech.evaluate's intervention=, which passes "
                             "them)")
        r = self.roles[name].to(device)
        if r.shape != (batch,):
            raise ValueError(f"role positions of shape {tuple(r.shape)} do not fit a batch of {batch} rows")
        return r

    def __post_init__(self) -> None:
        if self.query_pos is not None and not (isinstance(self.query_pos, Tensor) and self.query_pos.ndim):
            self.query_pos = as_int(self.query_pos, "query position")
        self.offset = as_int(self.offset, "offset")

    def queries(self, batch: int, seq: int, device: torch.device) -> Int[Tensor, " batch"]:
        """Each row's query index in a tensor of ``seq`` positions (``query_pos``, or the last token)."""
        if self.query_pos is None:
            return torch.full((batch,), self.offset + seq - 1, device=device)
        if isinstance(self.query_pos, int):
            return torch.full((batch,), self.query_pos, device=device)
        q = self.query_pos.to(device)
        if q.shape != (batch,):
            raise ValueError(f"query positions of shape {tuple(q.shape)} do not fit a batch of {batch} rows")
        return q


def resolve_positions(positions: Sequence[Position] | Position, query_pos: Int[Tensor, " batch"], seq_len: int,
                      roles: dict[str, Tensor] | None = None) -> Int[Tensor, "batch n_pos"]:
    """Absolute token index of every (row, position): ``q + 1 + p`` for ``p < 0``, ``p`` for ``p >= 0``, the
    row's own index of a role.

    Args:
        positions: site positions (negative: relative to the query token; a string: a role): one or a sequence.
        query_pos: each row's query index.
        seq_len: length of the sequence (unused in the check, kept for the message).
        roles: role name -> each row's index (:attr:`Context.roles`); needed for roles other than ``"query"``.

    Returns:
        ``[batch, n_pos]`` absolute indices; raises when one lies before the prompt or after its query, or a
        role is undefined for a row (e.g. ``"before_input"`` where the input starts the prompt).
    """
    positions = as_positions(positions)
    if every_position(positions):
        raise ValueError(f"position {ALL!r} names every token of a row, not one index per row; it is only valid for "
                         "writes (injections)")
    idx = _absolute(positions, query_pos, _roles(positions, roles, len(query_pos), query_pos.device))
    bad = (idx < 0) | (idx > query_pos[:, None])
    if bad.any():
        row, col = (int(i) for i in bad.nonzero()[0])
        p, q = positions[col], int(query_pos[row])
        if isinstance(p, str):
            raise ValueError(f"role {p!r} is undefined for prompt {row} (its index would be {int(idx[row, col])}; "
                             f"the query token is at {q}): e.g. 'before_input' where the input starts the prompt")
        raise ValueError(
            f"position {p} is out of range for prompt {row}, whose query token is at index "
            f"{q}: valid positions are -{q + 1}..-1 or 0..{q}"
        )
    return idx


def _roles(positions: tuple[Position, ...], roles: dict[str, Tensor] | None, batch: int, device: torch.device
           ) -> dict[str, Tensor]:
    """The row indices of the roles among ``positions`` other than ``"query"`` (see :meth:`Context.role`)."""
    ctx = Context(roles=roles)
    return {p: ctx.role(p, batch, device) for p in positions if isinstance(p, str) and p != "query"}


def _absolute(positions: tuple[Position, ...], query_pos: Int[Tensor, " batch"], roles: dict[str, Tensor]
              ) -> Int[Tensor, "batch n_pos"]:
    # arithmetic with Python scalars and indexing only: no host-to-device copy (allowed inside a CUDA-graph capture)
    q = query_pos.long()

    def column(p: Position) -> Tensor:
        if isinstance(p, str):
            return q if p == "query" else roles[p].long()
        return q + (1 + p) if p < 0 else torch.full_like(q, p)

    return torch.stack([column(p) for p in positions], dim=1)


def distinct_per_row(idx: Int[Tensor, "batch n_pos"]) -> bool:
    """Whether every row's resolved positions are distinct (then an ``add`` needs no accumulating scatter)."""
    if idx.shape[1] < 2:
        return True
    s = idx.sort(dim=1).values
    return bool((s[:, 1:] != s[:, :-1]).all())


def local_targets(positions: Sequence[Position], ctx: Context, rows: Int[Tensor, " n"], batch: int, seq: int,
                  device: torch.device) -> tuple[Int[Tensor, " m"], Int[Tensor, " m"], Int[Tensor, " m"]]:
    """The (row, column) pairs of a tensor of ``seq`` tokens that ``positions`` name for ``rows``, with
    each pair's index into the flattened ``[len(rows), len(positions)]`` grid (to pick its value).

    Targets outside the tensor (tokens already in a KV cache) are dropped.

    Args:
        positions: site positions (one or a sequence; see :func:`resolve_positions`).
        ctx: the batch's query positions, role positions and offset.
        rows: the rows of the batch that the write covers.
        batch, seq: the tensor's batch size and length.
        device: where the index tensors are made.

    Returns:
        ``(rows, columns, flat grid indices)`` of the targets inside the tensor.
    """
    positions = as_positions(positions)
    if every_position(positions):  # each row's every token in the tensor; grid value: the row's own
        n = len(rows)
        return (rows.repeat_interleave(seq), torch.arange(seq, device=device).repeat(n),
                torch.arange(n, device=device).repeat_interleave(seq))
    q = ctx.queries(batch, seq, device)[rows]
    roles = {p: ctx.role(p, batch, device)[rows] for p in positions if isinstance(p, str) and p != "query"}
    if ctx.checked:  # static shapes, no value read (see Context.checked)
        idx = _absolute(positions, q, roles) - ctx.offset
        return rows[:, None].expand_as(idx).flatten(), idx.flatten(), torch.arange(idx.numel(), device=device)
    idx = resolve_positions(positions, q, seq, roles) - ctx.offset
    r = rows[:, None].expand_as(idx)
    keep = (idx >= 0) & (idx < seq)
    flat = torch.arange(idx.numel(), device=device).view_as(idx)
    return r[keep], idx[keep], flat[keep]


__all__ = ["Point", "POINTS", "RESIDUAL_POINTS", "Mode", "MODES", "Position", "ROLES", "ALL", "Context", "check_point",
           "check_mode", "as_positions", "site_key", "every_position", "resolve_positions", "distinct_per_row",
           "local_targets"]
