"""One optimisation step of the training loop, run without reading values back to the host, eagerly or as a
CUDA graph.

A step at batch ``idx`` computes the groups' losses ``ℓ = row_loss(idx).mean(1)`` (``[G]``), then

    ok        = all(isfinite(ℓ)) and every trainable leaf is finite
    good      ← leaves            if ok and no earlier step was bad   (the values *before* this update)
    bad_step  ← this step's index if not ok and no earlier step was bad
    AdamW step on Σ_g ℓ_g

entirely on the device: ``good`` / ``bad_step`` are what :class:`~tvmech.methods.training.TrainingDiverged`
reports, read whenever the loop syncs (every step on the CPU, where a read is free; at each evaluation and
every ``check_every`` steps on CUDA). The same semantics as checking every step, with no host sync inside it.

On CUDA, with an objective whose ``row_loss`` has static shapes (``Objective.graphable``) and
:func:`tvmech.core.fast.cuda_graphs_enabled`, the step (forward, backward, optimizer update, bookkeeping) is
captured once in a CUDA graph and replayed: the batch indices are copied into a static tensor, and one
launch runs the step. Capture needs warm-up steps (they allocate the optimizer state); their effect on the
leaves and the optimizer is undone before training starts, so the trajectory equals the eager one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class Stepper:
    """Steps ``opt`` on ``loss_fn(idx)`` (``[G]`` losses) with the device-side bookkeeping described above.

    Args:
        loss_fn: batch row indices (a ``[n]`` long tensor on the device) → ``[G]`` losses.
        leaves: every trainable tensor (what ``good`` mirrors).
        opt: the optimizer over ``leaves`` (for ``graph``, one without host-side state: ``GraphAdamW``).
        device: where the leaves live.
        graph: capture the step in a CUDA graph at the first call (batches must keep their size).
    """

    def __init__(self, loss_fn: Callable[[Tensor], Tensor], leaves: list[Tensor], opt: torch.optim.Optimizer,
                 device: torch.device, *, graph: bool = False):
        self.loss_fn, self.leaves, self.opt, self.device = loss_fn, leaves, opt, device
        self.good = [p.detach().clone() for p in leaves]
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.count = torch.zeros((), dtype=torch.long, device=device)
        self.graph = graph
        self._graph: torch.cuda.CUDAGraph | None = None
        self._idx: Tensor | None = None
        self._losses: Tensor | None = None
        self.capture_s = 0.0
        self.fallback: str | None = None  # why capture failed, if it did
        self._saved: list[Tensor] = []

    def _body(self, idx: Tensor) -> Tensor:
        losses = self.loss_fn(idx)
        with torch.no_grad():
            ok = torch.isfinite(losses).all()
            for p in self.leaves:
                ok = ok & torch.isfinite(p).all()
            first = ok & (self.bad_step < 0)
            for g, p in zip(self.good, self.leaves):
                g.copy_(torch.where(first, p, g))
            self.bad_step.copy_(torch.where(~ok & (self.bad_step < 0), self.count, self.bad_step))
        losses.sum().backward()
        self.opt.step()
        with torch.no_grad():
            self.count.add_(1)
        return losses.detach()

    def __call__(self, idx: Tensor) -> Tensor:
        """One step on rows ``idx``; returns the ``[G]`` losses (a device tensor, overwritten by the next
        graphed step: copy it)."""
        if not self.graph:
            self.opt.zero_grad(set_to_none=True)
            return self._body(idx)
        if self._graph is None:
            try:
                self._capture(idx)
            except Exception as e:  # noqa: BLE001 - anything that cannot be captured runs eagerly instead
                self._fall_back(e)
                return self(idx)
        self._idx.copy_(idx, non_blocking=True)
        self._graph.replay()
        return self._losses

    def _capture(self, idx: Tensor) -> None:
        import time

        t0 = time.perf_counter()
        self._idx = idx.clone()
        self._saved = [p.detach().clone() for p in self.leaves]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # allocates the optimizer state and warms the kernels
                self.opt.zero_grad(set_to_none=True)
                self._body(self._idx)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._restore()  # undo the warm-up: the first real step starts from the initial state
        with torch.no_grad():
            for state in self.opt.state.values():  # kept (the graph reads these tensors), zeroed
                for v in state.values():
                    if isinstance(v, Tensor):
                        v.zero_()
        self.opt.zero_grad(set_to_none=True)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._losses = self._body(self._idx)
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0

    def _fall_back(self, error: Exception) -> None:
        """Capture failed: warn, undo what the attempt did, and step eagerly from here on."""
        import warnings

        warnings.warn(f"the training step could not be captured in a CUDA graph ({type(error).__name__}: "
                      f"{error}); training eagerly instead", RuntimeWarning, stacklevel=3)
        torch.cuda.synchronize(self.device)
        self.graph, self._graph, self.fallback = False, None, f"{type(error).__name__}: {error}"
        self._restore()
        self.opt.state.clear()

    def _restore(self) -> None:
        """Leaves, ``good`` and the bookkeeping back to their values before the capture attempt."""
        with torch.no_grad():
            for p, g, s in zip(self.leaves, self.good, self._saved):
                p.copy_(s)
                g.copy_(s)
            self.bad_step.fill_(-1)
            self.count.zero_()

    def first_bad(self) -> int | None:
        """The index of the first step whose loss or leaves were not finite (a host read), else ``None``."""
        s = int(self.bad_step)
        return None if s < 0 else s

    def good_values(self, values: Callable[[], list]) -> list:
        """``values()`` computed with the leaves set to ``good`` (the last good state), the leaves restored."""
        with torch.no_grad():
            now = [p.detach().clone() for p in self.leaves]
            for p, g in zip(self.leaves, self.good):
                p.copy_(g)
            try:
                return values()
            finally:
                for p, n in zip(self.leaves, now):
                    p.copy_(n)


__all__ = ["Stepper"]
