"""Prompt tuning with one virtual token (prefix tuning at the residual stream's input).

A trained ``p ∈ R^{d_model}`` is prepended to the residual stream entering block 0,
``x' = [p; x_0 ... x_{T-1}]``, and all blocks run on ``T + 1`` positions. Real token ``t`` moves to
position ``t + 1`` (its rotary phase included), so the query position and every label target shift by
one (:func:`shift_batch`). The loss is the LTV loss (label NLL averaged over each row's label tokens,
then over rows), trained in the shared loop of :mod:`tvmech.methods.training` (its fast lane: static shapes and a
CUDA graph on CUDA); since the virtual token enters at block 0 and moves every real token, every block runs at
every position at every step.

``p`` starts at the embedding of the BOS token (never zero: see :func:`prefix_init_token`). Its step
size is scale-aware: lr = ``lr × mean‖h_0[q]‖`` (block 0's residual is the token embedding). On a
model with learned absolute position embeddings the real tokens would keep the embeddings of their
original positions; SmolLM2 (Llama) uses rotary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.analysis.evaluation import EvalResult
from tvmech.core.adapter import Adapter, adapt
from tvmech.data.prompts import Batch, batches, label_set_ids, make_prompts
from tvmech.data.tasks import SCORING_MODES, Example, Task
from tvmech.methods.training import LabelLoss, Objective, Rows, TrainData, query_norm


def as_prefix(model, prefix: Float[Tensor, "*n_virtual d_model"]) -> Float[Tensor, "n_virtual d_model"]:
    """``prefix`` as ``[n_virtual, d_model]`` (a ``[d_model]`` vector is one virtual token); checks its size."""
    ad = adapt(model)
    p = prefix[None] if prefix.ndim == 1 else prefix
    if p.ndim != 2 or p.shape[-1] != ad.d_model or p.shape[0] < 1:
        raise ValueError(f"prefix must be [d_model] or [n_virtual, d_model] with d_model {ad.d_model}; "
                         f"got shape {tuple(prefix.shape)}")
    return p


def shift_batch(batch: Batch, n: int = 1, pad_id: int = 0) -> Batch:
    """The batch seen with ``n`` virtual tokens in front: positions, targets and lengths move by ``n``.

    Args:
        batch: the unshifted batch.
        n: the number of virtual tokens.
        pad_id: the token id placed at the virtual positions (never embedded).

    Returns:
        The shifted :class:`Batch` (the virtual positions have no targets).
    """
    b = len(batch)

    def pad(t: Tensor, v: int) -> Tensor:
        return torch.cat([torch.full((b, n), v, dtype=t.dtype, device=t.device), t], 1)

    return Batch(pad(batch.tokens, pad_id), batch.query_pos + n, batch.label_first, pad(batch.targets, -100),
                 batch.lengths + n)


def with_prefix(resid: Float[Tensor, "batch pos d_model"], prefix: Float[Tensor, "n_virtual d_model"]
                ) -> Float[Tensor, "batch n_virtual+pos d_model"]:
    """``[p; x]``: the virtual tokens prepended to every row of a block-0 residual stream."""
    p = prefix.to(resid.dtype)[None].expand(resid.shape[0], -1, -1)
    return torch.cat([p, resid], 1)


def run_with_prefix(model, tokens: Int[Tensor, "batch pos"], prefix: Float[Tensor, "*n_virtual d_model"]
                    ) -> Float[Tensor, "batch n_virtual+pos d_model"]:
    """Final residual stream (before the final norm) with ``prefix`` prepended at block 0.

    Args:
        model: a TransformerLens model or its adapter.
        tokens: the real tokens.
        prefix: ``[d_model]`` or ``[n_virtual, d_model]``.

    Returns:
        The final stream; position ``n_virtual + t`` is real token ``t``.
    """
    ad = adapt(model)
    p = as_prefix(ad, prefix)
    return ad.run_blocks(with_prefix(ad.residual(tokens.to(ad.device), 0), p.to(ad.device)), 0)


def prefix_query_logits(model, batch: Batch, prefix: Float[Tensor, "*n_virtual d_model"]
                        ) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query token (now at ``query_pos + n_virtual``)."""
    ad = adapt(model)
    n = as_prefix(ad, prefix).shape[0]
    final = run_with_prefix(ad, batch.tokens, prefix)
    return ad.unembed(final[torch.arange(len(batch), device=final.device), batch.query_pos.to(final.device) + n])


def evaluate_prefix(model, task: Task, queries: Sequence[Example], prefix: Float[Tensor, "*n_virtual d_model"], *,
                    scoring: str | None = None, batch_size: int = 16) -> EvalResult:
    """Zero-shot accuracy with the virtual tokens, scored as :func:`tvmech.analysis.evaluation.evaluate` scores.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task; ``scoring`` defaults to its own.
        queries: the examples to score (zero-shot prompts).
        prefix: the virtual tokens.
        batch_size: prompts per pass.

    Returns:
        The :class:`EvalResult` (k = 0).
    """
    ad = adapt(model)
    scoring = scoring or task.scoring
    if scoring not in SCORING_MODES:
        raise ValueError(f"scoring {scoring!r} is not valid; choose one of {SCORING_MODES}")
    n = as_prefix(ad, prefix).shape[0]
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


def prefix_objective(model, data: TrainData, lr: float, weight_decay: float = 0.01
                     ) -> tuple[Objective, dict[str, Tensor]]:
    """The prompt-tuning objective: one virtual token, started at the embedding of :func:`prefix_init_token`.

    Args:
        model: a TransformerLens model or its adapter.
        data: training data prepared at block 0 (unshifted; the shift happens per batch).
        lr: in units of the mean query residual norm at block 0.
        weight_decay: AdamW's decoupled weight decay.

    Returns:
        The :class:`Objective` (values: ``{"prefix": [1, d_model]}``) and its trainable leaves by name.
    """
    ad: Adapter = adapt(model)
    if data.start != 0:
        raise ValueError(f"prompt tuning needs training data prepared at block 0, got block {data.start}")
    with torch.no_grad():
        p = ad.residual(torch.tensor([[prefix_init_token(ad)]]), 0)[0].to(ad.device, ad.dtype).requires_grad_(True)
    lr_eff = lr * query_norm(ad, data, 0)

    def forward(rows: Rows) -> Tensor:  # [p; x] through every block
        return rows.run(resid=with_prefix(rows.resid, p))

    # the virtual token moves every real position: nothing to freeze (positions None)
    obj = Objective([[p]], [lr_eff], [weight_decay], LabelLoss(ad, forward, prepended=1),
                    lambda: [{"prefix": p.detach().clone()}], ["prefix"])
    return obj, {"prefix": p}


__all__ = ["as_prefix", "shift_batch", "with_prefix", "run_with_prefix", "prefix_query_logits", "evaluate_prefix",
           "prefix_init_token", "prefix_objective"]
