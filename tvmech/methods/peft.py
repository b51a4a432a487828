"""Parameter-efficient baselines for a Learned Task Vector: one trained virtual token, rank-1 LoRA.

All three methods keep the model frozen, train on *zero-shot* prompts with the LTV loss of
:mod:`tvmech.methods.learned` (label NLL averaged over each row's label tokens, then over rows), with AdamW
(weight decay 0.01) on the same seeded sequence of batches, and are scored on zero-shot test prompts.

* ``ltv``: ``h_l[q] += θ`` at the query position, ``θ ∈ R^{d_model}``, lr = ``lr_ltv × mean‖h_l[q]‖``
  (the scale-aware rule; :func:`learn_task_vector`'s steps, which it takes on φ = θ / norm: equal up to
  Adam's eps).
* ``prefix`` (prefix tuning with one virtual token): ``p ∈ R^{d_model}`` is prepended to the residual
  stream entering block 0, ``x' = [p; x_0 ... x_{T-1}]``, and all blocks run on ``T + 1`` positions.
  Real token ``t`` moves to position ``t + 1`` (its rotary phase included), so the query position and
  every label target shift by one. ``p`` starts at the embedding of the BOS token (never zero: see
  :func:`prefix_init_token`). lr = ``lr_prefix × mean‖h_0[q]‖`` (the scale-aware rule at block 0, whose
  residual is the token embedding). On a model with learned absolute position embeddings the
  real tokens would keep the embeddings of their original positions; SmolLM2 (Llama) uses rotary.
* ``lora_rank1`` on layer ``l``: the attention output projection ``W_O ∈ R^{(H·d_head) × d_model}``
  (heads' ``z`` concatenated as input) becomes ``W_O + a bᵀ``, ``a ∈ R^{H·d_head}``, ``b ∈ R^{d_model}``,
  i.e. ``attn_out += (z_flat · a) b`` at every position. ``a ~ U(±1/√(H·d_head))`` (seeded; PEFT's
  kaiming-uniform init of LoRA's A), ``b = 0``, so training starts from the unmodified model; no α/r
  scaling (α = r = 1). lr = ``lr_lora`` absolute, the same for ``a`` and ``b``.

LTV and LoRA only change blocks ``l`` and above, so blocks below ``l`` run once, without gradients,
for the whole training set (as in :mod:`tvmech.methods.learned`); the virtual token enters at block 0, so prefix
tuning runs every block at every step.

Costs reported by :func:`compare_peft`. ``step_latency_s``: median wall time of one training step
(forward, backward, optimizer step; CUDA synchronised), the first step excluded; ``step_latency_min_s``:
the fastest such step, less sensitive to other load on a shared machine. ``peak_memory_bytes``: bytes
of the tensors autograd saves for backward during one forward pass on the same fixed batch
(the first ``batch_size`` training prompts) for every method, counted with
``torch.autograd.graph.saved_tensors_hooks``, each storage once, the model's weights and the trained
parameters excluded: the activation memory a step holds between forward and backward. It is exact on
CPU and GPU alike, but leaves out transient buffers and the cached residuals of the frozen blocks.
``cuda_peak_bytes``: ``torch.cuda.max_memory_allocated`` over that pass and its backward (weights and
caches included), ``None`` off CUDA.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.adapter import Adapter, HookFn, adapt
from tvmech.analysis.evaluation import EvalResult, evaluate
from tvmech.interventions.injection import Injection
from tvmech.methods.learned import _Data, _group_hooks, _prepare, _query_norm, _row_nll, _rows
from tvmech.data.prompts import Batch, batches, label_set_ids, make_prompts
from tvmech.data.tasks import SCORING_MODES, Example, Task

METHODS = ("ltv", "prefix", "lora_rank1")
WEIGHT_DECAY = 0.01
# lora_rank1: absolute; ltv, prefix: in units of the mean query residual norm (at layer l, at block 0).
# ltv: tvmech.methods.learned's default. prefix, lora_rank1: picked on SmolLM2 sentiment, layer 15 (12-step scan of
# {3e-3, 1e-2, 3e-2}, validation loss; all stable, 3e-3 clearly slower). The block-0 residual (the
# embedding, norm ~2.8) is ~50x smaller than at layer 15, and with ltv's 3e-4 the token barely moves.
DEFAULT_LR = {"ltv": 3e-4, "prefix": 1e-2, "lora_rank1": 1e-2}


# ----------------------------------------------------------------------------- prefix tuning
def _as_prefix(ad: Adapter, prefix: Tensor) -> Tensor:
    p = prefix[None] if prefix.ndim == 1 else prefix
    if p.ndim != 2 or p.shape[-1] != ad.d_model or p.shape[0] < 1:
        raise ValueError(f"prefix must be [d_model] or [n_virtual, d_model] with d_model {ad.d_model}; "
                         f"got shape {tuple(prefix.shape)}")
    return p


def shift_batch(batch: Batch, n: int = 1, pad_id: int = 0) -> Batch:
    """The batch seen with ``n`` virtual tokens in front: positions, targets and lengths move by ``n``."""
    b = len(batch)
    pad = lambda t, v: torch.cat([torch.full((b, n), v, dtype=t.dtype, device=t.device), t], 1)  # noqa: E731
    return Batch(pad(batch.tokens, pad_id), batch.query_pos + n, batch.label_first, pad(batch.targets, -100),
                 batch.lengths + n)


def with_prefix(resid: Float[Tensor, "batch pos d_model"], prefix: Float[Tensor, "n_virtual d_model"]
                ) -> Float[Tensor, "batch n_virtual+pos d_model"]:
    """``[p; x]``: the virtual tokens prepended to every row of a block-0 residual stream."""
    p = prefix.to(resid.dtype)[None].expand(resid.shape[0], -1, -1)
    return torch.cat([p, resid], 1)


def run_with_prefix(model, tokens: Int[Tensor, "batch pos"], prefix: Float[Tensor, "*n_virtual d_model"],
                    hooks: Sequence[tuple[str, HookFn]] = ()) -> Float[Tensor, "batch n_virtual+pos d_model"]:
    """Final residual stream (before the final norm) with ``prefix`` prepended at block 0.

    Position ``n_virtual + t`` of the output is real token ``t``.
    """
    ad = adapt(model)
    p = _as_prefix(ad, prefix)
    with ad.hooks(list(hooks)):
        return ad.run_blocks(with_prefix(ad.residual(tokens.to(ad.device), 0), p.to(ad.device)), 0)


def prefix_query_logits(model, batch: Batch, prefix: Float[Tensor, "*n_virtual d_model"]
                        ) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query token (now at ``query_pos + n_virtual``)."""
    ad = adapt(model)
    n = _as_prefix(ad, prefix).shape[0]
    final = run_with_prefix(ad, batch.tokens, prefix)
    return ad.unembed(final[torch.arange(len(batch), device=final.device), batch.query_pos.to(final.device) + n])


