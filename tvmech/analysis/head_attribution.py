"""Head attribution on task-vector-injected prompts: Taylor scores, exact ablation, key heads.

Scores. On zero-shot prompts with θ injected, let ``p`` be the probability of the correct label's first
token and ``a_{l,h} = z_{l,h}[q] W_O[l, h]`` head h's output at the query position ``q`` (``z`` =
``attn.hook_z``, its attention-weighted values), ``a_θ`` in the run with θ and ``a_clean`` in the same run
without θ. The gradient ``∂p/∂a`` is always taken in the θ run. Two scores (``score=``):

* ``"tv_reliance"`` (default): ``mean over prompts of |(a_θ − a_clean) · ∂p/∂a|``, the first-order effect on
  ``p`` of the part of the head's output that θ put there. A head whose output does not depend on θ (every
  head below the injection layer) scores exactly 0;
* ``"paper"``: ``mean over prompts of |a_θ · ∂p/∂a|``, the first-order estimate of zero-ablating the head,
  which also scores heads the prediction relies on whatever θ is.

Both come from one forward and one backward pass (plus, for ``tv_reliance``, one clean forward pass).
Since ``p`` depends on ``z_{l,h}[q]`` only through ``a_{l,h} = z W_O`` (linear),
``(a_θ − a_clean) · ∂p/∂a = (z_θ − z_clean)[q] · ∂p/∂z[q]`` exactly, which is how they are computed. On blocks
with a post-attention norm (Gemma, OLMo-2: :mod:`tvmech.core.anatomy`) ``a`` is the head's output before that
norm, which the gradient passes through; the scores are the same first-order estimates of the interventions on
``z`` below, on every architecture.

Exact interventions at the query position ``q`` (θ injected as usual; ``Δp = p − p_patched`` per prompt):

* ``"revert"``: head h's ``z[q]`` set to its clean value, per prompt the ``z[q]`` of the same prompt's run
  without θ (:func:`clean_query_z`). This is the intervention ``tv_reliance`` estimates to first order:
  ``p(z_clean) ≈ p(z_θ) + (z_clean − z_θ)·∂p/∂z``, so ``Δp ≈ (z_θ − z_clean)·∂p/∂z`` with an error of second
  order in ``z_θ − z_clean`` (tested: the ratio tends to 1 as θ → 0). A head below the injection layer has
  ``Δp = 0`` exactly;
* ``"zero"``: ``z[q] = 0``, the intervention ``paper`` estimates (``p(0) ≈ p(z_θ) − z_θ·∂p/∂z``);
* ``"mean"``: ``z[q]`` set to its mean (:func:`tvmech.methods.function_vectors.mean_head_z`: the mean of ``z[q]``
  over zero-shot prompts *without* θ, so that a head's θ-specific contribution is removed but its usual output
  kept); no score estimates it.

Only the query position is patched: that is where θ sits and where the answer is read.

Taylor vs exact. Over a set of heads (those at or above the injection layer), each score against the mean
``|Δp|`` of an exact intervention (its own: ``tv_reliance`` vs ``revert``, ``paper`` vs ``zero``): the Spearman
correlation and ``precision@k = |top_k(score) ∩ top_k(exact)| / k`` with ``k = round(frac · n)``
(:func:`precision_at_k`).

Key heads: the top ``frac`` (default 10%) of all heads by score. Comparison sets of the same size
(seeded; set ``i`` depends only on ``seed + i``), disjoint from the key set, either drawn from all other
heads (:func:`random_head_sets`) or *layer-matched* (:func:`layer_matched_sets`: as many heads in each layer
as the key set has there, drawn among that layer's other heads). The sets and rank statistics live in
:mod:`tvmech.analysis.head_sets` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.evaluation import EvalResult, check_context, check_scorings, predict_from_final
from tvmech.analysis.head_sets import (
    Head,
    heads_from_layer,
    layer_histogram,
    layer_matched_sets,
    mean_std,
    n_key,
    precision_at_k,
    random_head_sets,
    spearman,
)
from tvmech.analysis.head_verdicts import ESTIMATES  # the exact intervention each score estimates
from tvmech.analysis.ov import check_head, single_site
from tvmech.core.adapter import adapt
from tvmech.core.progress import tqdm
from tvmech.data.prompts import Batch, Prompt, batches, encode, make_prompts
from tvmech.data.tasks import Example, Task
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import Intervention, compose, residual, run_blocks
from tvmech.interventions.head_patch import HeadPatch
from tvmech.interventions.task_vector import TaskVector

AblationKind = Literal["zero", "mean", "revert"]
EXACT_KINDS: tuple[str, ...] = get_args(AblationKind)  # every exact intervention of a head
KINDS: tuple[str, ...] = ("zero", "mean")  # those of the key-vs-random ablation tables
Score = Literal["tv_reliance", "paper"]
SCORES: tuple[str, ...] = get_args(Score)


@dataclass
class HeadScores:
    """Taylor scores of every head (``[n_layers, n_heads]``) on ``n`` θ-injected prompts.

    ``taylor`` holds the score named by ``score`` (see the module docstring); ``signed`` its signed mean.
    """

    taylor: Float[Tensor, "n_layers n_heads"]  # mean |(a_θ − a_clean) · ∂p/∂a| or mean |a_θ · ∂p/∂a|
    signed: Float[Tensor, "n_layers n_heads"]  # the same without the absolute value
    p: float
    """The mean probability of the correct first token with θ."""
    n: int
    score: Score = "tv_reliance"

    def ranking(self) -> list[Head]:
        """All heads, highest score first."""
        order = self.taylor.flatten().argsort(descending=True, stable=True)
        H = self.taylor.shape[1]
        return [(int(i) // H, int(i) % H) for i in order]


def check_heads(model, heads: Sequence[Head], *, allow_empty: bool = False) -> list[Head]:
    """Validate ``(layer, head)`` pairs (range, no repeats); an empty set raises unless allowed."""
    heads = [tuple(h) for h in heads]
    if not heads and not allow_empty:
        raise ValueError("the head set is empty: an ablation set needs at least one (layer, head)")
    for layer, head in heads:
        check_head(model, layer, head)
    if len(set(heads)) != len(heads):
        raise ValueError(f"heads {heads} contain repeats")
    return heads


def prompt_batch(model, task: Task, prompts: Sequence[Prompt]) -> Batch:
    """``prompts`` as one right-padded batch on the model's device.

    Args:
        model: a TransformerLens model or its adapter.
        task: the prompts' task.
        prompts: at least one prompt.

    Returns:
        The encoded batch.
    """
    ad = adapt(model)
    if not prompts:
        raise ValueError(f"task {task.name!r}: no prompts")
    return encode(ad.tokenizer, task, prompts).to(ad.device)


def check_score(score: str) -> str:
    """``score`` if it is a head score; a clear error otherwise."""
    if score not in SCORES:
        raise ValueError(f"head score {score!r} is not valid; choose one of {SCORES}")
    return score


def taylor_scores(model, vec: TaskVector, task: Task, prompts: Sequence[Prompt], *,
                  score: Score = "tv_reliance") -> HeadScores:
    """Head scores at the query position (see the module docstring) over all ``prompts`` (zero-shot
    prompts; θ is added as ``vec`` says), the gradient from one forward and backward pass with θ.

    Args:
        model: a TransformerLens model or its adapter.
        vec: a single-site task vector.
        task: the prompts' task.
        prompts: at least one prompt.
        score: ``"tv_reliance"`` (``|(a_θ − a_clean) · ∂p/∂a|``) or ``"paper"`` (``|a_θ · ∂p/∂a|``).

    Returns:
        The :class:`HeadScores` (``score`` recorded).
    """
    check_score(score)
    ad = adapt(model)
    single_site(ad, vec)
    batch = prompt_batch(ad, task, prompts)
    rows, q = torch.arange(len(batch), device=ad.device), batch.query_pos
    sites = [(l, "z") for l in range(ad.n_layers)]
    with torch.no_grad():
        h0 = ad.residual(batch.tokens, 0)  # embeddings, computed outside the hooks
        clean = Capture(sites)
        if score == "tv_reliance":  # the same blocks on the same input, without θ
            run_blocks(ad, h0, 0, intervention=clean, ctx=q)
    # the whole z of every block, in the graph: the tensors the pass goes on with, so gradients reach them
    keep = Capture(sites, detach=False)
    with torch.enable_grad():
        final = run_blocks(ad, h0.detach().requires_grad_(True), 0, intervention=vec.injection + keep, ctx=q)
        p = torch.softmax(ad.unembed(final[rows, q]).float(), -1)[rows, batch.label_first]
        zs = [keep[l, "z"] for l in range(ad.n_layers)]
        grads = torch.autograd.grad(p.sum(), zs)
    with torch.no_grad():
        if score == "tv_reliance":
            zs = [z - clean[l, "z"] for l, z in enumerate(zs)]
        dot = torch.stack([(z[rows, q] * g[rows, q]).sum(-1) for z, g in zip(zs, grads)])  # [L, B, H]
    return HeadScores(dot.abs().mean(1).float().cpu(), dot.mean(1).float().cpu(), float(p.detach().mean()),
                      len(batch), score)


def clean_query_z(model, task: Task, prompts: Sequence[Prompt]) -> Float[Tensor, "n_layers batch n_heads d_head"]:
    """Every head's ``z`` at each prompt's query in the run without θ (what ``"revert"`` writes back).

    Args:
        model: a TransformerLens model or its adapter.
        task: the prompts' task.
        prompts: at least one prompt, one batch (rows in the order given).

    Returns:
        ``z[l, b, h]``, read with a :class:`~tvmech.interventions.capture.Capture` of ``z`` at every layer.
    """
    ad = adapt(model)
    batch = prompt_batch(ad, task, prompts)
    capture = Capture([(layer, "z") for layer in range(ad.n_layers)], positions=(-1,))
    with torch.no_grad():
        run_blocks(ad, ad.residual(batch.tokens, 0), 0, intervention=capture, ctx=batch.query_pos)
    return torch.stack([capture[layer, "z"][:, 0] for layer in range(ad.n_layers)])


def ablation(model, heads: Sequence[Head], *, kind: AblationKind = "zero",
             means: Float[Tensor, "n_layers n_heads d_head"] | None = None,
             clean: Float[Tensor, "n_layers batch n_heads d_head"] | None = None,
             rows: tuple[int, int] | None = None) -> Intervention:
    """One :class:`~tvmech.interventions.head_patch.HeadPatch` per layer, together setting ``z[q]`` of each head in
    ``heads`` to 0 (``"zero"``), to ``means[l, h]`` (``"mean"``) or, row by row, to ``clean[l, b, h]``
    (``"revert"``).

    Args:
        model: a TransformerLens model or its adapter.
        heads: ``(layer, head)`` pairs, no repeats.
        kind: ``"zero"``, ``"mean"`` or ``"revert"``.
        means: ``[n_layers, n_heads, d_head]`` mean ``z`` (mean ablation only).
        clean: ``[n_layers, batch, n_heads, d_head]`` clean ``z`` per row (:func:`clean_query_z`; revert only;
            ``batch`` = the rows the patch covers).
        rows: ``(start, stop)``: only these rows of the batch (``None``: every row).

    Returns:
        The ablation, an intervention to attach at the batch's query positions (``ctx=batch.query_pos``).
    """
    ad = adapt(model)
    heads = check_heads(ad, heads)
    check_ablation(ad, kind, means, clean)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    values = {"zero": lambda l: None, "mean": lambda l: means[l], "revert": lambda l: clean[l]}[kind]
    return compose([HeadPatch(l, hs, values(l), rows=rows) for l, hs in by_layer.items()])


def check_ablation(model, kind: str, means: Tensor | None, clean: Tensor | None = None) -> None:
    """Raise unless ``kind`` is an exact intervention and its values fit: for ``"mean"``, ``means`` is
    ``[n_layers, n_heads, d_head]``; for ``"revert"``, ``clean`` is ``[n_layers, batch, n_heads, d_head]``."""
    ad = adapt(model)
    if kind not in EXACT_KINDS:
        raise ValueError(f"ablation kind {kind!r} is not valid; choose one of {EXACT_KINDS}")
    if kind == "mean" and (means is None or tuple(means.shape) != (ad.n_layers, ad.n_heads, ad.d_head)):
        raise ValueError(f"mean ablation needs means of shape {(ad.n_layers, ad.n_heads, ad.d_head)}, got "
                         f"{None if means is None else tuple(means.shape)}")
    if kind == "revert" and (clean is None or clean.ndim != 4
                             or (clean.shape[0], *clean.shape[2:]) != (ad.n_layers, ad.n_heads, ad.d_head)):
        raise ValueError(f"revert needs clean z of shape ({ad.n_layers}, batch, {ad.n_heads}, {ad.d_head}) "
                         f"(clean_query_z), got {None if clean is None else tuple(clean.shape)}")


def ablation_effects(model, vec: TaskVector, task: Task, prompts: Sequence[Prompt], heads: Sequence[Head], *,
                     kind: AblationKind = "zero", means: Tensor | None = None, clean: Tensor | None = None,
                     progress: bool = True) -> Float[Tensor, "n_sel n_prompts"]:
    """``Δp = p − p_patched`` for each head of ``heads`` patched alone (``kind``: zero, mean or revert), per
    prompt (θ injected throughout).

    Heads of one layer are patched together in one batched pass (one batch replica per head), run from
    that layer's input only. ``clean`` (revert only) defaults to :func:`clean_query_z` of ``prompts``.
    """
    ad = adapt(model)
    single_site(ad, vec)
    heads = check_heads(ad, heads)
    if kind == "revert" and clean is None:
        clean = clean_query_z(ad, task, prompts)
    ablation(ad, heads, kind=kind, means=means, clean=clean).writes(ad)  # validate early
    batch = prompt_batch(ad, task, prompts)
    B, rows = len(batch), torch.arange(len(batch), device=ad.device)
    if kind == "revert" and clean.shape[1] != B:
        raise ValueError(f"clean z has {clean.shape[1]} rows for {B} prompts")
    out = torch.zeros(len(heads), B)
    # the input of each block in the θ-run, recorded before the injection (the injected block's: without θ)
    inputs = Capture([(l, "resid_pre") for l in range(ad.n_layers)])
    with torch.no_grad():
        h = residual(ad, batch.tokens, ad.n_layers, intervention=inputs + vec.injection, ctx=batch.query_pos)
        p = torch.softmax(ad.unembed(h[rows, batch.query_pos]).float(), -1)[rows, batch.label_first]
        layers = sorted({l for l, _ in heads})
        for layer in tqdm(layers, desc=f"exact {kind} {task.name}", disable=not progress, leave=False):
            idx = [i for i, (l, _) in enumerate(heads) if l == layer]
            K = len(idx)
            rep = Batch(*(t.repeat(K, *[1] * (t.ndim - 1)) for t in
                          (batch.tokens, batch.query_pos, batch.label_first, batch.targets, batch.lengths)))
            hs = torch.tensor([heads[i][1] for i in idx], device=ad.device).repeat_interleave(B)
            rr = torch.arange(K * B, device=ad.device)
            values = {"zero": None, "mean": means[layer] if means is not None else None,
                      "revert": clean[layer].repeat(K, 1, 1) if clean is not None else None}[kind]
            patch = HeadPatch(layer, hs, values, per_row=True)  # heads[r] in row r
            fin = run_blocks(ad, inputs[layer, "resid_pre"].repeat(K, 1, 1), layer, intervention=vec.injection + patch,
                             ctx=rep.query_pos)
            pa = torch.softmax(ad.unembed(fin[rr, rep.query_pos]).float(), -1)[rr, rep.label_first]
            out[idx] = (p.repeat(K) - pa).view(K, B).cpu()
    return out


def key_heads(scores: HeadScores, frac: float = 0.1) -> list[Head]:
    """The top ``frac`` of all heads by Taylor score (at least one), highest first."""
    return scores.ranking()[: n_key(scores.taylor.numel(), frac)]


def ablated_accuracies(model, vec: TaskVector, task: Task, queries: Sequence[Example], heads: Sequence[Head], *,
                       scorings: Sequence[str], kind: AblationKind = "zero", means: Tensor | None = None,
                       batch_size: int = 16, progress: bool = True) -> dict[str, EvalResult]:
    """Zero-shot + θ accuracy with ``heads`` ablated at the query position, under each of ``scorings`` from
    the same forward passes (:func:`ablated_accuracies_many` with one ablation).

    Args:
        model: a TransformerLens model or its adapter.
        vec: the task vector injected.
        task: the task.
        queries: the test queries.
        heads: the ablated heads.
        scorings: scoring modes.
        kind: ``"zero"`` or ``"mean"``.
        means: mean ``z`` for mean ablation.
        batch_size: prompts per forward pass.
        progress: show a bar over the batches.

    Returns:
        Scoring -> its :class:`~tvmech.analysis.evaluation.EvalResult`.
    """
    return ablated_accuracies_many(model, vec, task, queries, [(heads, kind)], scorings=scorings, means=means,
                                   batch_size=batch_size, progress=progress)[0]


def ablated_accuracies_many(model, vec: TaskVector, task: Task, queries: Sequence[Example],
                            ablations: Sequence[tuple[Sequence[Head], AblationKind]], *, scorings: Sequence[str],
                            means: Tensor | None = None, batch_size: int = 16, max_rows: int = 512,
                            progress: bool = True) -> list[dict[str, EvalResult]]:
    """:func:`ablated_accuracies` of several ablations ``(heads, kind)``, stacked: each batch of queries is
    repeated once per ablation along the batch axis, each ablation's head patches restricted to its rows
    (``HeadPatch(rows=...)``), θ injected in every row, up to ``max_rows`` rows per forward pass.

    Returns:
        Per ablation, in order: scoring -> its :class:`~tvmech.analysis.evaluation.EvalResult`.
    """
    ad = adapt(model)
    vec.check_model(ad)
    scorings = check_scorings(scorings)
    for heads, kind in ablations:  # validate before any forward pass
        ablation(ad, heads, kind=kind, means=means).writes(ad)
    prompts = make_prompts(task, queries, 0)
    if not prompts:
        raise ValueError(f"task {task.name!r}: no queries to evaluate")
    check_context(ad, task, prompts, with_labels="exact_match" in scorings)
    n, per_pass = len(prompts), max(1, max_rows // batch_size)
    correct = [{s: [False] * n for s in scorings} for _ in ablations]
    preds = [{s: [""] * n for s in scorings} for _ in ablations]
    it = batches(ad.tokenizer, task, prompts, batch_size, with_labels="exact_match" in scorings)
    for idx, batch in tqdm(it, total=-(-n // batch_size), desc=f"{len(ablations)} ablations {task.name}",
                           disable=not progress, leave=False):
        batch, B = batch.to(ad.device), len(idx)
        for j0 in range(0, len(ablations), per_pass):
            chunk = list(range(j0, min(len(ablations), j0 + per_pass)))
            both = compose([vec.injection] + [ablation(ad, ablations[j][0], kind=ablations[j][1], means=means,
                                                       rows=(i * B, (i + 1) * B)) for i, j in enumerate(chunk)])
            with torch.no_grad():
                stream = residual(ad, batch.tokens.repeat(len(chunk), 1), ad.n_layers, intervention=both,
                                  ctx=batch.query_pos.repeat(len(chunk)))
            for i, j in enumerate(chunk):
                for s, (ok, first) in predict_from_final(ad, task, batch, stream[i * B:(i + 1) * B], scorings).items():
                    for k, row in enumerate(idx):
                        correct[j][s][row] = bool(ok[k])
                        preds[j][s][row] = ad.tokenizer.decode([int(first[k])])
    return [{s: EvalResult(task.name, 0, s, sum(c[s]) / n, n, c[s], p[s]) for s in scorings}
            for c, p in zip(correct, preds)]


def ablated_accuracy(model, vec: TaskVector, task: Task, queries: Sequence[Example], heads: Sequence[Head], *,
                     kind: AblationKind = "zero", means: Tensor | None = None, batch_size: int = 16,
                     progress: bool = True) -> EvalResult:
    """:func:`ablated_accuracies` under the task's own scoring."""
    return ablated_accuracies(model, vec, task, queries, heads, scorings=(task.scoring,), kind=kind, means=means,
                              batch_size=batch_size, progress=progress)[task.scoring]


__all__ = ["Head", "HeadScores", "KINDS", "EXACT_KINDS", "ESTIMATES", "AblationKind", "clean_query_z",
           "check_heads", "prompt_batch", "taylor_scores", "ablation", "check_ablation",
           "ablation_effects", "spearman", "n_key", "key_heads", "random_head_sets", "layer_matched_sets",
           "heads_from_layer", "precision_at_k", "ablated_accuracy", "ablated_accuracies", "Score", "SCORES",
           "check_score", "layer_histogram", "mean_std"]
