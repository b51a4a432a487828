"""Scoring prompts: first-token argmax, argmax within a closed label set, multi-token exact match.

Logits are computed only where they are scored: the final residual stream is gathered at the query
position (or at the label positions, for exact match) before the final norm and unembedding. Several
scorings of one batch come from one forward pass (:func:`predict_batch`, :func:`score_batch_multi`,
:func:`evaluate_prompts_multi`): ``first_token`` and ``label_set`` are argmaxes over the same query logits.
Every scoring function takes ``intervention=`` (an :class:`~tvmech.interventions.engine.Intervention`, e.g. a
:class:`~tvmech.interventions.task_vector.TaskVector`, or ``None``), placed at each batch's query and role
positions; the engine picks the path (:func:`tvmech.interventions.engine.residual`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from tvmech.core.adapter import Adapter, adapt
from tvmech.core.checks import check_fits_context, check_int
from tvmech.core.progress import tqdm
from tvmech.data.prompts import (
    Batch,
    Prompt,
    as_prompts,
    batches,
    encode,
    encode_text,
    label_ids,
    label_set_ids,
    make_prompts,
)
from tvmech.data.tasks import SCORING_MODES, Example, Task
from tvmech.interventions.engine import Intervention, residual
from tvmech.interventions.sites import Context


@dataclass
class EvalResult:
    """The accuracy of one scoring over a list of prompts, with each prompt's verdict and prediction."""

    task: str
    """The task's name."""
    k: int
    """Demonstrations per prompt."""
    scoring: str
    """The scoring mode (``first_token``, ``label_set`` or ``exact_match``)."""
    accuracy: float
    """The fraction of prompts scored correct."""
    n: int
    """The number of prompts."""
    correct: list[bool] = field(repr=False)
    """Each prompt's verdict, in the order of the prompts."""
    predictions: list[str] = field(repr=False)
    """Each prompt's predicted text (a decoded token, a label, or the greedy continuation)."""


def resolve_scoring(task: Task, scoring: str | None = None) -> str:
    """``scoring``, or the task's own when ``None``; raises if it is not a known scoring mode."""
    scoring = scoring or task.scoring
    if scoring not in SCORING_MODES:
        raise ValueError(f"scoring {scoring!r} is not valid; choose one of {SCORING_MODES}")
    return scoring


def default_scorings(task: Task) -> tuple[str, ...]:
    """The scorings an experiment reports by default: the task's own, plus ``first_token`` (the paper's
    full-vocabulary argmax) when the task's own is ``label_set``.

    Args:
        task: the task.

    Returns:
        ``("label_set", "first_token")`` for a label-set task, ``(task.scoring,)`` otherwise.
    """
    return (task.scoring, "first_token") if task.scoring == "label_set" else (task.scoring,)


def check_scorings(scorings: Sequence[str], what: str = "scorings") -> tuple[str, ...]:
    """``scorings`` as a tuple after checking that it is non-empty and each is a scoring mode.

    Args:
        scorings: scoring mode names.
        what: how the error message names them (a config field: ``"sweep scorings"``).

    Returns:
        The scorings, repeats dropped, in the order given.

    Raises:
        ValueError: naming the bad value(s) and the valid ones.
    """
    scorings = tuple(scorings)
    bad = [s for s in scorings if s not in SCORING_MODES]
    if bad or not scorings:
        raise ValueError(f"{what} {list(scorings)} is not valid: unknown {bad or '(none given)'}; "
                         f"valid: {list(SCORING_MODES)}")
    return tuple(dict.fromkeys(scorings))


def resolve_scorings(task: Task, scorings: Sequence[str] | None = None) -> tuple[str, ...]:
    """The scorings of ``task``'s accuracies: ``scorings`` (``label_set`` left out for a task without a
    closed label set), or :func:`default_scorings` when ``None``. The first is the primary one.

    Args:
        task: the task.
        scorings: scoring modes, or ``None``.

    Returns:
        At least one scoring mode.

    Raises:
        ValueError: an unknown mode, or nothing left for this task.
    """
    if scorings is None:
        return default_scorings(task)
    out = tuple(s for s in check_scorings(scorings) if s != "label_set" or task.labels)
    if not out:
        raise ValueError(f"task {task.name!r} has no closed label set: scorings {list(scorings)} leave nothing "
                         f"to score")
    return out


