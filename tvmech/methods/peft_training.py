"""Parameter-efficient baselines for a Learned Task Vector, compared on one task: LTV, one trained
virtual token (:mod:`tvmech.methods.prompt_tuning`), rank-1 LoRA on ``W_O`` (:mod:`tvmech.methods.lora`).

All three keep the model frozen, train on *zero-shot* prompts with the LTV loss (label NLL averaged
over each row's label tokens, then over rows) in the one loop of :mod:`tvmech.methods.training`, with
AdamW (weight decay 0.01) on the same seeded sequence of batches, and are scored on zero-shot test
prompts.

* ``ltv``: ``h_l[q] += θ`` at the query position, ``θ ∈ R^{d_model}``, lr = ``lr_ltv × mean‖h_l[q]‖``
  taken on θ itself (:func:`learn_task_vector` takes the same steps on φ = θ / norm: equal up to
  Adam's eps).
* ``prefix``: ``x' = [p; x]`` at block 0, lr = ``lr_prefix × mean‖h_0[q]‖``.
* ``lora_rank1`` on layer ``l``: ``W_O + a bᵀ``, lr = ``lr_lora`` absolute.

LTV and LoRA only change blocks ``l`` and above, so blocks below ``l`` run once, without gradients,
for the whole training set; the virtual token enters at block 0, so prefix tuning runs every block at
every step.

Costs reported by :func:`train_peft` (and :func:`tvmech.experiments.peft.compare_peft`).
``step_latency_s``: median wall time of one training step (forward, backward, optimizer step; CUDA
synchronised), the first step excluded; ``step_latency_min_s``: the fastest such step, less sensitive to other
load on a shared machine. ``peak_memory_bytes``: bytes of the tensors autograd saves for backward during one
forward pass on the same fixed batch (the first ``batch_size`` training prompts) for every method, counted
with ``torch.autograd.graph.saved_tensors_hooks``, each storage once, the model's weights and the trained
parameters excluded: the activation memory a step holds between forward and backward. It is exact on CPU and
GPU alike, but leaves out transient buffers and the cached residuals of the frozen blocks.
``cuda_peak_bytes``: ``torch.cuda.max_memory_allocated`` over that pass and its backward (weights and caches
included), ``None`` off CUDA.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from tvmech.core.adapter import Adapter, adapt
from tvmech.data.tasks import Example, Task, train_val
from tvmech.methods.learned import LTVConfig, ltv_objective
from tvmech.methods.lora import lora_objective
from tvmech.methods.prompt_tuning import prefix_objective
from tvmech.methods.training import Objective, fit, prepare_data, query_norm

Method = Literal["ltv", "prefix", "lora_rank1"]
METHODS: tuple[str, ...] = get_args(Method)
WEIGHT_DECAY = 0.01
# lora_rank1: absolute; ltv, prefix: in units of the mean query residual norm (at layer l, at block 0).
# ltv: tvmech.methods.learned's default. prefix, lora_rank1: picked on SmolLM2 sentiment, layer 15 (12-step scan of
# {3e-3, 1e-2, 3e-2}, validation loss; all stable, 3e-3 clearly slower). The block-0 residual (the
# embedding, norm ~2.8) is ~50x smaller than at layer 15, and with ltv's 3e-4 the token barely moves.
DEFAULT_LR = {"ltv": 3e-4, "prefix": 1e-2, "lora_rank1": 1e-2}


class SavedTensorBytes(torch.autograd.graph.saved_tensors_hooks):
    """Context manager: ``.bytes`` sums the storages autograd saves for backward, each counted once.

    Storages of ``exclude`` (e.g. the model's parameters) are not counted. Works on any device.
    """

    def __init__(self, exclude: Sequence[Tensor] = ()):
        self.skip = {t.untyped_storage().data_ptr() for t in exclude}
        self.bytes = 0
        super().__init__(self._pack, lambda t: t)

    def _pack(self, t: Tensor) -> Tensor:
        if t.layout == torch.strided and t.device.type != "meta":
            s = t.untyped_storage()
            if s.data_ptr() not in self.skip:
                self.skip.add(s.data_ptr())
                self.bytes += s.nbytes()
        return t

    def __enter__(self) -> SavedTensorBytes:
        super().__enter__()
        return self


def _objective(ad: Adapter, data, method: str, layer: int, lr: float, seed: int
               ) -> tuple[Objective, dict[str, Tensor], float]:
    """The method's objective, its trainable leaves by name and its effective lr."""
    if method == "prefix":
        obj, leaves = prefix_objective(ad, data, lr, WEIGHT_DECAY)
    elif method == "lora_rank1":
        obj, leaves = lora_objective(ad, data, layer, lr, seed, WEIGHT_DECAY)
    else:  # plain θ with lr x norm (lr_unit "absolute": scale 1, θ = φ)
        cfg = LTVConfig(lr=lr * query_norm(ad, data, layer), lr_unit="absolute", weight_decay=WEIGHT_DECAY)
        obj, _ = ltv_objective(ad, data, [(layer,)], (-1,), config=cfg)
        leaves = {"vector": obj.groups[0][0]}
    return obj, leaves, obj.lrs[0]


def check_methods(model, methods: Sequence[str], layer: int, steps: int, batch_size: int) -> Adapter:
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"method(s) {bad or list(methods)} not known; choose from {METHODS}")
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"steps and batch_size must be integers >= 1 (got {steps!r}, {batch_size!r})")
    ad = adapt(model)
    ad.check_layer(layer)
    return ad


