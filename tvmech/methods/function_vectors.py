"""Function Vectors (Todd et al. 2024, "Function Vectors in Large Language Models").

1. Mean head outputs. Over k-shot ICL prompts, the mean per-head attention result at the query
   token, ``ā_{l,h} = mean_i z_{l,h}(ICL_i)[q]`` (``z`` is the attention-weighted value of head h,
   ``[d_head]``), and the head's mean output in the residual basis ``o_{l,h} = mean_i z_{l,h}(ICL_i)[q] W_O^{l,h}``
   (``= ā_{l,h} W_O^{l,h}``). On blocks with a post-attention norm (Gemma, OLMo-2) a head's output in the
   residual stream is that norm's linear part at the scale of the block's whole output
   (:meth:`~tvmech.core.adapter.Adapter.head_outputs`), so the mean is taken over those per-prompt outputs.
2. Causal indirect effect. On ICL prompts whose demonstration labels are shuffled among themselves
   (so the prompt no longer shows the task), patch head (l, h)'s query-token ``z`` with ``ā_{l,h}``
   and measure the gain in the probability of the correct label's first token:
   ``CIE_{l,h} = mean_i [p(y_i | patched) − p(y_i | clean)]``. The patch changes no position before the
   query (causal attention), so the patched passes run the query token alone, reading the clean run's keys and
   values of the positions before it (a frozen prefix); the prompts whose query sits at one position run
   together, and one pass covers many heads: entering block ``l`` each head ``(l, h)`` forks a copy of the clean
   query stream, patched there, that runs on through the later blocks with the other copies. ``L(L+1)/2 · H``
   row-blocks of one token per prompt, against as many of the whole prompt in the full-width loop (the reference,
   ``query_only=False``: per layer, the batch replicated once per head, every position run from that layer).
3. ``FV = Σ_{(l,h) ∈ top-n by CIE} o_{l,h}``, added at the query of zero-shot prompts at a chosen layer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.core.checks import as_int
from tvmech.core.layers import PrefixKV
from tvmech.core.progress import tqdm
from tvmech.data.prompts import Prompt, encode, make_prompts
from tvmech.data.tasks import Task
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import residual, run_blocks
from tvmech.interventions.head_patch import HeadPatch
from tvmech.interventions.sites import Context
from tvmech.interventions.task_vector import TaskVector


def query_z(model, task: Task, prompts: Sequence[Prompt]) -> Float[Tensor, "batch n_layers n_heads d_head"]:
    """Every head's ``z`` at each prompt's query token, read with a
    :class:`~tvmech.interventions.capture.Capture` of ``z`` at every layer (one batch, no gradients).

    Args:
        model: a TransformerLens model or its adapter.
        task: the task (label tokenization).
        prompts: the prompts, one batch.

    Returns:
        ``z[b, l, h]``.
    """
    ad = adapt(model)
    batch = encode(ad.tokenizer, task, prompts).to(ad.device)
    capture = Capture([(layer, "z") for layer in range(ad.n_layers)], positions=(-1,))
    with torch.no_grad():
        residual(ad, batch.tokens, ad.n_layers, intervention=capture, ctx=batch.query_pos)
    return torch.stack([capture[layer, "z"][:, 0] for layer in range(ad.n_layers)], 1)


def mean_head_z(model, task: Task, prompts: Sequence[Prompt]) -> Float[Tensor, "n_layers n_heads d_head"]:
    """Mean over prompts of every head's ``z`` at the query token (:func:`query_z`), ``ā[l, h]``."""
    return query_z(model, task, prompts).mean(0)


def head_outputs(model, z: Float[Tensor, "*batch n_layers n_heads d_head"]
                 ) -> Float[Tensor, "*batch n_layers n_heads d_model"]:
    """Each head's output in the residual basis, its share of ``hook_attn_out``
    (:meth:`~tvmech.core.adapter.Adapter.head_outputs`): ``z_{l,h} W_O^{l,h}``, and on blocks with a
    post-attention norm (Gemma, OLMo-2) that norm's linear part at the scale of the block's whole output
    (at least float32)."""
    ad = adapt(model)
    return torch.stack([ad.head_outputs(l, z[..., l, :, :])[0] for l in range(ad.n_layers)], -3)


