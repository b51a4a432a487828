"""The fast lane of the training loop: a method's loss as a forward pass plus the positions its writes land on
(:class:`LabelLoss`), run on the rows the loop prepares (:class:`Rows`).

From the positions, for each split (training, validation) once: ``cut``, the first position any row's writes land
on, and whether each row's positions are distinct. Positions ``< cut`` of every block equal the clean run's
(causal attention), so their keys and values are computed once, without gradients (:func:`frozen_prefix`), and a
pass runs positions ``cut..`` alone, each attention reading ``[prefix | new]`` (:mod:`tvmech.core.layers`): the same
numbers to float rounding, ``cut / width`` less work. Distinct positions let the writes skip their range checks
(:attr:`~tvmech.interventions.sites.Context.checked`: no value reads). With static shapes (``TrainData.static``,
set by :func:`~tvmech.methods.training.fit` for a CUDA graph) every row keeps the full width and the logits are
taken at ``max_labels`` label slots per row (:func:`label_nll`), so a step reads nothing back to the host.

The loss is the label NLL, ``ℓ(i) = -(1/|y_i|) Σ_t log p(y_{i,t} | x_i, y_{i,<t})``, at the label positions only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.adapter import Adapter
from tvmech.core.layers import PrefixKV
from tvmech.data.prompts import Batch
from tvmech.interventions.engine import Intervention, run_blocks
from tvmech.interventions.sites import Context, Position, distinct_per_row, resolve_positions
from tvmech.methods.training.train_data import TrainData, take_rows


@dataclass
class Rows:
    """A batch of rows as the loop hands it to a method's forward pass (:class:`LabelLoss`).

    ``resid``: the residual stream entering block ``start`` at positions ``ctx.offset..`` (the frozen prefix's
    ``cut``; 0 without one), ``copies`` copies of the rows (copy ``g``: rows ``g*n .. (g+1)*n - 1``); ``batch``: the
    same rows' tokens, query positions, targets and roles, at every position; ``ctx``: what the writes need
    (:meth:`Context.of` the batch, ``offset`` the cut, ``checked`` where each row's written positions are known
    distinct and inside the prompt); ``prefix``: the frozen keys and values of positions ``0..cut-1``, or ``None``.
    """

    model: Adapter
    resid: Float[Tensor, "rows pos d_model"]
    batch: Batch
    start: int
    ctx: Context
    prefix: PrefixKV | None = None

    def run(self, intervention: Intervention | None = None, resid: Tensor | None = None
            ) -> Float[Tensor, "rows pos d_model"]:
        """The final residual stream (before the final norm) of blocks ``start..`` run on ``resid`` (default: the rows'
        own) after the frozen prefix, with ``intervention`` attached (the fast path where it can be taken)."""
        return run_blocks(self.model, self.resid if resid is None else resid, self.start, intervention=intervention,
                          ctx=self.ctx, prefix=self.prefix)


Forward = Callable[[Rows], Float[Tensor, "rows pos d_model"]]


@dataclass
class LabelLoss:
    """Each row's label NLL after a method's forward pass: the loss of every method here, run in the fast lane.

    ``forward(rows)`` returns the final residual stream at the rows' positions (``[G*n, pos, d_model]``, group ``g``
    at rows ``g*n ..``: ``copies`` copies of the batch, or one copy that the forward itself forks into ``G``).
    ``positions``: where its writes land (negative: from each row's query; a string: a role), or ``None`` where they
    reach every position (nothing is frozen). ``prepended``: positions the forward puts before the rows' own (prompt
    tuning's virtual tokens), first in its output, without labels. Called as a :data:`RowLoss`
    (``(data, idx) -> [G, n]``).
    """

    model: Adapter
    forward: Forward
    copies: int = 1
    positions: tuple[Position, ...] | None = None
    prepended: int = 0

    def lane(self, data: TrainData) -> tuple[int, bool]:
        """``(cut, distinct)`` of a split: the first position any row's writes land on, and whether each row's
        positions are distinct (then :attr:`Context.checked`: no value reads, static shapes); read once per split
        and positions (kept on ``data``)."""
        if self.positions is None:
            return 0, False
        if self.positions not in data.lanes:
            b = data.batch
            idx = resolve_positions(self.positions, b.query_pos, data.resid.shape[1], b.roles)
            data.lanes[self.positions] = (int(idx.min()), distinct_per_row(idx))
        return data.lanes[self.positions]

    def graphable(self, data: TrainData) -> bool:
        """Whether a step on ``data`` may be captured in a CUDA graph: static shapes (no written positions, or
        distinct ones in every row) and no weights offloaded (copied in at every call)."""
        return (self.positions is None or self.lane(data)[1]) and not self.model.offloaded

    def __call__(self, data: TrainData, idx: Int[Tensor, " n"]) -> Float[Tensor, "n_groups n"]:
        cut, checked = self.lane(data)
        prefix = frozen_prefix(self.model, data, cut) if checked else None
        cut = 0 if prefix is None else cut
        resid, batch = take_rows(data, idx, self.copies)
        rows = Rows(self.model, resid[:, cut:], batch, data.start, Context.of(batch, offset=cut, checked=checked),
                    None if prefix is None else prefix.rows(idx))
        final = self.forward(rows)
        targets = batch.targets[:, cut:]
        if self.prepended:  # the forward's own positions come first, without labels
            targets = F.pad(targets, (self.prepended, 0), value=-100)
        if final.shape[0] != len(targets):  # a forward that forks one copy into every group's
            targets = targets.repeat(final.shape[0] // len(targets), 1)
        return label_nll(self.model, final, targets, slots=data.max_labels if data.static else None).view(-1, len(idx))


def row_nll(ad: Adapter, resid: Float[Tensor, "batch pos d_model"], batch: Batch, start: int,
            intervention: Intervention | None = None) -> Float[Tensor, " batch"]:
    """Each row's NLL of its label tokens, averaged over the row's label tokens: blocks ``start..`` run on ``resid``
    (their input) with ``intervention`` attached (its positions relative to ``batch.query_pos``, or its roles); logits
    at the label positions only. The plain pass (no frozen prefix, no static slots) that :class:`LabelLoss` speeds up.
    """
    return label_nll(ad, Rows(ad, resid, batch, start, Context.of(batch)).run(intervention), batch.targets)


def label_nll(ad: Adapter, final: Float[Tensor, "batch pos d_model"], targets: Int[Tensor, "batch pos"], *,
              slots: int | None = None) -> Float[Tensor, " batch"]:
    """Each row's NLL of its label tokens (``targets``: the label token each position predicts, -100 elsewhere)
    from the final residual stream ``final`` (see :func:`row_nll`).

    Args:
        slots: logits at this many positions per row (at least the most label tokens of any row), found without
            reading values (static shapes); ``None``: exactly at the label positions (a data-dependent shape).
    """
    targets = targets.to(final.device)  # (a model split over devices ends on its last layer's)
    mask = targets != -100
    if slots is None:
        nll = F.cross_entropy(ad.unembed(final[mask]).float(), targets[mask], reduction="none")
        row_of = mask.nonzero()[:, 0]
        return torch.zeros(len(targets), device=nll.device).index_add(0, row_of, nll) / mask.sum(1)
    # each row's label positions first, in order (a stable sort of "is not a label"), then padding slots
    pos = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :slots]
    states = final.gather(1, pos[..., None].expand(-1, -1, final.shape[-1]))
    nll = F.cross_entropy(ad.unembed(states).float().flatten(0, 1), targets.gather(1, pos).flatten(),
                          reduction="none", ignore_index=-100).view(len(targets), slots)
    return nll.sum(1) / mask.sum(1)


def frozen_prefix(ad: Adapter, data: TrainData, cut: int) -> PrefixKV | None:
    """The keys and values of positions ``0..cut-1`` of ``data``'s clean run from block ``data.start`` (computed
    once per ``cut`` and kept on ``data``), or ``None`` where they cannot serve: ``cut < 1``, the fast path not
    taken now (:meth:`Adapter.fast`), or every row shorter than ``cut + 1``."""
    if cut < 1 or not ad.fast() or cut >= data.resid.shape[1]:
        return None
    if data.prefixes.get(cut) is None:
        data.prefixes[cut] = ad.prefix_kv(data.resid, data.start, cut)
    return data.prefixes[cut]


__all__ = ["Rows", "Forward", "LabelLoss", "row_nll", "label_nll", "frozen_prefix"]
