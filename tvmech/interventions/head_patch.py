"""Per-head writes at ``attn.hook_z``: patching, zero ablation and mean ablation of attention heads.

``z[b, p, h]`` is head ``h``'s attention-weighted value at position ``p`` (``[d_head]``); the head's
output is ``z W_O[h]``, so setting ``z`` sets the head's output. :class:`HeadPatch` sets ``z[b, p, h]``
to 0 (``values=None``), to ``values[h]`` (``values`` of shape ``[n_heads, d_head]``: one value per head, the
same in every row, as in mean ablation) or to ``values[b, h]`` (``[rows, n_heads, d_head]``: one value per row
and head, e.g. each prompt's own clean ``z`` to revert a head to its output without θ; ``b`` counts from the
first row the patch covers, and every position of the row gets that value) for

* every head in ``heads``, in every row (``per_row=False``), or
* one head per row, ``heads[b]`` for row ``b`` (``per_row=True``): a batch replicated once per head
  patches every head of a layer in one pass.

``rows=(start, stop)`` restricts the patch to a slice of the batch (as :class:`~tvmech.interventions.injection.
Injection`'s ``rows``): several ablations of one batch, stacked along the batch axis, run in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.checks import as_int, as_ints
from tvmech.interventions.engine import Intervention, Write
from tvmech.interventions.sites import Context, local_targets


@dataclass
class HeadPatch(Intervention):
    """Set the query-position (or ``positions``) ``z`` of heads of block ``layer``.

    ``layer`` is one integer; ``heads`` and ``positions`` take one integer or a sequence of them (a 1-d
    integer tensor too). Python, numpy and 0-d tensor integers are accepted, ``bool`` is not.
    """

    layer: int
    heads: Sequence[int] | Tensor
    values: Float[Tensor, "n_heads d_head"] | Float[Tensor, "rows n_heads d_head"] | None = None
    """The ``z`` written for each head (per row with ``per_row``); ``None``: zero."""
    positions: tuple[int, ...] = (-1,)
    """Token positions (negative: relative to each row's query)."""
    per_row: bool = False
    """``values`` (and ``heads`` when 2-d) hold one entry per batch row."""
    rows: tuple[int, int] | None = None
    """``(start, stop)``: the batch rows patched (``None``: every row)."""

    def __post_init__(self) -> None:
        self.layer = as_int(self.layer, "layer")
        if isinstance(self.heads, Tensor) and self.heads.ndim == 1 and not self.heads.dtype.is_floating_point \
                and self.heads.dtype != torch.bool:
            self.heads = self.heads.long()  # per-row heads can be long: no round trip through Python
        else:
            self.heads = torch.tensor(as_ints(self.heads, "head"), dtype=torch.long)
        self.positions = as_ints(self.positions, "position")
        if self.heads.ndim != 1 or not len(self.heads):
            raise ValueError("HeadPatch needs at least one head")
        if self.rows is not None:
            self.rows = as_ints(self.rows, "row")
            if len(self.rows) != 2 or not 0 <= self.rows[0] < self.rows[1]:
                raise ValueError(f"rows {self.rows} is not a valid (start, stop) slice of the batch")

    def writes(self, model) -> list[Write]:
        from tvmech.core.adapter import adapt

        ad = adapt(model)
        ad.check_layer(self.layer)
        bad = [int(h) for h in self.heads if not 0 <= int(h) < ad.n_heads]
        if bad:
            raise ValueError(f"heads {bad} are out of range: valid heads are 0..{ad.n_heads - 1} (layer {self.layer})")
        if self.values is not None and (self.values.ndim not in (2, 3)
                                        or tuple(self.values.shape[-2:]) != (ad.n_heads, ad.d_head)):
            raise ValueError(f"head values must have shape {(ad.n_heads, ad.d_head)} (per head) or "
                             f"(rows, {ad.n_heads}, {ad.d_head}) (per row and head), got {tuple(self.values.shape)}")
        return [Write(self.layer, "z", self._edit)]

    def _edit(self, z: Tensor, ctx: Context) -> Tensor:
        batch, seq = z.shape[:2]
        start, stop = self.rows if self.rows is not None else (0, batch)
        if stop > batch:
            raise ValueError(f"rows {self.rows} do not fit a batch of {batch} rows")
        rows = torch.arange(start, stop, device=z.device)
        r, c, flat = local_targets(self.positions, ctx, rows, batch, seq, z.device)
        heads = self.heads.to(z.device)
        if self.per_row:
            if len(heads) != stop - start:
                raise ValueError(f"{len(heads)} per-row heads do not fit {stop - start} rows")
            h = heads[r - start]
        else:
            n = len(heads)
            r, c, h = r.repeat_interleave(n), c.repeat_interleave(n), heads.repeat(len(flat))
        if self.values is None:
            vals = torch.zeros(len(h), z.shape[-1], device=z.device, dtype=z.dtype)
        elif self.values.ndim == 2:
            vals = self.values.to(z.device, z.dtype)[h]
        else:
            if len(self.values) != stop - start:
                raise ValueError(f"per-row head values have {len(self.values)} rows; the patch covers {stop - start}")
            vals = self.values.to(z.device, z.dtype)[r - start, h]
        return z.index_put((r, c, h), vals)


__all__ = ["HeadPatch"]