def indirect_effects(model, task: Task, prompts: Sequence[Prompt], z_mean: Float[Tensor, "n_layers n_heads d_head"],
                     progress: bool = False, *, query_only: bool = True, max_rows: int | None = None
                     ) -> Float[Tensor, "n_layers n_heads"]:
    """CIE of every head: gain in p(correct first token) when its query ``z`` is set to ``z_mean``.

    The clean prompts run once, block by block (their final stream gives the clean probabilities). With
    ``query_only`` (the default, on the fast path), the patched passes run the query token alone: a patch at the
    query changes no earlier position (causal attention), so every block reads the clean run's keys and values
    there (a frozen prefix, :meth:`~tvmech.core.adapter.Adapter.prefix_kv`). Prompts whose query sits at the same
    position go together; for each such group one forked pass covers many heads: entering block ``l`` the clean
    query stream of every head ``(l, h)`` of the chunk forks off as a copy patched by a per-row
    :class:`~tvmech.interventions.head_patch.HeadPatch`, and all copies run on through the later blocks in one
    batch. The same numbers to float rounding as ``query_only=False`` (the reference, and the path off the fast
    path): every layer's heads patched in one batch replicated once per head, the whole prompt run from that layer.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task (the correct label's first token).
        prompts: label-shuffled ICL prompts, one batch.
        z_mean: each head's mean query ``z`` (:func:`mean_head_z`).
        progress: show a progress bar.
        query_only: run only the query token in the patched passes (where the fast path allows it).
        max_rows: the most rows one block call of a forked pass holds (``None``: from a memory budget, 256 MiB on
            the CPU, a quarter of the free memory on a GPU).

    Returns:
        ``CIE[l, h]`` (on the CPU).
    """
    ad = adapt(model)
    batch = encode(ad.tokenizer, task, prompts).to(ad.device)
    if tuple(z_mean.shape) != (ad.n_layers, ad.n_heads, ad.d_head):
        raise ValueError(f"z_mean must have shape {(ad.n_layers, ad.n_heads, ad.d_head)}, got {tuple(z_mean.shape)}")
    if max_rows is not None and as_int(max_rows, "max_rows") < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    with torch.no_grad():
        if query_only and ad.fast():
            return _effects_query_only(ad, batch, z_mean, progress, max_rows)
        return _effects_full_width(ad, batch, z_mean, progress)


def _label_prob(ad, final: Float[Tensor, "rows d_model"], label: Tensor, chunk: int = 256) -> Float[Tensor, " rows"]:
    """p(label) from final query streams (float32 softmax over the vocabulary), ``chunk`` rows at a time."""
    return torch.cat([torch.softmax(ad.unembed(f).float(), -1).gather(1, y[:, None])[:, 0]
                      for f, y in zip(final.split(chunk), label.split(chunk))])


def _effects_full_width(ad, batch, z_mean: Tensor, progress: bool) -> Tensor:
    """The reference CIE: per layer, the batch replicated once per head, every position run from that layer."""
    B, H = len(batch), ad.n_heads
    rows = torch.arange(B * H, device=ad.device)
    qpos = batch.query_pos.repeat(H)
    head_of_row = torch.arange(H, device=ad.device).repeat_interleave(B)
    patched = torch.zeros(ad.n_layers, H, B)
    resid = ad.residual(batch.tokens, 0)
    for layer in tqdm(range(ad.n_layers), desc="indirect effects", disable=not progress, leave=False):
        patch = HeadPatch(layer, head_of_row, values=z_mean[layer], per_row=True)
        out = run_blocks(ad, resid.repeat(H, 1, 1), layer, intervention=patch, ctx=qpos)
        patched[layer] = _label_prob(ad, out[rows, qpos], batch.label_first.repeat(H)).view(H, B).cpu()
        resid = ad.run_blocks(resid, layer, layer + 1)
    clean = _label_prob(ad, resid[rows[:B], batch.query_pos], batch.label_first)
    return (patched - clean.cpu()[None, None]).mean(2)