def evaluate_prefix(model, task: Task, queries: Sequence[Example], prefix: Float[Tensor, "*n_virtual d_model"], *,
                    scoring: str | None = None, batch_size: int = 16) -> EvalResult:
    """Zero-shot accuracy with the virtual tokens, scored as :func:`tvmech.analysis.evaluation` scores."""
    ad = adapt(model)
    scoring = scoring or task.scoring
    if scoring not in SCORING_MODES:
        raise ValueError(f"scoring {scoring!r} is not valid; choose one of {SCORING_MODES}")
    n = _as_prefix(ad, prefix).shape[0]
    prompts = make_prompts(task, queries, 0)
    correct, preds = [False] * len(prompts), [""] * len(prompts)
    for idx, batch in batches(ad.tokenizer, task, prompts, batch_size, with_labels=scoring == "exact_match"):
        batch = batch.to(ad.device)
        with torch.no_grad():
            final = run_with_prefix(ad, batch.tokens, prefix)[:, n:]  # aligned with the unshifted batch again
            logits = ad.unembed(final[torch.arange(len(batch), device=final.device), batch.query_pos])
            first = logits.argmax(-1)
            if scoring == "exact_match":
                mask = batch.label_mask
                pred = torch.full_like(batch.targets, -100)
                pred[mask] = ad.unembed(final[mask]).argmax(-1)
                ok = ((pred == batch.targets) | ~mask).all(-1)
            else:
                if scoring == "label_set":
                    ids = torch.tensor(label_set_ids(ad.tokenizer, task), device=final.device)
                    first = ids[logits[:, ids].argmax(-1)]
                ok = first == batch.label_first
        for j, i in enumerate(idx):
            correct[i], preds[i] = bool(ok[j]), ad.tokenizer.decode([int(first[j])])
    return EvalResult(task.name, 0, scoring, sum(correct) / len(correct), len(correct), correct, preds)


