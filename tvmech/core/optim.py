"""The optimiser infrastructure of the training loop: one step run without reading values back to the host,
eagerly or captured in a CUDA graph (:class:`Stepper`), and an AdamW whose step a graph can capture
(:class:`GraphAdamW`). Both depend on PyTorch alone (no model, no task): they sit at the bottom of the layers,
beside the rest of ``core``'s model-independent infrastructure (files, progress bars, argument checks) and the
switch that allows CUDA graphs (:mod:`tvmech.core.fast`), so that every layer above may train with them
(:func:`tvmech.methods.training.fit` does).

Stepping. A step at batch ``idx`` computes the groups' losses ``ℓ = loss_fn(idx)`` (``[G]``), then

    ok        = all(isfinite(ℓ)) and every trainable leaf is finite
    good      ← leaves            if ok and no earlier step was bad   (the values *before* this update)
    bad_step  ← this step's index if not ok and no earlier step was bad
    AdamW step on Σ_g ℓ_g

entirely on the device: ``good`` / ``bad_step`` are what :class:`~tvmech.methods.training.TrainingDiverged`
reports, read whenever the loop syncs (every step on the CPU, where a read is free; at each evaluation and
every ``check_every`` steps on CUDA). The same semantics as checking every step, with no host sync inside it.

On CUDA, when the training loop asks for it (a loss with static shapes, :func:`tvmech.core.fast.cuda_graphs_enabled`),
the step (forward, backward, optimizer update, bookkeeping) is captured once in a CUDA graph and replayed: the batch
indices are copied into a static tensor, and one launch runs the step. Capture needs warm-up steps (they allocate
the optimizer state); their effect on the leaves and the optimizer is undone before training starts, so the
trajectory equals the eager one.

GraphAdamW. PyTorch's AdamW with ``capturable=True`` keeps its step count on the device and computes the bias
corrections there, in float32 and in another order (``β^t`` by ``pow`` on the device, the step size folded into the
denominator); its updates differ from the default AdamW's in the last bits, and Adam's sign-like updates carry
such differences forward: on the H200, the default model's layer-15 LTV loss curve moved by 1.7e-5 within
40 steps (``tools/device/curve_probe.py``: 1.6e-5 from the capturable optimizer alone, 2e-6 from the graph's
static shapes). :class:`GraphAdamW` performs the default AdamW's update, term by term,

    θ ← θ · (1 − lr·λ)
    m ← lerp(m, g, 1 − β₁)                 v ← β₂·v + (1 − β₂)·g²
    θ ← θ + s_t · m / (√v / c_t + ε)       s_t = −lr / (1 − β₁^t),  c_t = √(1 − β₂^t)

with ``s_t`` and ``c_t`` computed on the host in float64, as the default AdamW does at every step, but for
every ``t`` up to ``max_steps`` at construction, then read on the device at the step count (``index_select``):
no host value changes between steps, so the step can be captured and replayed. On CUDA with float32
parameters its trajectory is bit-identical to ``torch.optim.AdamW``'s default (foreach) implementation
(``tests/unit/core/test_optim.py``; measured on the H200 over 100 LTV steps).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import Tensor


class GraphAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) whose step can be captured in a CUDA graph; see the module docstring.

    Args:
        params: tensors or parameter groups (each group may set ``lr`` and ``weight_decay``).
        lr, betas, eps, weight_decay: as for :class:`torch.optim.AdamW`.
        max_steps: the most steps this optimizer will take (the length of the bias-correction tables; a later
            step reuses the last entry, where both corrections are 1 to float32 precision for the usual betas
            after a few thousand steps).
        lr_lambda: a schedule: step ``t`` (from 0) uses ``lr · lr_lambda(t)`` in both the step size and the weight
            decay, as ``torch.optim.lr_scheduler.LambdaLR`` stepped after every step does (the decay factors
            ``1 − lr_t·λ`` are then a third table); ``None``: constant ``lr``.
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, max_steps: int = 10_000,
                 lr_lambda: Callable[[int], float] | None = None):
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.max_steps = max_steps
        self.lr_lambda = lr_lambda
        self._tables: list[tuple[Tensor, Tensor]] = []
        self._decays: list[Tensor | None] = []
        for group in self.param_groups:
            device = group["params"][0].device
            lr_, (b1, b2) = group["lr"], group["betas"]
            ts = range(1, max_steps + 1)
            f = [1.0] * max_steps if lr_lambda is None else [float(lr_lambda(t - 1)) for t in ts]
            self._tables.append((torch.tensor([(lr_ * f[t - 1] / (1 - b1**t)) * -1 for t in ts], device=device),
                                 torch.tensor([(1 - b2**t) ** 0.5 for t in ts], device=device)))
            wd = group["weight_decay"]
            self._decays.append(None if lr_lambda is None else
                                torch.tensor([1 - lr_ * f[t - 1] * wd for t in ts], device=device))

    @torch.no_grad()
    def step(self, closure=None) -> None:  # noqa: D401 - the Optimizer API
        """One AdamW update of every parameter that has a gradient (no host reads, no host-side state)."""
        if closure is not None:
            raise ValueError("GraphAdamW.step takes no closure")
        for group, (sizes, sqrts), decays in zip(self.param_groups, self._tables, self._decays):
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.long, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                at = state["step"].clamp(max=self.max_steps - 1).view(1)
                s, c = sizes.index_select(0, at), sqrts.index_select(0, at)
                state["step"].add_(1)
                # the default AdamW's foreach kernels, with the two per-step scalars read from the tables
                if decays is None:
                    torch._foreach_mul_([p], 1 - lr * wd)
                else:
                    p.mul_(decays.index_select(0, at).to(p.dtype))
                torch._foreach_lerp_([m], [p.grad], 1 - b1)
                torch._foreach_mul_([v], b2)
                torch._foreach_addcmul_([v], [p.grad], [p.grad], 1 - b2)
                denom = torch._foreach_sqrt([v])[0].div_(c)
                torch._foreach_add_([denom], eps)
                p.addcmul_(m / denom, s)


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


__all__ = ["GraphAdamW", "Stepper"]
