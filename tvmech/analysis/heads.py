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

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tvmech.core.adapter import Adapter, HookFn, adapt
from tvmech.analysis.evaluation import EvalResult, evaluate
from tvmech.analysis.ov import check_head, single_site
from tvmech.data.prompts import Batch, Prompt, encode
from tvmech.data.tasks import Example, Task
from tvmech.interventions.task_vector import TaskVector

Head = tuple[int, int]
KINDS = ("zero", "mean")


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


def _batch(ad: Adapter, task: Task, prompts: Sequence[Prompt]) -> Batch:
    if not prompts:
        raise ValueError(f"task {task.name!r}: no prompts")
    return encode(ad.tokenizer, task, prompts).to(ad.device)


def taylor_scores(model, vec: TaskVector, task: Task, prompts: Sequence[Prompt]) -> HeadScores:
    """``|a · ∂p/∂a|`` of every head at the query position, from one forward and one backward pass over
    all ``prompts`` (zero-shot prompts; θ is added as ``vec`` says)."""
    ad = adapt(model)
    single_site(ad, vec)
    batch = _batch(ad, task, prompts)
    rows, q = torch.arange(len(batch), device=ad.device), batch.query_pos
    zs: dict[int, Tensor] = {}

    def keep(layer: int) -> HookFn:
        def hook(z: Tensor, hook=None) -> Tensor:
            zs[layer] = z
            return z  # returned, so that the bridge passes on this very tensor (and it is in the graph)
        return hook

    with torch.no_grad():
        h0 = ad.residual(batch.tokens, 0)  # embeddings, computed outside the hooks
    hooks = vec.hooks_for(ad)(batch) + [(ad.act_name(l, "z"), keep(l)) for l in range(ad.n_layers)]
    with torch.enable_grad(), ad.hooks(hooks):
        final = ad.run_blocks(h0.detach().requires_grad_(True), 0)
        p = torch.softmax(ad.unembed(final[rows, q]).float(), -1)[rows, batch.label_first]
        grads = torch.autograd.grad(p.sum(), [zs[l] for l in range(ad.n_layers)])
    with torch.no_grad():
        dot = torch.stack([(zs[l][rows, q] * g[rows, q]).sum(-1) for l, g in enumerate(grads)])  # [L, B, H]
    return HeadScores(dot.abs().mean(1).float().cpu(), dot.mean(1).float().cpu(), float(p.detach().mean()), len(batch))


def ablation_hooks(model, heads: Sequence[Head], query_pos: Int[Tensor, " batch"], *, kind: str = "zero",
                   means: Float[Tensor, "n_layers n_heads d_head"] | None = None) -> list[tuple[str, HookFn]]:
    """Hooks setting ``z[q]`` of each head in ``heads`` to 0 (``"zero"``) or to ``means[l, h]`` (``"mean"``)."""
    ad = adapt(model)
    heads = check_heads(ad, heads)
    if kind not in KINDS:
        raise ValueError(f"ablation kind {kind!r} is not valid; choose one of {KINDS}")
    if kind == "mean" and (means is None or tuple(means.shape) != (ad.n_layers, ad.n_heads, ad.d_head)):
        raise ValueError(f"mean ablation needs means of shape {(ad.n_layers, ad.n_heads, ad.d_head)}, got "
                         f"{None if means is None else tuple(means.shape)}")
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make(layer: int, hs: list[int]) -> HookFn:
        def hook(z: Tensor, hook=None) -> Tensor:
            z = z.clone()
            rows = torch.arange(z.shape[0], device=z.device)[:, None]
            qq, hh = query_pos.to(z.device)[:, None], torch.tensor(hs, device=z.device)[None]
            z[rows, qq, hh] = 0 if kind == "zero" else means[layer, hs].to(z.device, z.dtype)[None]
            return z
        return hook

    return [(ad.act_name(l, "z"), make(l, hs)) for l, hs in by_layer.items()]