def check_context(model, task: Task, prompts: Sequence[Prompt], *, with_labels: bool = False,
                  what: str = "prompt") -> None:
    """Refuse prompts that do not fit the model's context (:attr:`Adapter.n_ctx`): they would be scored on
    positions the model was never trained on (or crash on learned position embeddings).

    Args:
        model: a loaded model or its adapter.
        task: the prompts' task (label tokenization).
        prompts: the prompts, as they will be encoded.
        with_labels: count the label tokens too (teacher forcing: exact-match scoring, training).
        what: how the message names a prompt.

    Raises:
        ValueError: naming the first prompt that is too long (its index and the start of its text), its
            token length and the context length.
    """
    prompts = as_prompts(prompts)
    ad = adapt(model)
    if ad.n_ctx is None:
        return
    lengths = [len(encode_text(ad.tokenizer, p.text)) + (len(label_ids(ad.tokenizer, task, p.label)) if with_labels
                                                         else 0) for p in prompts]
    check_fits_context([p.text for p in prompts], lengths, ad.n_ctx, what=what)


def _check_prompts(task: Task, prompts: Sequence[Prompt], batch_size: int) -> int:
    """``batch_size`` as an int, after checking it and that there is something to score."""
    if not as_prompts(prompts):
        raise ValueError(f"task {task.name!r}: nothing to score: the list of queries (prompts) is empty")
    return check_int(batch_size, "batch_size", minimum=1)


def final_residual(model, batch: Batch, intervention: Intervention | None = None
                   ) -> Float[Tensor, "batch seq d_model"]:
    """Final residual stream (before the final norm) of a batch, with ``intervention`` (e.g. a task vector) at
    the batch's query and role positions (:func:`tvmech.interventions.engine.residual` picks the path)."""
    ad = adapt(model)
    return residual(ad, batch.tokens, ad.n_layers, intervention=intervention, ctx=Context.of(batch))


def query_logits(model, batch: Batch, intervention: Intervention | None = None) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's query position."""
    ad = adapt(model)
    resid = final_residual(ad, batch.to(ad.device), intervention)
    rows = torch.arange(len(batch), device=resid.device)
    return ad.unembed(resid[rows, batch.query_pos.to(resid.device)])


def predict_batch(model, task: Task, batch: Batch, scorings: Sequence[str], intervention: Intervention | None = None
                  ) -> dict[str, tuple[Bool[Tensor, " batch"], Int[Tensor, " batch"]]]:
    """Per scoring, whether each row is correct and its predicted first token, all from ONE forward pass:
    ``first_token`` and ``label_set`` are argmaxes over the same query logits (over the whole vocabulary
    and over the label set's first tokens), ``exact_match`` reads the same pass at the label positions
    (the batch must then carry the labels).

    Args:
        model: a loaded model or its adapter.
        task: the batch's task (its label set for ``label_set``).
        batch: the encoded prompts.
        scorings: scoring modes.
        intervention: what the pass carries (e.g. a task vector), at the batch's query positions.

    Returns:
        Scoring -> ``(correct, predicted first token)``, both on the CPU, in the order of ``scorings``.
    """
    check_scorings(scorings)
    ad = adapt(model)
    batch = batch.to(ad.device)
    with torch.no_grad():
        return predict_from_final(ad, task, batch, final_residual(ad, batch, intervention), scorings)


def add_to_final(stream: Float[Tensor, "batch seq d_model"], positions: Int[Tensor, " batch"],
                 vectors: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "batch seq d_model"]:
    """A copy of a final residual stream with ``vectors`` (one per row, or one for all) added at each row's
    position: what an addition at ``blocks.{L-1}.hook_resid_post`` gives, without a forward pass (nothing
    after it reads other positions)."""
    out = stream.clone()
    out[torch.arange(len(out), device=out.device), positions.to(out.device)] += vectors.to(out.device, out.dtype)
    return out