def prefix_init_token(model) -> int:
    """Token whose embedding initialises the virtual token: BOS, else EOS, else id 0.

    Not zero: an all-zero token stays exactly zero through every block (RMSNorm(0) = 0, no biases),
    the norms' ``1/sqrt(eps)`` gain at 0 compounds over depth, and on SmolLM2 (30 layers) its gradient
    overflows to NaN in the first backward pass.
    """
    tok = adapt(model).tokenizer
    for t in (tok.bos_token_id, tok.eos_token_id):
        if t is not None:
            return int(t)
    return 0


# ----------------------------------------------------------------------------- rank-1 LoRA on W_O
def lora_delta(z: Float[Tensor, "batch pos n_heads d_head"], a: Float[Tensor, " n_heads_d_head"],
               b: Float[Tensor, " d_model"]) -> Float[Tensor, "batch pos d_model"]:
    """``(z_flat · a) b``: the change of ``attn_out`` when ``W_O`` becomes ``W_O + a bᵀ``."""
    return (z.flatten(2) @ a.to(z.dtype))[..., None] * b.to(z.dtype)


def lora_hooks(model, layer: int, a: Float[Tensor, " n_heads_d_head"], b: Float[Tensor, " d_model"]
               ) -> list[tuple[str, HookFn]]:
    """Hooks making block ``layer``'s attention output ``z_flat (W_O + a bᵀ)``: read ``z``, add the delta."""
    ad = adapt(model)
    ad.check_layer(layer)
    if a.shape != (ad.n_heads * ad.d_head,) or b.shape != (ad.d_model,):
        raise ValueError(f"LoRA factors must have shapes ({ad.n_heads * ad.d_head},) and ({ad.d_model},); "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    seen: dict[str, Tensor] = {}

    def read_z(z: Tensor, hook=None) -> None:
        seen["z"] = z

    def add(out: Tensor, hook=None) -> Tensor:
        return out + lora_delta(seen.pop("z"), a, b).to(out.dtype)

    return [(ad.act_name(layer, "z"), read_z), (ad.act_name(layer, "attn_out"), add)]


# ----------------------------------------------------------------------------- measurement
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- training
def _setup(ad: Adapter, task: Task, train: Sequence[Example], method: str, layer: int, lr: float, seed: int
           ) -> tuple[dict[str, Tensor], float, _Data, Callable[[_Data, Tensor], Tensor]]:
    """Parameters, effective lr, cached data and the per-row loss of one method."""
    dev, dt = ad.device, ad.dtype
    if method == "prefix":
        data = _prepare(ad, task, train, 0, False)
        with torch.no_grad():
            p = ad.residual(torch.tensor([[prefix_init_token(ad)]]), 0)[0].to(dev, dt).requires_grad_(True)

        def nll(d: _Data, idx: Tensor) -> Tensor:
            resid, batch = _rows(d, idx, 1)
            return _row_nll(ad, with_prefix(resid, p), shift_batch(batch), 0, [])

        return {"prefix": p}, lr * _query_norm(ad, data, 0, 0), data, nll
    data = _prepare(ad, task, train, layer, False)
    if method == "ltv":
        v = torch.zeros(1, 1, ad.d_model, device=dev, dtype=dt, requires_grad=True)

        def nll(d: _Data, idx: Tensor) -> Tensor:
            resid, batch = _rows(d, idx, 1)
            hooks = _group_hooks(ad, [v], [(layer,)], (-1,), "resid_pre", len(idx), batch.query_pos)
            return _row_nll(ad, resid, batch, layer, hooks)

        return {"vector": v}, lr * _query_norm(ad, data, layer, layer), data, nll
    fan_in = ad.n_heads * ad.d_head
    gen = torch.Generator().manual_seed(seed + 1)
    a = ((torch.rand(fan_in, generator=gen) * 2 - 1) / math.sqrt(fan_in)).to(dev, dt).requires_grad_(True)
    b = torch.zeros(ad.d_model, device=dev, dtype=dt, requires_grad=True)

    def nll(d: _Data, idx: Tensor) -> Tensor:
        resid, batch = _rows(d, idx, 1)
        return _row_nll(ad, resid, batch, layer, lora_hooks(ad, layer, a, b))

    return {"a": a, "b": b}, lr, data, nll


def _mean_loss(data: _Data, nll, batch_size: int) -> float:
    n = len(data.batch)
    with torch.no_grad():
        idx = torch.arange(n, device=data.resid.device)
        return float(sum(nll(data, idx[s : s + batch_size]).sum() for s in range(0, n, batch_size)) / n)


def _check(model, methods: Sequence[str], layer: int, steps: int, batch_size: int) -> Adapter:
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"method(s) {bad or list(methods)} not known; choose from {METHODS}")
    if not isinstance(steps, int) or steps < 1 or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"steps and batch_size must be integers >= 1 (got {steps!r}, {batch_size!r})")
    ad = adapt(model)
    ad.check_layer(layer)
    return ad