def _effects_query_only(ad, batch, z_mean: Tensor, progress: bool, max_rows: int | None) -> Tensor:
    """The CIE with the patched passes on the query token alone (see :func:`indirect_effects`)."""
    B, L, H = len(batch), ad.n_layers, ad.n_heads
    q, arange = batch.query_pos, torch.arange(B, device=ad.device)
    resid = ad.residual(batch.tokens, 0)
    prefix = ad.prefix_kv(resid, 0, int(q.max())) if int(q.max()) > 0 else None
    at_query = [resid[arange, q]]  # the clean stream at each row's query, entering every block
    for layer in range(L):
        resid = ad.run_blocks(resid, layer, layer + 1)
        at_query.append(resid[arange, q])
    clean = _label_prob(ad, at_query[-1], batch.label_first).cpu()
    pairs = [(layer, head) for layer in range(L) for head in range(H)]
    passes = []
    for cut in sorted(set(q.tolist())):
        idx = (q == cut).nonzero()[:, 0]
        per_pass = max(1, (max_rows or _rows_budget(ad, cut)) // len(idx))
        passes += [(cut, idx, pairs[i:i + per_pass]) for i in range(0, len(pairs), per_pass)]
    patched = torch.zeros(L, H, B)
    for cut, idx, chunk in tqdm(passes, desc="indirect effects", disable=not progress, leave=False):
        front = None if prefix is None or cut == 0 else PrefixKV(
            {l: k[idx, :, :cut] for l, k in prefix.keys.items()},
            {l: v[idx, :, :cut] for l, v in prefix.values.items()}, cut, 0)
        final = _forked_patches(ad, [x[idx, None] for x in at_query], chunk, z_mean, cut, front)
        p = _label_prob(ad, final, batch.label_first[idx].repeat(len(chunk))).view(len(chunk), len(idx)).cpu()
        ls, hs = torch.tensor(chunk).T
        patched[ls[:, None], hs[:, None], idx.cpu()[None]] = p
    return (patched - clean[None, None]).mean(2)


def _forked_patches(ad, clean: list[Tensor], pairs: list[tuple[int, int]], z_mean: Tensor, cut: int,
                    prefix: PrefixKV | None) -> Float[Tensor, "pairs_rows d_model"]:
    """The final query stream of each (layer, head) in ``pairs`` (sorted by layer) patched, for ``n`` prompts whose
    query sits at ``cut``: ``clean[l]`` (``[n, 1, d_model]``) is their clean query stream entering block ``l``;
    entering block ``l`` each pair of layer ``l`` adds a copy of it patched there, and every copy runs on.

    Returns:
        ``[len(pairs) * n, d_model]``: pair ``i``'s rows are ``i*n .. (i+1)*n - 1``.
    """
    n, ctx = clean[0].shape[0], Context(cut, offset=cut)
    h = clean[0][:0]
    for layer in range(pairs[0][0], ad.n_layers):
        heads = [hd for la, hd in pairs if la == layer]
        patch = None
        if heads:
            first = h.shape[0]
            h = torch.cat([h, clean[layer].repeat(len(heads), 1, 1)])
            per_row = torch.tensor(heads, device=h.device).repeat_interleave(n)
            patch = HeadPatch(layer, per_row, values=z_mean[layer], per_row=True, rows=(first, h.shape[0]))
        h = run_blocks(ad, h, layer, layer + 1, intervention=patch, ctx=ctx, prefix=prefix)
    return h[:, 0]


def _rows_budget(ad, cut: int) -> int:
    """Rows of one query-only block call that fit the memory budget (256 MiB on the CPU, a quarter of the free
    memory on a GPU): the keys and values read (prefix included, expanded to every head), the scores, the hidden
    states and the MLP's activations of one row."""
    budget = torch.cuda.mem_get_info(ad.device)[0] // 4 if ad.device.type == "cuda" else 256 * 2 ** 20
    d_mlp = int(getattr(ad.cfg, "d_mlp", None) or 4 * ad.d_model)
    per_row = (cut + 1) * (ad.d_head * (4 * ad.n_kv_heads + 2 * ad.n_heads) + ad.n_heads) + 8 * ad.d_model + 4 * d_mlp
    return max(1, budget // (per_row * ad.dtype.itemsize))


@dataclass
class FunctionVectorHeads:
    """Every head's causal indirect effect and mean output (Todd et al. 2024's function-vector heads)."""

    effects: Tensor
    """``[n_layers, n_heads]`` causal indirect effects on label-shuffled prompts."""
    outputs: Tensor
    """``[n_layers, n_heads, d_model]`` mean head outputs at the query of k-shot prompts."""
    seconds: float
    """The time taken by the indirect-effect pass."""

    def top(self, n: int) -> list[tuple[int, int]]:
        """The ``n`` heads of largest effect, as ``(layer, head)``, largest first."""
        flat = self.effects.flatten().topk(n).indices
        return [(int(i) // self.effects.shape[1], int(i) % self.effects.shape[1]) for i in flat]


def function_vector_heads(model, task: Task, *, k: int = 5, n_prompts: int = 16, seed: int = 0,
                          progress: bool = True) -> FunctionVectorHeads:
    """Mean head outputs over k-shot prompts and every head's CIE on label-shuffled prompts
    (:func:`indirect_effects`; a progress bar unless ``progress=False``)."""
    sp = task.splits(seed)
    queries = list(sp.train)[:n_prompts]
    if len(queries) < 1:
        raise ValueError(f"task {task.name!r} has no training examples for function-vector heads")
    z = query_z(model, task, make_prompts(task, queries, k, sp.train, seed=seed))
    t = time.perf_counter()
    shuffled = make_prompts(task, queries, k, sp.train, seed=seed + 1, shuffle_labels=True)
    cie = indirect_effects(model, task, shuffled, z.mean(0), progress)
    return FunctionVectorHeads(cie, head_outputs(model, z).mean(0).cpu(), time.perf_counter() - t)


def function_vector(model, task: Task, layer: int, heads: FunctionVectorHeads | None = None, *, n_heads: int = 10,
                    k: int = 5, n_prompts: int = 16, seed: int = 0, progress: bool = True) -> TaskVector:
    """FV = sum of the top ``n_heads`` heads' mean outputs, to be added at ``layer`` (last position); the heads are
    found by :func:`function_vector_heads` unless given (``progress``: its progress bar)."""
    ad = adapt(model)
    ad.hook_name(layer)
    total = ad.n_layers * ad.n_heads
    if not 1 <= n_heads <= total:
        raise ValueError(f"n_heads must be in 1..{total}, got {n_heads}")
    heads = heads or function_vector_heads(model, task, k=k, n_prompts=n_prompts, seed=seed, progress=progress)
    top = heads.top(n_heads)
    fv = sum(heads.outputs[l, h] for l, h in top)
    return TaskVector.for_model(ad, fv[None, None], (layer,), (-1,), task=task.name, method="function_vector",
                                config={"k": k, "n_prompts": n_prompts, "n_heads": n_heads, "seed": seed},
                                metrics={"heads": top, "cie_seconds": heads.seconds})