def predict_from_final(model, task: Task, batch: Batch, resid: Float[Tensor, "batch seq d_model"],
                       scorings: Sequence[str]) -> dict[str, tuple[Bool[Tensor, " batch"], Int[Tensor, " batch"]]]:
    """:func:`predict_batch` from a final residual stream already computed (before the final norm): e.g. one
    row-block of a pass that ran several variants of ``batch`` stacked along the batch axis, or a clean
    stream with a vector added at the query (what a hook at ``blocks.{L-1}.hook_resid_post`` does).

    Args:
        model: a loaded model or its adapter.
        task: the batch's task.
        batch: the encoded prompts (on the model's device).
        resid: the batch's final residual stream.
        scorings: scoring modes.

    Returns:
        Scoring -> ``(correct, predicted first token)``, both on the CPU, in the order of ``scorings``.
    """
    scorings = check_scorings(scorings)
    ad = adapt(model)
    out = {}
    with torch.no_grad():
        rows = torch.arange(len(batch), device=resid.device)
        if any(s != "exact_match" for s in scorings):
            logits = ad.unembed(resid[rows, batch.query_pos])
            for s in scorings:
                if s == "label_set":
                    ids = torch.tensor(label_set_ids(ad.tokenizer, task), device=logits.device)
                    first = ids[logits[:, ids].argmax(-1)]
                elif s == "first_token":
                    first = logits.argmax(-1)
                else:
                    continue
                out[s] = ((first == batch.label_first).cpu(), first.cpu())
        if "exact_match" in scorings:
            mask = batch.label_mask
            pred_all = torch.full_like(batch.targets, -100)
            pred_all[mask] = ad.unembed(resid[mask]).argmax(-1)
            correct = ((pred_all == batch.targets) | ~mask).all(-1)
            out["exact_match"] = (correct.cpu(), pred_all[rows, batch.query_pos].cpu())
    return {s: out[s] for s in scorings}


def score_batch_multi(model, task: Task, batch: Batch, scorings: Sequence[str],
                      intervention: Intervention | None = None) -> dict[str, Bool[Tensor, " batch"]]:
    """Whether each row is correct under each of ``scorings``, from one forward pass (:func:`predict_batch`).

    Args:
        model: a loaded model or its adapter.
        task: the batch's task.
        batch: the encoded prompts (with labels when ``exact_match`` is among ``scorings``).
        scorings: scoring modes.
        intervention: what the pass carries, or ``None``.

    Returns:
        Scoring -> ``[batch]`` booleans (CPU).
    """
    return {s: ok for s, (ok, _) in predict_batch(model, task, batch, scorings, intervention).items()}


