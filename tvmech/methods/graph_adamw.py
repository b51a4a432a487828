"""AdamW for CUDA-graph-captured training steps, with the arithmetic of PyTorch's default (non-capturable) AdamW.

PyTorch's AdamW with ``capturable=True`` keeps its step count on the device and computes the bias corrections
there, in float32 and in another order (``β^t`` by ``pow`` on the device, the step size folded into the
denominator); its updates differ from the default AdamW's in the last bits, and Adam's sign-like updates carry
such differences forward: on the H200, the default model's layer-15 LTV loss curve moved by 1.7e-5 within
40 steps (``tools/device/curve_probe.py``: 1.6e-5 from the capturable optimizer alone, 2e-6 from the graph's
static shapes). This optimizer performs the default AdamW's update, term by term,

    θ ← θ · (1 − lr·λ)
    m ← lerp(m, g, 1 − β₁)                 v ← β₂·v + (1 − β₂)·g²
    θ ← θ + s_t · m / (√v / c_t + ε)       s_t = −lr / (1 − β₁^t),  c_t = √(1 − β₂^t)

with ``s_t`` and ``c_t`` computed on the host in float64, as the default AdamW does at every step, but for
every ``t`` up to ``max_steps`` at construction, then read on the device at the step count (``index_select``):
no host value changes between steps, so the step can be captured and replayed. On CUDA with float32
parameters its trajectory is bit-identical to ``torch.optim.AdamW``'s default (foreach) implementation
(``tests/unit/methods/test_graph_adamw.py``; measured on the H200 over 100 LTV steps).
"""

from __future__ import annotations

from collections.abc import Iterable

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
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, max_steps: int = 10_000):
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.max_steps = max_steps
        self._tables: list[tuple[Tensor, Tensor]] = []
        for group in self.param_groups:
            device = group["params"][0].device
            lr_, (b1, b2) = group["lr"], group["betas"]
            ts = range(1, max_steps + 1)
            self._tables.append((torch.tensor([(lr_ / (1 - b1**t)) * -1 for t in ts], device=device),
                                 torch.tensor([(1 - b2**t) ** 0.5 for t in ts], device=device)))

    @torch.no_grad()
    def step(self, closure=None) -> None:  # noqa: D401 - the Optimizer API
        """One AdamW update of every parameter that has a gradient (no host reads, no host-side state)."""
        if closure is not None:
            raise ValueError("GraphAdamW.step takes no closure")
        for group, (sizes, sqrts) in zip(self.param_groups, self._tables):
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
                torch._foreach_mul_([p], 1 - lr * wd)
                torch._foreach_lerp_([m], [p.grad], 1 - b1)
                torch._foreach_mul_([v], b2)
                torch._foreach_addcmul_([v], [p.grad], [p.grad], 1 - b2)
                denom = torch._foreach_sqrt([v])[0].div_(c)
                torch._foreach_add_([denom], eps)
                p.addcmul_(m / denom, s)


__all__ = ["GraphAdamW"]