def train_peft(model, task: Task, method: str, *, layer: int = 15, steps: int = 100, batch_size: int = 16,
               lr: float | None = None, seed: int = 0, train: Sequence[Example] | None = None,
               val: Sequence[Example] | None = None) -> dict:
    """Train one method (see the module docstring); returns its parameters, losses and costs.

    ``lr`` defaults to ``DEFAULT_LR[method]``; LoRA's ``a`` is drawn with seed ``seed + 1``. Batches are
    drawn as in :func:`learn_task_vector` (same seed, same order), so every method sees the same batches
    and ``ltv`` here matches ``learn_task_vector(..., val=())`` (up to Adam's eps).
    """
    ad = _check(model, [method], layer, steps, batch_size)
    lr = DEFAULT_LR[method] if lr is None else lr
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")
    sp = task.splits(seed)
    train = sp.train if train is None else train
    val = sp.val if val is None else val
    params, lr_eff, data, nll = _setup(ad, task, train, method, layer, lr, seed)
    vdata = _prepare(ad, task, val, 0 if method == "prefix" else layer, False) if val else None
    opt = torch.optim.AdamW(list(params.values()), lr=lr_eff, weight_decay=WEIGHT_DECAY)
    N, B = len(train), min(batch_size, len(train))
    loss_start = _mean_loss(data, nll, B)
    gen = torch.Generator().manual_seed(seed)
    order, cursor, curve, times = torch.randperm(N, generator=gen), 0, [], []
    for step in range(steps):
        if cursor + B > N:
            order, cursor = torch.randperm(N, generator=gen), 0
        idx = order[cursor : cursor + B].to(ad.device)
        cursor += B
        _sync(ad.device)
        t0 = time.perf_counter()
        loss = nll(data, idx).mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{method}: loss became {float(loss)} at step {step}; lower the lr")
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(ad.device)
        times.append(time.perf_counter() - t0)
        curve.append(float(loss.detach()))
    # memory: one forward + backward on the same fixed batch for every method
    fixed = torch.arange(B, device=ad.device)
    cuda = ad.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(ad.device)
    with SavedTensorBytes(exclude=[*ad.model.parameters(), *params.values()]) as saved:
        loss = nll(data, fixed).mean()
    loss.backward()
    opt.zero_grad()
    cuda_peak = int(torch.cuda.max_memory_allocated(ad.device)) if cuda else None
    return {
        "method": method, "params": {k: p.detach().clone() for k, p in params.items()}, "lr": lr_eff,
        "trainable_params": sum(p.numel() for p in params.values()), "curve": curve, "step_times_s": times,
        "train_loss_start": loss_start, "train_loss_end": _mean_loss(data, nll, B),
        "val_loss_end": _mean_loss(vdata, nll, B) if vdata is not None else None,
        "step_latency_s": statistics.median(times[1:] or times), "step_latency_min_s": min(times[1:] or times),
        "peak_memory_bytes": saved.bytes, "cuda_peak_bytes": cuda_peak,
    }


