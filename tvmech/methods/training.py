"""The one training loop behind every trained method: LTV (one run or a batched layer sweep), prompt
tuning with one virtual token, and rank-1 LoRA.

The model is frozen. A method supplies an :class:`Objective`: groups of trainable leaves and the
per-row loss of a batch of training prompts. With ``G`` groups (one per layer of a sweep, else one),
the loss minimised at a step is

    L = Σ_g L_g,    L_g = (1/B) Σ_{i ∈ batch} ℓ_g(i),    ℓ_g(i) = -(1/|y_i|) Σ_t log p(y_{i,t} | x_i, y_{i,<t} ; θ_g)

(the label NLL averaged over each row's label tokens, then over the batch's rows); the groups share no
parameters, so one backward pass of ``L`` gives every group its own gradient. AdamW steps every group
(``torch.optim.AdamW``; in a CUDA-graphed step :class:`~tvmech.core.optim.GraphAdamW`, the same arithmetic).

What is shared here, so that each method only describes its parameters and its forward pass:

* data: :func:`prepare_data` tokenizes the prompts once and runs the frozen blocks below ``start``
  once, without gradients (:class:`TrainData`); :func:`take_rows` picks a batch of it (replicated once
  per group);
* the batch order: :class:`BatchOrder`, a seeded permutation of the training rows walked ``B`` at a
  time and redrawn when fewer than ``B`` are left (the same order for every method with one seed);
* divergence: a step whose loss (or whose parameters) is NaN or inf raises :class:`TrainingDiverged`
  carrying the values at the last step whose loss was finite (taken before that step's update, which
  may be the one that broke them);
* validation: every ``eval_every`` steps (and after the last step) each group's validation loss is
  computed; each group keeps the values of its best validation loss, and training stops early when
  every group has gone ``patience`` evaluations without improving;
* the loss curve (``step``, ``loss`` = mean over groups, ``val_loss`` where evaluated) and the wall time
  of every step (CUDA synchronised).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.adapter import Adapter
from tvmech.core.fast import cuda_graphs_enabled
from tvmech.core.layers import PrefixKV
from tvmech.core.optim import GraphAdamW, Stepper
from tvmech.core.progress import tqdm
from tvmech.data.prompts import Batch, encode, make_prompts
from tvmech.data.tasks import Example, Task
from tvmech.interventions.engine import Intervention, attached
from tvmech.interventions.sites import Context

RowLoss = Callable[["TrainData", Int[Tensor, " n"]], Float[Tensor, "n_groups n"]]


class TrainingDiverged(RuntimeError):
    """The loss (or a parameter) became NaN or inf; ``last_good`` holds the values at the last step
    whose loss was finite, before its update (for LTV: one
    :class:`~tvmech.interventions.task_vector.TaskVector` per group)."""

    def __init__(self, message: str, last_good: list[Any]):
        super().__init__(message)
        self.last_good = last_good


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


def row_nll(ad: Adapter, resid: Float[Tensor, "batch pos d_model"], batch: Batch, start: int,
            intervention: Intervention | None = None, *, slots: int | None = None, checked: bool = False,
            prefix: PrefixKV | None = None) -> Float[Tensor, " batch"]:
    """Each row's NLL of its label tokens, averaged over the row's label tokens.

    Args:
        resid: the residual stream entering block ``start``.
        batch: its tokens' targets and query positions.
        start: the first block to run (blocks ``start ..`` run with ``intervention`` attached).
        intervention: written into the pass (its positions relative to ``batch.query_pos``, or its roles).
        slots: logits at this many positions per row (at least the most label tokens of any row), found without
            reading values (static shapes); ``None``: exactly at the label positions (a data-dependent shape).
        checked: the intervention's positions are known to be valid (:attr:`Context.checked`).
        prefix: the frozen keys and values of positions ``0..prefix.cut-1`` (:meth:`Adapter.prefix_kv`, these
            rows): only positions ``prefix.cut..`` run (the intervention must write nothing before them).

    Returns:
        ``[batch]`` losses; logits are computed at the label positions only.
    """
    cut = 0 if prefix is None else prefix.cut
    with attached(ad, intervention, Context.of(batch, offset=cut, checked=checked)):
        final = ad.run_blocks(resid[:, cut:], start, prefix=prefix)
    return label_nll(ad, final, batch.targets[:, cut:], slots=slots)


def label_nll(ad: Adapter, final: Float[Tensor, "batch pos d_model"], targets: Int[Tensor, "batch pos"], *,
              slots: int | None = None) -> Float[Tensor, " batch"]:
    """Each row's NLL of its label tokens (``targets``: the label token each position predicts, -100 elsewhere)
    from the final residual stream ``final`` (see :func:`row_nll`)."""
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


@dataclass
class Objective:
    """What a method trains.

    ``groups[g]``: group ``g``'s trainable leaves, stepped with learning rate ``lrs[g]`` and decoupled
    weight decay ``weight_decays[g]``. ``row_loss(data, idx)``: ``[G, len(idx)]`` per-row losses of
    every group. ``values()``: detached copies of each group's current values (what is kept as best or
    last good), e.g. a task vector or ``{"a": ..., "b": ...}``. ``names[g]``: how messages name group ``g``.
    """

    groups: list[list[Tensor]]
    lrs: list[float]
    weight_decays: list[float]
    row_loss: RowLoss
    values: Callable[[], list[Any]]
    names: list[str] = field(default_factory=list)
    # row_loss keeps static shapes (no host reads) when given TrainData with static=True: CUDA-graph safe
    graphable: bool = False

    def __post_init__(self) -> None:
        if not self.groups or not len(self.groups) == len(self.lrs) == len(self.weight_decays):
            raise ValueError(f"an objective needs one lr and one weight decay per group: {len(self.groups)} groups, "
                             f"{len(self.lrs)} lrs, {len(self.weight_decays)} weight decays")
        bad = [lr for lr in self.lrs if not lr > 0]
        if bad:
            raise ValueError(f"learning rates must be positive, got {bad}")
        self.names = self.names or [f"group {g}" for g in range(len(self.groups))]

    def mean_loss(self, data: TrainData, batch_size: int | None = None) -> Float[Tensor, " n_groups"]:
        """Each group's mean row loss over all of ``data``, without gradients, in chunks of
        ``batch_size`` rows (``None``: one pass)."""
        n = len(data.batch)
        idx = torch.arange(n, device=data.resid.device)
        with torch.no_grad():
            if batch_size is None:
                return self.row_loss(data, idx).mean(1)
            total = sum(self.row_loss(data, idx[s : s + batch_size]).sum(1) for s in range(0, n, batch_size))
        return total / n


@dataclass
class Fit:
    """A finished run: each group's kept values (``best``: lowest validation loss, or the final values
    without validation), ``final`` values, ``best_val`` (inf without validation), the loss ``curve``
    and the wall time of each step."""

    best: list[Any]
    final: list[Any]
    best_val: list[float]
    curve: list[dict[str, float]]
    step_times_s: list[float]
    stopped_early: bool
    capture_s: float = 0.0  # time spent capturing the CUDA graph (0 without one)

    @property
    def steps_run(self) -> int:
        return len(self.curve)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit(objective: Objective, data: TrainData, *, steps: int, batch_size: int, generator: torch.Generator,
        val: TrainData | None = None, eval_every: int | None = None, patience: int | None = None,
        eval_batch_size: int | None = None, desc: str = "training", progress: bool = False,
        on_diverge: Callable[[list[Any]], list[Any]] | None = None) -> Fit:
    """Train ``objective`` on ``data`` with AdamW (see the module docstring).

    Args:
        steps: the most steps to take (>= 1).
        batch_size: rows per step (at most all of ``data``).
        generator: draws the batch order (after whatever the objective's initialisation drew from it).
        val: validation data; without it nothing is evaluated and the final values are kept.
        eval_every: evaluate every this many steps (and after the last); ``None``: after the last only.
        patience: stop once every group has gone this many evaluations (>= 1) without improving.
        eval_batch_size: rows per validation pass (``None``: all at once).
        desc, progress: the progress bar.
        on_diverge: turns the last good values into what :class:`TrainingDiverged` carries.

    Returns:
        The :class:`Fit`.
    """
    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
        raise ValueError(f"eval_every must be an integer >= 1 or None, got {eval_every!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be an integer >= 1 or None, got {patience!r}")
    device = data.resid.device
    G = len(objective.groups)
    leaves = [p for ps in objective.groups for p in ps]
    graph = device.type == "cuda" and objective.graphable and cuda_graphs_enabled()
    groups = [{"params": list(ps), "lr": lr, "weight_decay": wd}
              for ps, lr, wd in zip(objective.groups, objective.lrs, objective.weight_decays)]
    # a graphed step needs an optimizer without host-side state; GraphAdamW's arithmetic is the default AdamW's
    opt = GraphAdamW(groups, max_steps=steps) if graph else torch.optim.AdamW(groups)
    order = BatchOrder(len(data.batch), batch_size, generator)
    static = replace(data, static=True) if graph else data
    stepper = Stepper(lambda idx: objective.row_loss(static, idx).mean(1), leaves, opt, device, graph=graph)
    initial = objective.values()
    best = list(initial)
    best_val, stale = [math.inf] * G, [0] * G
    losses = torch.zeros(steps, G, device=device)
    val_at: dict[int, float] = {}
    timer = _Timer(device)
    # on the CPU a read is free: check every step; on CUDA, at evaluations and every CHECK_EVERY steps
    every = check_every(device)
    stopped, run = False, 0
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        idx = order.next().to(device, non_blocking=True)
        timer.start()
        losses[step] = stepper(idx)
        timer.stop()
        run = step + 1
        evaluate = val is not None and ((eval_every is not None and run % eval_every == 0) or run == steps)
        if evaluate or run % every == 0 or run == steps:
            _raise_if_diverged(stepper, losses, objective, desc, on_diverge, initial)
            bar.set_postfix(loss=f"{float(losses[step].mean()):.3f}")
        if evaluate:
            vl = objective.mean_loss(val, eval_batch_size)
            val_at[step] = float(vl.mean())
            now = objective.values()
            for g in range(G):
                if vl[g] < best_val[g]:
                    best_val[g], best[g], stale[g] = float(vl[g]), now[g], 0
                else:
                    stale[g] += 1
            if patience is not None and all(s >= patience for s in stale):
                stopped = True
                break
    final = objective.values()
    curve = [{"step": i, "loss": loss} for i, loss in enumerate(losses[:run].mean(1).tolist())]
    for i, v in val_at.items():
        curve[i]["val_loss"] = v
    return Fit(final if val is None else best, final, best_val, curve, timer.times(), stopped, stepper.capture_s)


CHECK_EVERY = 25  # steps between divergence checks on CUDA (each is a host sync)


def check_every(device: torch.device) -> int:
    """Steps between reads of a training loop's losses back to the host: every step on the CPU (a read is free),
    every ``CHECK_EVERY`` on an accelerator (each read is a host sync that stalls the queue of kernels)."""
    return 1 if device.type == "cpu" else CHECK_EVERY


def _raise_if_diverged(stepper: Stepper, losses: Tensor, objective: Objective, desc: str,
                       on_diverge: Callable[[list[Any]], list[Any]] | None, initial: list[Any]) -> None:
    bad = stepper.first_bad()
    if bad is None:
        return
    row = losses[bad]
    names = [objective.names[g] for g in range(len(row)) if not torch.isfinite(row[g])] or ["a parameter"]
    last_good = initial if bad == 0 else stepper.good_values(objective.values)
    raise TrainingDiverged(f"{desc}: loss became {row.tolist()} at step {bad} ({', '.join(names)}); "
                           "the last good values are in .last_good (try a lower lr)",
                           on_diverge(last_good) if on_diverge else last_good)


class _Timer:
    """Wall time of each step: ``perf_counter`` around it on the CPU, CUDA events on a GPU (read at the end,
    so timing adds no sync)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def start(self) -> None:
        self.marks.append([self._mark(), None])

    def stop(self) -> None:
        self.marks[-1][1] = self._mark()

    def _mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def times(self) -> list[float]:
        if not self.cuda:
            return [b - a for a, b in self.marks]
        torch.cuda.synchronize()
        return [a.elapsed_time(b) / 1000 for a, b in self.marks]


__all__ = ["RowLoss", "TrainingDiverged", "TrainData", "prepare_data", "take_rows", "row_nll", "label_nll",
           "frozen_prefix", "query_norm", "query_norms", "BatchOrder", "Objective", "Fit", "fit"]