def ablation_effects(model, vec: TaskVector, task: Task, prompts: Sequence[Prompt], heads: Sequence[Head], *,
                     kind: str = "zero", means: Tensor | None = None, progress: bool = False
                     ) -> Float[Tensor, "n_sel n_prompts"]:
    """``Δp = p − p_ablated`` for each head of ``heads`` ablated alone, per prompt (θ injected throughout).

    Heads of one layer are ablated together in one batched pass (one batch replica per head), run from
    that layer's input only.
    """
    ad = adapt(model)
    layer_tv, _ = single_site(ad, vec)
    heads = check_heads(ad, heads)
    ablation_hooks(ad, heads, torch.zeros(1, dtype=torch.long), kind=kind, means=means)  # validate early
    batch = _batch(ad, task, prompts)
    B, rows = len(batch), torch.arange(len(batch), device=ad.device)
    out = torch.zeros(len(heads), B)
    with torch.no_grad():
        h, inputs = ad.residual(batch.tokens, 0), []
        with ad.hooks(vec.hooks_for(ad)(batch)):
            for l in range(ad.n_layers):  # input of each block in the θ-run (before θ for l <= layer_tv)
                inputs.append(h)
                h = ad.run_blocks(h, l, l + 1)
        p = torch.softmax(ad.unembed(h[rows, batch.query_pos]).float(), -1)[rows, batch.label_first]
        layers = sorted({l for l, _ in heads})
        for layer in tqdm(layers, desc=f"exact ablation {task.name}", disable=not progress, leave=False):
            idx = [i for i, (l, _) in enumerate(heads) if l == layer]
            K = len(idx)
            rep = Batch(*(t.repeat(K, *[1] * (t.ndim - 1)) for t in
                          (batch.tokens, batch.query_pos, batch.label_first, batch.targets, batch.lengths)))
            hs = torch.tensor([heads[i][1] for i in idx], device=ad.device).repeat_interleave(B)
            rr = torch.arange(K * B, device=ad.device)

            def patch(z: Tensor, hook=None, layer=layer, hs=hs, rr=rr) -> Tensor:
                z = z.clone()
                z[rr, rep.query_pos, hs] = 0 if kind == "zero" else means[layer][hs].to(z.dtype)
                return z

            with ad.hooks(vec.hooks_for(ad)(rep) + [(ad.act_name(layer, "z"), patch)]):
                fin = ad.run_blocks(inputs[layer].repeat(K, 1, 1), layer)
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
                     kind: str = "zero", means: Tensor | None = None, batch_size: int = 16) -> EvalResult:
    """Zero-shot + θ accuracy (``tvmech.analysis.evaluation``) with ``heads`` ablated at the query position."""
    ad = adapt(model)
    heads = check_heads(ad, heads)
    ablation_hooks(ad, heads, torch.zeros(1, dtype=torch.long), kind=kind, means=means)  # validate early
    inject = vec.hooks_for(ad)
    return evaluate(ad, task, queries, 0, batch_size=batch_size,
                    hooks_for=lambda b: inject(b) + ablation_hooks(ad, heads, b.query_pos, kind=kind, means=means))


def key_vs_random(model, vec: TaskVector, task: Task, queries: Sequence[Example], scores: HeadScores, *,
                  frac: float = 0.1, n_random: int = 5, seed: int = 0, kinds: Sequence[str] = KINDS,
                  means: Tensor | None = None, batch_size: int = 16, progress: bool = False) -> list[dict]:
    """LTV accuracy without ablation, with the key heads ablated, and with each of ``n_random`` random sets
    of the same size ablated (zero and/or mean). Rows ``{task, set, seed, kind, size, accuracy, n}``."""
    ad = adapt(model)
    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    key = key_heads(scores, frac)
    sets = [("key", None, key)] + [("random", seed + i, s) for i, s in enumerate(
        random_head_sets(ad.n_layers, ad.n_heads, len(key), n_random, seed, exclude=key))]
    base = evaluate(ad, task, queries, 0, batch_size=batch_size, hooks_for=vec.hooks_for(ad))
    rows = [{"task": task.name, "set": "none", "seed": None, "kind": "none", "size": 0, "accuracy": base.accuracy,
             "n": base.n}]
    jobs = [(k, s) for k in kinds for s in sets]
    for kind, (name, s, heads) in tqdm(jobs, desc=f"ablations {task.name}", disable=not progress, leave=False):
        r = ablated_accuracy(ad, vec, task, queries, heads, kind=kind, means=means, batch_size=batch_size)
        rows.append({"task": task.name, "set": name, "seed": s, "kind": kind, "size": len(heads),
                     "accuracy": r.accuracy, "n": r.n})
    return rows


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


__all__ = ["Head", "HeadScores", "KINDS", "check_heads", "taylor_scores", "ablation_hooks", "ablation_effects",
           "spearman", "n_key", "key_heads", "random_head_sets", "ablated_accuracy", "key_vs_random",
           "layer_histogram", "mean_std"]