def train_peft(model, task: Task, method: Method, *, layer: int | None = None, steps: int = 100, batch_size: int = 16,
               lr: float | None = None, seed: int = 0, train: Sequence[Example] | None = None,
               val: Sequence[Example] | None = None, eval_every: int | None = None,
               patience: int | None = None, progress: bool = True) -> dict:
    """Train one method (see the module docstring); returns its parameters, losses and costs.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task; ``train``/``val`` default to its splits with ``seed``.
        method: ``"ltv"``, ``"prefix"`` or ``"lora_rank1"``.
        layer: the layer of ``ltv`` and ``lora_rank1`` (``None``: the middle layer ``n_layers // 2``, 15 on the
            30-layer default model).
        steps, batch_size: the most steps and the rows per step.
        lr: defaults to ``DEFAULT_LR[method]``; LoRA's ``a`` is drawn with seed ``seed + 1``.
        eval_every: validate every this many steps, keep the best parameters (``None``: no validation
            during training; the final parameters are returned).
        patience: stop once that many validations went without improvement (needs ``eval_every``).
        progress: show the training bar.

    Returns:
        ``method``, ``params`` (by name), ``lr`` (effective), ``trainable_params``, ``curve`` (loss per
        step), ``val_curve`` (``(step, val_loss)``), ``steps_run``, ``step_times_s``, ``train_loss_start``,
        ``train_loss_end``, ``val_loss_end`` (for the returned parameters), ``step_latency_s``,
        ``step_latency_min_s``, ``peak_memory_bytes``, ``cuda_peak_bytes``. Batches are drawn as in
        :func:`learn_task_vector` (same seed, same order), so ``ltv`` here matches
        ``learn_task_vector(..., val=())`` (up to Adam's eps). Raises
        :class:`~tvmech.methods.training.TrainingDiverged` on a NaN/inf loss.
    """
    layer = adapt(model).middle_layer if layer is None else layer
    ad = check_methods(model, [method], layer, steps, batch_size)
    lr = DEFAULT_LR[method] if lr is None else lr
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if patience is not None and eval_every is None:
        raise ValueError("patience needs eval_every (validation during training)")
    train, val = train_val(task, train, val, seed)
    start = 0 if method == "prefix" else layer
    data = prepare_data(ad, task, train, start)
    obj, leaves, lr_eff = _objective(ad, data, method, layer, lr, seed)
    vdata = prepare_data(ad, task, val, start) if val else None
    B = min(batch_size, len(train))
    loss_start = float(obj.mean_loss(data, B)[0])
    run = fit(obj, data, steps=steps, batch_size=B, generator=torch.Generator().manual_seed(seed),
              val=vdata if eval_every is not None else None, eval_every=eval_every, patience=patience,
              eval_batch_size=B, desc=method, progress=progress)
    with torch.no_grad():  # the returned parameters (best by validation, or final) are the ones measured
        for name, value in run.best[0].items() if method != "ltv" else [("vector", run.best[0])]:
            leaves[name].copy_(value)
    # memory: one forward + backward on the same fixed batch for every method
    fixed = torch.arange(B, device=ad.device)
    cuda = ad.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(ad.device)
    with SavedTensorBytes(exclude=[*ad.model.parameters(), *leaves.values()]) as saved:
        loss = obj.row_loss(data, fixed).mean()
    loss.backward()
    for p in leaves.values():
        p.grad = None
    cuda_peak = int(torch.cuda.max_memory_allocated(ad.device)) if cuda else None
    times = run.step_times_s
    return {
        "method": method, "params": {k: p.detach().clone() for k, p in leaves.items()}, "lr": lr_eff,
        "trainable_params": sum(p.numel() for p in leaves.values()), "curve": [r["loss"] for r in run.curve],
        "val_curve": [(r["step"], r["val_loss"]) for r in run.curve if "val_loss" in r], "steps_run": run.steps_run,
        "step_times_s": times, "train_loss_start": loss_start, "train_loss_end": float(obj.mean_loss(data, B)[0]),
        "val_loss_end": float(obj.mean_loss(vdata, B)[0]) if vdata is not None else None,
        "step_latency_s": statistics.median(times[1:] or times), "step_latency_min_s": min(times[1:] or times),
        "peak_memory_bytes": saved.bytes, "cuda_peak_bytes": cuda_peak,
    }


__all__ = ["Method", "METHODS", "WEIGHT_DECAY", "DEFAULT_LR", "SavedTensorBytes", "check_methods", "train_peft"]