def _accuracy(ad: Adapter, task: Task, test: Sequence[Example], run: dict, layer: int) -> float:
    p = run["params"]
    if run["method"] == "prefix":
        return evaluate_prefix(ad, task, test, p["prefix"]).accuracy
    if run["method"] == "ltv":
        hooks_for = Injection.single(p["vector"][0, 0], layer).hooks_for(ad)
    else:
        hooks_for = lambda batch: lora_hooks(ad, layer, p["a"], p["b"])  # noqa: E731
    return evaluate(ad, task, test, hooks_for=hooks_for).accuracy


def compare_peft(model, task: Task, layer: int = 15, steps: int = 100, batch_size: int = 16, seed: int = 0, *,
                 methods: Sequence[str] = METHODS, lrs: dict[str, float] | None = None) -> list[dict]:
    """LTV vs one-virtual-token prefix tuning vs rank-1 LoRA on ``W_O`` of ``layer``, on one task.

    Trains each method for ``steps`` steps on the task's seeded training split (no early stopping:
    the final parameters are evaluated) and returns one record per method with ``method``, ``task``,
    ``layer``, ``accuracy`` (zero-shot test prompts), ``zero_shot_accuracy`` (unmodified model),
    ``n_test``, ``trainable_params``, ``lr`` (effective), ``train_loss_start``, ``train_loss_end``,
    ``val_loss_end``, ``step_latency_s``, ``step_latency_min_s``, ``peak_memory_bytes``,
    ``cuda_peak_bytes``, ``steps``, ``batch_size``, ``device`` (definitions in the module docstring).
    """
    ad = _check(model, methods, layer, steps, batch_size)
    test = task.splits(seed).test
    base = evaluate(ad, task, test).accuracy
    rows = []
    for m in methods:
        run = train_peft(ad, task, m, layer=layer, steps=steps, batch_size=batch_size, seed=seed,
                         lr=(lrs or {}).get(m))
        rows.append({"method": m, "task": task.name, "layer": layer, "accuracy": _accuracy(ad, task, test, run, layer),
                     "zero_shot_accuracy": base, "n_test": len(test),
                     **{k: run[k] for k in ("trainable_params", "lr", "train_loss_start", "train_loss_end",
                                            "val_loss_end", "step_latency_s", "step_latency_min_s", "peak_memory_bytes",
                                            "cuda_peak_bytes")},
                     "steps": steps, "batch_size": batch_size, "device": str(ad.device)})
    return rows


__all__ = ["METHODS", "DEFAULT_LR", "compare_peft", "train_peft", "run_with_prefix", "prefix_query_logits",
           "prefix_init_token", "evaluate_prefix", "with_prefix", "shift_batch", "lora_delta", "lora_hooks",
           "SavedTensorBytes"]
