"""The loop: AdamW on an :class:`Objective` over seeded batches, with device-side divergence checks, validation,
early stopping and the fast lane's CUDA graph (see :mod:`tvmech.methods.training`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.fast import cuda_graphs_enabled
from tvmech.core.optim import GraphAdamW, Stepper
from tvmech.core.progress import tqdm
from tvmech.methods.training.lane import LabelLoss
from tvmech.methods.training.train_data import BatchOrder, TrainData

RowLoss = Callable[[TrainData, Int[Tensor, " n"]], Float[Tensor, "n_groups n"]]


class TrainingDiverged(RuntimeError):
    """The loss (or a parameter) became NaN or inf; ``last_good`` holds the values at the last step
    whose loss was finite, before its update (for LTV: one
    :class:`~tvmech.interventions.task_vector.TaskVector` per group)."""

    def __init__(self, message: str, last_good: list[Any]):
        super().__init__(message)
        self.last_good = last_good


@dataclass
class Objective:
    """What a method trains.

    ``groups[g]``: group ``g``'s trainable leaves, stepped with learning rate ``lrs[g]`` and decoupled
    weight decay ``weight_decays[g]``. ``row_loss(data, idx)``: ``[G, len(idx)]`` per-row losses of
    every group (any function; a :class:`~tvmech.methods.training.lane.LabelLoss`, the loss of every method here,
    takes the fast lane). ``values()``: detached copies of each group's current values (what is kept as best or
    last good), e.g. a task vector or ``{"a": ..., "b": ...}``. ``names[g]``: how messages name group ``g``.
    """

    groups: list[list[Tensor]]
    lrs: list[float]
    weight_decays: list[float]
    row_loss: RowLoss
    values: Callable[[], list[Any]]
    names: list[str] = field(default_factory=list)

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


def fit(objective: Objective, data: TrainData, *, steps: int, batch_size: int, generator: torch.Generator,
        val: TrainData | None = None, eval_every: int | None = None, patience: int | None = None,
        eval_batch_size: int | None = None, desc: str = "training", progress: bool = True,
        on_diverge: Callable[[list[Any]], list[Any]] | None = None, schedule: Callable[[int], float] | None = None,
        val_score: Callable[[], Sequence[float]] | None = None) -> Fit:
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
        schedule: step ``t`` (from 0) uses each group's lr times ``schedule(t)`` (e.g. a linear decay to zero,
            ``lambda t: 1 - t / steps``; eagerly ``torch.optim.lr_scheduler.LambdaLR``, in a CUDA graph
            :class:`~tvmech.core.optim.GraphAdamW`'s tables); ``None``: constant.
        val_score: each group's validation score, lower is better (e.g. minus its validation accuracy), computed at
            each evaluation in place of the validation loss (what ``best``, ``best_val``, ``patience`` and the
            curve's ``val_loss`` then follow); ``None``: the mean label NLL on ``val``.

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
    loss = objective.row_loss
    # the fast lane's CUDA graph (see the module docstring): a LabelLoss with static shapes
    graph = device.type == "cuda" and cuda_graphs_enabled() and isinstance(loss, LabelLoss) and loss.graphable(data)
    groups = [{"params": list(ps), "lr": lr, "weight_decay": wd}
              for ps, lr, wd in zip(objective.groups, objective.lrs, objective.weight_decays)]
    # a graphed step needs an optimizer without host-side state; GraphAdamW's arithmetic is the default AdamW's
    opt = GraphAdamW(groups, max_steps=steps, lr_lambda=schedule) if graph else torch.optim.AdamW(groups)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule) if schedule is not None and not graph else None
    order = BatchOrder(len(data.batch), batch_size, generator)
    static = replace(data, static=True) if graph else data
    stepper = Stepper(lambda idx: loss(static, idx).mean(1), leaves, opt, device, graph=graph)
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
        if scheduler is not None:
            scheduler.step()
        run = step + 1
        evaluate = val is not None and ((eval_every is not None and run % eval_every == 0) or run == steps)
        if evaluate or run % every == 0 or run == steps:
            _raise_if_diverged(stepper, losses, objective, desc, on_diverge, initial)
            bar.set_postfix(loss=f"{float(losses[step].mean()):.3f}")
        if evaluate:
            vl = objective.mean_loss(val, eval_batch_size) if val_score is None else \
                torch.tensor([float(x) for x in val_score()])
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
        curve[i]["val_loss" if val_score is None else "val_score"] = v
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


__all__ = ["RowLoss", "TrainingDiverged", "Objective", "Fit", "fit", "CHECK_EVERY", "check_every"]
