"""Scoring prompts: first-token argmax, argmax within a closed label set, multi-token exact match.

Logits are computed only where they are scored: the final residual stream is gathered at the query
position (or at the label positions, for exact match) before the final norm and unembedding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tvmech.core.adapter import Adapter, HookFn, adapt
from tvmech.data.prompts import Batch, Prompt, batches, encode, label_set_ids, make_prompts
from tvmech.data.tasks import SCORING_MODES, Example, Task

HooksFor = Callable[[Batch], Sequence[tuple[str, HookFn]]]


@dataclass
class EvalResult:
    task: str
    k: int
    scoring: str
    accuracy: float
    n: int
    correct: list[bool] = field(repr=False)
    predictions: list[str] = field(repr=False)


def resolve_scoring(task: Task, scoring: str | None = None) -> str:
    """``scoring``, or the task's own when ``None``; raises if it is not a known scoring mode."""
    scoring = scoring or task.scoring
    if scoring not in SCORING_MODES:
        raise ValueError(f"scoring {scoring!r} is not valid; choose one of {SCORING_MODES}")
    return scoring


def final_residual(model, batch: Batch, hooks_for: HooksFor | None = None) -> Float[Tensor, "batch seq d_model"]:
    """Final residual stream (before the final norm) of a batch, with optional batch-aware hooks."""
    ad = adapt(model)
    hooks = list(hooks_for(batch)) if hooks_for else []
    with ad.hooks(hooks):
        return ad.residual(batch.tokens, ad.n_layers)


def query_logits(model, batch: Batch, hooks_for: HooksFor | None = None) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query position."""
    ad = adapt(model)
    resid = final_residual(ad, batch.to(ad.device), hooks_for)
    rows = torch.arange(len(batch), device=resid.device)
    return ad.unembed(resid[rows, batch.query_pos.to(resid.device)])


def score_batch(model, task: Task, batch: Batch, scoring: str,
                hooks_for: HooksFor | None = None) -> tuple[Bool[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Whether each row is correct under ``scoring``, and the predicted first token."""
    ad = adapt(model)
    batch = batch.to(ad.device)
    with torch.no_grad():
        if scoring == "exact_match":
            resid = final_residual(ad, batch, hooks_for)
            mask = batch.label_mask
            pred_all = torch.full_like(batch.targets, -100)
            pred_all[mask] = ad.unembed(resid[mask]).argmax(-1)
            correct = ((pred_all == batch.targets) | ~mask).all(-1)
            first = pred_all[torch.arange(len(batch)), batch.query_pos]
            return correct.cpu(), first.cpu()
        logits = query_logits(ad, batch, hooks_for)
        if scoring == "label_set":
            ids = torch.tensor(label_set_ids(ad.tokenizer, task), device=logits.device)
            first = ids[logits[:, ids].argmax(-1)]
        else:
            first = logits.argmax(-1)
        return (first == batch.label_first).cpu(), first.cpu()


def evaluate_prompts(model, task: Task, prompts: Sequence[Prompt], *, scoring: str | None = None,
                     batch_size: int = 16, hooks_for: HooksFor | None = None, progress: bool = False) -> EvalResult:
    """Accuracy of ``model`` on ready-made prompts."""
    scoring = resolve_scoring(task, scoring)
    ad = adapt(model)
    correct = [False] * len(prompts)
    preds = [""] * len(prompts)
    it = batches(ad.tokenizer, task, prompts, batch_size, with_labels=scoring == "exact_match")
    n_batches = -(-len(prompts) // batch_size)
    for idx, batch in tqdm(it, total=n_batches, desc=f"{task.name} k={prompts[0].k if prompts else 0}",
                           disable=not progress, leave=False):
        ok, first = score_batch(ad, task, batch, scoring, hooks_for)
        for j, i in enumerate(idx):
            correct[i] = bool(ok[j])
            preds[i] = ad.tokenizer.decode([int(first[j])])
    k = prompts[0].k if prompts else 0
    acc = sum(correct) / len(correct) if correct else float("nan")
    return EvalResult(task.name, k, scoring, acc, len(correct), correct, preds)


def evaluate(model, task: Task, queries: Sequence[Example], k: int = 0, demos: Sequence[Example] = (), *,
             seed: int = 0, scoring: str | None = None, batch_size: int = 16,
             hooks_for: HooksFor | None = None, progress: bool = False) -> EvalResult:
    """Zero-shot (``k=0``) or ``k``-shot accuracy on ``queries``, demonstrations drawn from ``demos``."""
    prompts = make_prompts(task, queries, k, demos, seed=seed)
    return evaluate_prompts(model, task, prompts, scoring=scoring, batch_size=batch_size,
                            hooks_for=hooks_for, progress=progress)


def last_logprobs(model, task: Task, prompts: Sequence[Prompt]) -> Float[Tensor, "n d_vocab"]:
    """Log-probabilities at each prompt's query position, in the order given (one padded batch)."""
    batch = encode(adapt(model).tokenizer, task, prompts)
    with torch.no_grad():
        return torch.log_softmax(query_logits(model, batch).float(), -1).cpu()


__all__ = ["EvalResult", "evaluate", "evaluate_prompts", "score_batch", "query_logits", "final_residual",
           "resolve_scoring", "last_logprobs", "Adapter"]
