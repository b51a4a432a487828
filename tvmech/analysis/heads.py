"""Head attribution on task-vector-injected prompts: Taylor scores, exact ablation, key heads.

Taylor score. On zero-shot prompts with θ injected, let ``p`` be the probability of the correct label's
first token and ``a_{l,h} = z_{l,h}[q] W_O[l, h]`` head h's output at the query position ``q`` (``z`` =
``attn.hook_z``, its attention-weighted values). The first-order estimate of what zero-ablating the head
changes is ``a · ∂p/∂a``; the score is ``mean over prompts of |a · ∂p/∂a|``, for all heads from one forward
and one backward pass. Since ``p`` depends on ``z_{l,h}[q]`` only through ``a_{l,h}``,
``a · ∂p/∂a = z[q] · ∂p/∂z[q]`` exactly, which is how it is computed (gradients at ``hook_z``).

Exact ablation. Head h's ``z[q]`` is set to 0 (zero ablation) or to its mean (mean ablation, see
:func:`tvmech.methods.function_vectors.mean_head_z`: the mean of ``z[q]`` over zero-shot prompts *without* θ, so
that a head's θ-specific contribution is removed but its usual output kept); ``Δp = p − p_ablated`` per
prompt. Only the query position is ablated: that is where θ sits and where the answer is read.

Key heads: the top ``frac`` (default 10%) of all heads by Taylor score; random sets of the same size are
drawn (seeded) from the other heads.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tvmech.analysis.evaluation import EvalResult, evaluate
from tvmech.analysis.ov import check_head, single_site
from tvmech.core.adapter import HookFn, adapt
from tvmech.data.prompts import Batch, Prompt, encode
from tvmech.data.tasks import Example, Task
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import Intervention, compose
from tvmech.interventions.heads import HeadPatch
from tvmech.interventions.task_vector import TaskVector

Head = tuple[int, int]
AblationKind = Literal["zero", "mean"]
KINDS: tuple[str, ...] = get_args(AblationKind)


@dataclass
class HeadScores:
    """Taylor scores of every head (``[n_layers, n_heads]``) on ``n`` θ-injected prompts."""

    taylor: Float[Tensor, "n_layers n_heads"]  # mean |a · ∂p/∂a|
    signed: Float[Tensor, "n_layers n_heads"]  # mean a · ∂p/∂a
    p: float  # mean probability of the correct first token with θ
    n: int

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


def taylor_scores(model, vec: TaskVector, task: Task, prompts: Sequence[Prompt]) -> HeadScores:
    """``|a · ∂p/∂a|`` of every head at the query position, from one forward and one backward pass over
    all ``prompts`` (zero-shot prompts; θ is added as ``vec`` says)."""
    ad = adapt(model)
    single_site(ad, vec)
    batch = prompt_batch(ad, task, prompts)
    rows, q = torch.arange(len(batch), device=ad.device), batch.query_pos
    # the whole z of every block, in the graph: the tensors the pass goes on with, so gradients reach them
    keep = Capture([(l, "z") for l in range(ad.n_layers)], detach=False)
    with torch.no_grad():
        h0 = ad.residual(batch.tokens, 0)  # embeddings, computed outside the hooks
    with torch.enable_grad(), (vec.injection + keep).apply(ad, q):
        final = ad.run_blocks(h0.detach().requires_grad_(True), 0)
        p = torch.softmax(ad.unembed(final[rows, q]).float(), -1)[rows, batch.label_first]
        zs = [keep[l, "z"] for l in range(ad.n_layers)]
        grads = torch.autograd.grad(p.sum(), zs)
    with torch.no_grad():
        dot = torch.stack([(z[rows, q] * g[rows, q]).sum(-1) for z, g in zip(zs, grads)])  # [L, B, H]
    return HeadScores(dot.abs().mean(1).float().cpu(), dot.mean(1).float().cpu(), float(p.detach().mean()), len(batch))


def ablation(model, heads: Sequence[Head], *, kind: AblationKind = "zero",
             means: Float[Tensor, "n_layers n_heads d_head"] | None = None) -> Intervention:
    """One :class:`~tvmech.interventions.heads.HeadPatch` per layer, together setting ``z[q]`` of each head in
    ``heads`` to 0 (``"zero"``) or to ``means[l, h]`` (``"mean"``).

    Args:
        model: a TransformerLens model or its adapter.
        heads: ``(layer, head)`` pairs, no repeats.
        kind: ``"zero"`` or ``"mean"``.
        means: ``[n_layers, n_heads, d_head]`` mean ``z`` (mean ablation only).

    Returns:
        The ablation; its hooks need the batch's query positions.
    """
    ad = adapt(model)
    heads = check_heads(ad, heads)
    check_ablation(ad, kind, means)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return compose([HeadPatch(l, hs, None if kind == "zero" else means[l]) for l, hs in by_layer.items()])


def check_ablation(model, kind: str, means: Tensor | None) -> None:
    """Raise unless ``kind`` is an ablation kind and, for ``"mean"``, ``means`` is ``[n_layers, n_heads, d_head]``."""
    ad = adapt(model)
    if kind not in KINDS:
        raise ValueError(f"ablation kind {kind!r} is not valid; choose one of {KINDS}")
    if kind == "mean" and (means is None or tuple(means.shape) != (ad.n_layers, ad.n_heads, ad.d_head)):
        raise ValueError(f"mean ablation needs means of shape {(ad.n_layers, ad.n_heads, ad.d_head)}, got "
                         f"{None if means is None else tuple(means.shape)}")


def ablation_hooks(model, heads: Sequence[Head], query_pos: Int[Tensor, " batch"], *, kind: AblationKind = "zero",
                   means: Float[Tensor, "n_layers n_heads d_head"] | None = None) -> list[tuple[str, HookFn]]:
    """TransformerLens hooks of :func:`ablation` for a batch with query positions ``query_pos``.

    Args:
        model: a TransformerLens model or its adapter.
        heads: ``(layer, head)`` pairs.
        query_pos: each row's query index.
        kind: ``"zero"`` or ``"mean"``.
        means: mean ``z`` for mean ablation.

    Returns:
        ``(hook_name, hook_fn)`` pairs.
    """
    return ablation(model, heads, kind=kind, means=means).hooks(model, query_pos)


def ablation_effects(model, vec: TaskVector, task: Task, prompts: Sequence[Prompt], heads: Sequence[Head], *,
                     kind: AblationKind = "zero", means: Tensor | None = None, progress: bool = False
                     ) -> Float[Tensor, "n_sel n_prompts"]:
    """``Δp = p − p_ablated`` for each head of ``heads`` ablated alone, per prompt (θ injected throughout).

    Heads of one layer are ablated together in one batched pass (one batch replica per head), run from
    that layer's input only.
    """
    ad = adapt(model)
    single_site(ad, vec)
    heads = check_heads(ad, heads)
    ablation(ad, heads, kind=kind, means=means).writes(ad)  # validate early
    batch = prompt_batch(ad, task, prompts)
    B, rows = len(batch), torch.arange(len(batch), device=ad.device)
    out = torch.zeros(len(heads), B)
    # the input of each block in the θ-run, recorded before the injection (the injected block's: without θ)
    inputs = Capture([(l, "resid_pre") for l in range(ad.n_layers)])
    with torch.no_grad():
        with (inputs + vec.injection).apply(ad, batch.query_pos):
            h = ad.residual(batch.tokens, ad.n_layers)
        p = torch.softmax(ad.unembed(h[rows, batch.query_pos]).float(), -1)[rows, batch.label_first]
        layers = sorted({l for l, _ in heads})
        for layer in tqdm(layers, desc=f"exact ablation {task.name}", disable=not progress, leave=False):
            idx = [i for i, (l, _) in enumerate(heads) if l == layer]
            K = len(idx)
            rep = Batch(*(t.repeat(K, *[1] * (t.ndim - 1)) for t in
                          (batch.tokens, batch.query_pos, batch.label_first, batch.targets, batch.lengths)))
            hs = torch.tensor([heads[i][1] for i in idx], device=ad.device).repeat_interleave(B)
            rr = torch.arange(K * B, device=ad.device)
            patch = HeadPatch(layer, hs, None if kind == "zero" else means[layer], per_row=True)  # heads[r] in row r
            with (vec.injection + patch).apply(ad, rep.query_pos):
                fin = ad.run_blocks(inputs[layer, "resid_pre"].repeat(K, 1, 1), layer)
            pa = torch.softmax(ad.unembed(fin[rr, rep.query_pos]).float(), -1)[rr, rep.label_first]
            out[idx] = (p.repeat(K) - pa).view(K, B).cpu()
    return out


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman rank correlation (scipy) of two equally long score vectors."""
    from scipy.stats import spearmanr

    x, y = x.flatten().double().cpu().numpy(), y.flatten().double().cpu().numpy()
    if len(x) != len(y) or len(x) < 3:
        raise ValueError(f"need two score vectors of the same length >= 3, got {len(x)} and {len(y)}")
    return float(spearmanr(x, y).statistic)