def score_batch(model, task: Task, batch: Batch, scoring: str,
                intervention: Intervention | None = None) -> tuple[Bool[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Whether each row is correct under ``scoring``, and the predicted first token."""
    return predict_batch(model, task, batch, (scoring,), intervention)[scoring]


def evaluate_prompts_multi(model, task: Task, prompts: Sequence[Prompt], scorings: Sequence[str], *,
                           batch_size: int = 16, intervention: Intervention | None = None,
                           progress: bool = True) -> dict[str, EvalResult]:
    """Accuracy of ``model`` on ready-made prompts under each of ``scorings``, one forward pass per batch.

    Args:
        model: a loaded model or its adapter.
        task: the prompts' task.
        prompts: the prompts: at least one, each within the model's context (:func:`check_context`).
        scorings: scoring modes (checked, repeats dropped).
        batch_size: prompts per forward pass.
        intervention: what every pass carries (e.g. a task vector), at each batch's query positions.
        progress: show a progress bar.

    Returns:
        Scoring -> its :class:`EvalResult`, in the order of ``scorings``.

    Raises:
        ValueError: no prompts (an accuracy would be NaN), ``batch_size < 1``, or a prompt longer than the
            model's context (the message names it, its token length and the context length).
    """
    scorings = check_scorings(scorings)
    batch_size = _check_prompts(task, prompts, batch_size)
    ad = adapt(model)
    check_context(ad, task, prompts, with_labels="exact_match" in scorings)
    correct = {s: [False] * len(prompts) for s in scorings}
    preds = {s: [""] * len(prompts) for s in scorings}
    it = batches(ad.tokenizer, task, prompts, batch_size, with_labels="exact_match" in scorings)
    k = prompts[0].k
    for idx, batch in tqdm(it, total=-(-len(prompts) // batch_size), desc=f"{task.name} k={k}",
                           disable=not progress, leave=False):
        for s, (ok, first) in predict_batch(ad, task, batch, scorings, intervention).items():
            for j, i in enumerate(idx):
                correct[s][i] = bool(ok[j])
                preds[s][i] = ad.tokenizer.decode([int(first[j])])
    return {s: EvalResult(task.name, k, s, sum(c) / len(c), len(c), c, preds[s])
            for s, c in correct.items()}


def evaluate_prompts(model, task: Task, prompts: Sequence[Prompt], *, scoring: str | None = None,
                     batch_size: int = 16, intervention: Intervention | None = None, progress: bool = True
                     ) -> EvalResult:
    """Accuracy of ``model`` on ready-made prompts (``scoring``: default the task's)."""
    scoring = resolve_scoring(task, scoring)
    return evaluate_prompts_multi(model, task, prompts, (scoring,), batch_size=batch_size,
                                  intervention=intervention, progress=progress)[scoring]


def evaluate(model, task: Task, queries: Sequence[Example], k: int = 0, demos: Sequence[Example] = (), *,
             seed: int = 0, scoring: str | None = None, batch_size: int = 16,
             intervention: Intervention | None = None, progress: bool = True) -> EvalResult:
    """Zero-shot (``k=0``) or ``k``-shot accuracy on ``queries``, demonstrations drawn from ``demos``, with
    ``intervention`` (e.g. ``intervention=task_vector``) in every pass at each prompt's query."""
    prompts = make_prompts(task, queries, k, demos, seed=seed)
    return evaluate_prompts(model, task, prompts, scoring=scoring, batch_size=batch_size,
                            intervention=intervention, progress=progress)


def evaluate_multi(model, task: Task, queries: Sequence[Example], k: int = 0, demos: Sequence[Example] = (), *,
                   scorings: Sequence[str], seed: int = 0, batch_size: int = 16,
                   intervention: Intervention | None = None, progress: bool = True) -> dict[str, EvalResult]:
    """:func:`evaluate` under each of ``scorings``, from the same forward passes.

    Args:
        model: a loaded model or its adapter.
        task: the task.
        queries: the test queries.
        k: demonstrations per prompt.
        demos: where the demonstrations are drawn from.
        scorings: scoring modes.
        seed: seed of the demonstrations.
        batch_size: prompts per forward pass.
        intervention: what every pass carries (e.g. a task vector), at each batch's query positions.
        progress: show a progress bar.

    Returns:
        Scoring -> its :class:`EvalResult`.
    """
    prompts = make_prompts(task, queries, k, demos, seed=seed)
    return evaluate_prompts_multi(model, task, prompts, scorings, batch_size=batch_size, intervention=intervention,
                                  progress=progress)


def last_logprobs(model, task: Task, prompts: Sequence[Prompt]) -> Float[Tensor, "n d_vocab"]:
    """Log-probabilities at each prompt's query position, in the order given (one padded batch).

    Args:
        model: a loaded model or its adapter.
        task: the prompts' task.
        prompts: at least one prompt, each within the model's context.

    Returns:
        ``[n, d_vocab]`` log-probabilities (float32, CPU).
    """
    _check_prompts(task, prompts, 1)
    check_context(model, task, prompts)
    batch = encode(adapt(model).tokenizer, task, prompts)
    with torch.no_grad():
        return torch.log_softmax(query_logits(model, batch).float(), -1).cpu()


__all__ = ["EvalResult", "evaluate", "evaluate_multi", "evaluate_prompts", "evaluate_prompts_multi", "score_batch",
           "score_batch_multi", "predict_batch", "predict_from_final", "add_to_final", "query_logits", "final_residual",
           "resolve_scoring",
           "resolve_scorings", "default_scorings", "check_scorings", "check_context", "last_logprobs", "Adapter"]
