"""Training data: a split's prompts tokenized once, with the residual stream entering the first trained block
computed once without gradients (:class:`TrainData`); batches of its rows (:func:`take_rows`); the seeded batch
order (:class:`BatchOrder`); the query's residual norm, the unit of a scale-aware learning rate (:func:`query_norm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.adapter import Adapter
from tvmech.core.layers import PrefixKV
from tvmech.data.prompts import Batch, encode, make_prompts
from tvmech.data.tasks import Example, Task


@dataclass
class TrainData:
    """Prompts of one split, tokenized and right-padded, with the residual stream entering block
    ``start`` (computed once, without gradients)."""

    resid: Float[Tensor, "n pos d_model"]
    batch: Batch
    start: int
    max_labels: int = 0  # the most label tokens of any row
    static: bool = False  # take_rows keeps the full width; row_nll gathers max_labels slots (no host reads)
    prefixes: dict[int, PrefixKV] = field(default_factory=dict, repr=False)  # frozen_prefix, per cut
    lanes: dict[tuple, tuple[int, bool]] = field(default_factory=dict, repr=False)  # LabelLoss.lane, per positions
    norms: dict[int, float] = field(default_factory=dict, repr=False)  # query_norms, per layer

    def __post_init__(self) -> None:
        if not self.max_labels:
            self.max_labels = int(self.batch.label_mask.sum(1).max())


def prepare_data(ad: Adapter, task: Task, examples: Sequence[Example], start: int, *,
                 first_token_only: bool = False, k: int = 0, demos: Sequence[Example] = (),
                 seed: int = 0) -> TrainData:
    """Prompts of ``examples`` with their labels (teacher forcing) and the frozen residual at ``start``.

    Args:
        ad: the model's adapter.
        task: the task (template, label tokenization).
        examples: the split's examples; must not be empty.
        start: the lowest block whose input any trained parameter changes.
        first_token_only: target only the first label token of each row.
        k: demonstrations per prompt (0: zero-shot), drawn from ``demos`` with ``seed``.

    Returns:
        The :class:`TrainData`.
    """
    if not examples:
        raise ValueError(f"task {task.name!r}: the training split is empty")
    prompts = make_prompts(task, examples, k, demos, seed=seed)
    batch = encode(ad.tokenizer, task, prompts, with_labels=True).to(ad.device)
    if first_token_only:
        keep = torch.zeros_like(batch.targets, dtype=torch.bool)
        keep[torch.arange(len(batch)), batch.query_pos] = True
        batch.targets = torch.where(keep, batch.targets, -100)
    with torch.no_grad():
        resid = ad.residual(batch.tokens, start)
    return TrainData(resid, batch, start)  # max_labels: computed by TrainData


def take_rows(data: TrainData, idx: Int[Tensor, " n"], copies: int = 1
              ) -> tuple[Float[Tensor, "copies*n pos d_model"], Batch]:
    """Rows ``idx`` of ``data`` (cut to their longest row unless ``data.static``), the selection repeated ``copies``
    times: rows ``g*n .. (g+1)*n - 1`` are group ``g``'s copy.

    Returns:
        The residual stream at ``data.start`` and the matching :class:`Batch`.
    """
    width = data.resid.shape[1] if data.static else int(data.batch.lengths[idx].max())
    rep = idx.repeat(copies)
    b = data.batch
    roles = None if b.roles is None else {k: v[rep] for k, v in b.roles.items()}
    sub = Batch(b.tokens[rep, :width], b.query_pos[rep], b.label_first[rep], b.targets[rep, :width], b.lengths[rep],
                roles)
    return data.resid[rep, :width], sub


def query_norm(ad: Adapter, data: TrainData, layer: int) -> float:
    """Mean over rows of ``‖h_layer[q]‖``, the residual norm entering block ``layer`` at the query
    (``layer >= data.start``): the unit of a scale-aware learning rate."""
    return query_norms(ad, data, [layer])[layer]


def query_norms(ad: Adapter, data: TrainData, layers: Sequence[int]) -> dict[int, float]:
    """:func:`query_norm` at each of ``layers``, from one pass through the blocks (kept on ``data``)."""
    rows = torch.arange(len(data.batch), device=data.resid.device)
    missing = sorted({int(layer) for layer in layers} - set(data.norms))
    with torch.no_grad():
        h, at = data.resid, data.start
        for layer in missing:
            if layer < data.start:
                raise ValueError(f"layer {layer} lies below the data's first block {data.start}")
            h, at = ad.run_blocks(h, at, layer), layer
            data.norms[layer] = float(h[rows, data.batch.query_pos].norm(dim=-1).mean())
    return {int(layer): data.norms[int(layer)] for layer in layers}


class BatchOrder:
    """Seeded batches of row indices: a permutation of ``n`` rows walked ``batch_size`` at a time, a new
    permutation (same generator) when fewer than ``batch_size`` rows are left."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        if n < 1 or batch_size < 1:
            raise ValueError(f"a batch order needs n >= 1 rows and batch_size >= 1, got {n} and {batch_size}")
        self.n, self.size, self.gen = n, min(batch_size, n), generator
        self.order, self.cursor = torch.randperm(n, generator=generator), 0

    def next(self) -> Int[Tensor, " batch_size"]:
        """The next batch's row indices."""
        if self.cursor + self.size > self.n:
            self.order, self.cursor = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.cursor : self.cursor + self.size]
        self.cursor += self.size
        return idx


__all__ = ["TrainData", "prepare_data", "take_rows", "query_norm", "query_norms", "BatchOrder"]