def n_key(n_total: int, frac: float) -> int:
    if not 0 < frac <= 1:
        raise ValueError(f"frac {frac!r} is not valid: the share of heads must be in (0, 1]")
    return max(1, round(frac * n_total))


def key_heads(scores: HeadScores, frac: float = 0.1) -> list[Head]:
    """The top ``frac`` of all heads by Taylor score (at least one), highest first."""
    return scores.ranking()[: n_key(scores.taylor.numel(), frac)]


def random_head_sets(n_layers: int, n_heads: int, size: int, n_sets: int = 5, seed: int = 0,
                     exclude: Sequence[Head] = ()) -> list[list[Head]]:
    """``n_sets`` random sets of ``size`` distinct heads outside ``exclude``; set ``i`` depends only on
    ``seed + i``."""
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(map(tuple, exclude))]
    if not 1 <= size <= len(pool):
        raise ValueError(f"set size {size} is not valid: must be in 1..{len(pool)} (heads outside the excluded set)")
    if n_sets < 1:
        raise ValueError(f"n_sets must be >= 1, got {n_sets}")
    return [sorted(random.Random(seed + i).sample(pool, size)) for i in range(n_sets)]


def ablated_accuracy(model, vec: TaskVector, task: Task, queries: Sequence[Example], heads: Sequence[Head], *,
                     kind: AblationKind = "zero", means: Tensor | None = None, batch_size: int = 16) -> EvalResult:
    """Zero-shot + θ accuracy (``tvmech.analysis.evaluation``) with ``heads`` ablated at the query position."""
    ad = adapt(model)
    heads = check_heads(ad, heads)
    vec.check_model(ad)
    both = vec.injection + ablation(ad, heads, kind=kind, means=means)
    both.writes(ad)  # validate early
    return evaluate(ad, task, queries, 0, batch_size=batch_size, hooks_for=both.hooks_for(ad))


def layer_histogram(heads: Sequence[Head], n_layers: int) -> Int[Tensor, " n_layers"]:
    """Number of heads of ``heads`` in each layer."""
    counts = torch.zeros(n_layers, dtype=torch.long)
    for layer, _ in heads:
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} is out of range: valid layers are 0..{n_layers - 1}")
        counts[layer] += 1
    return counts


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    v = list(values)
    if not v:
        raise ValueError("no values")
    m = sum(v) / len(v)
    return m, (math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0)


__all__ = ["Head", "HeadScores", "KINDS", "AblationKind", "check_heads", "prompt_batch", "taylor_scores", "ablation",
           "check_ablation", "ablation_hooks", "ablation_effects",
           "spearman", "n_key", "key_heads", "random_head_sets", "ablated_accuracy",
           "layer_histogram", "mean_std"]
