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
   ``CIE_{l,h} = mean_i [p(y_i | patched) − p(y_i | clean)]``. All heads of a layer are patched in
   one batched pass (one batch replica per head), and only the blocks from l upward are run.
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
from tvmech.core.progress import tqdm
from tvmech.data.prompts import Prompt, encode, make_prompts
from tvmech.data.tasks import Task
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import residual, run_blocks
from tvmech.interventions.head_patch import HeadPatch
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
                     progress: bool = False) -> Float[Tensor, "n_layers n_heads"]:
    """CIE of every head: gain in p(correct first token) when its query ``z`` is set to ``z_mean``.

    The clean prompts run once, block by block: the stream entering block ``l`` feeds the patched
    pass of layer ``l`` (the batch replicated once per head, row group ``h`` patching head ``h`` with a
    per-row :class:`~tvmech.interventions.head_patch.HeadPatch`), and the final stream gives the clean
    probabilities.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task (the correct label's first token).
        prompts: label-shuffled ICL prompts, one batch.
        z_mean: each head's mean query ``z`` (:func:`mean_head_z`).
        progress: show a progress bar.

    Returns:
        ``CIE[l, h]`` (on the CPU).
    """
    ad = adapt(model)
    batch = encode(ad.tokenizer, task, prompts).to(ad.device)
    B, H = len(batch), ad.n_heads
    if tuple(z_mean.shape) != (ad.n_layers, H, ad.d_head):
        raise ValueError(f"z_mean must have shape {(ad.n_layers, H, ad.d_head)}, got {tuple(z_mean.shape)}")
    rows = torch.arange(B * H, device=ad.device)
    qpos = batch.query_pos.repeat(H)
    head_of_row = torch.arange(H, device=ad.device).repeat_interleave(B)
    label = batch.label_first.repeat(H)
    patched = torch.zeros(ad.n_layers, H, B)
    with torch.no_grad():
        resid = ad.residual(batch.tokens, 0)
        for layer in tqdm(range(ad.n_layers), desc="indirect effects", disable=not progress, leave=False):
            patch = HeadPatch(layer, head_of_row, values=z_mean[layer], per_row=True)
            out = run_blocks(ad, resid.repeat(H, 1, 1), layer, intervention=patch, ctx=qpos)
            patched[layer] = torch.softmax(ad.unembed(out[rows, qpos]).float(), -1)[rows, label].view(H, B).cpu()
            resid = ad.run_blocks(resid, layer, layer + 1)
        clean = torch.softmax(ad.unembed(resid[rows[:B], batch.query_pos]).float(), -1)[rows[:B], batch.label_first]
    return (patched - clean.cpu()[None, None]).mean(2)


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
                          progress: bool = False) -> FunctionVectorHeads:
    """Mean head outputs over k-shot prompts and every head's CIE on label-shuffled prompts."""
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
                    k: int = 5, n_prompts: int = 16, seed: int = 0) -> TaskVector:
    """FV = sum of the top ``n_heads`` heads' mean outputs, to be added at ``layer`` (last position)."""
    ad = adapt(model)
    ad.hook_name(layer)
    total = ad.n_layers * ad.n_heads
    if not 1 <= n_heads <= total:
        raise ValueError(f"n_heads must be in 1..{total}, got {n_heads}")
    heads = heads or function_vector_heads(model, task, k=k, n_prompts=n_prompts, seed=seed)
    top = heads.top(n_heads)
    fv = sum(heads.outputs[l, h] for l, h in top)
    return TaskVector.for_model(ad, fv[None, None], (layer,), (-1,), task=task.name, method="function_vector",
                                config={"k": k, "n_prompts": n_prompts, "n_heads": n_heads, "seed": seed},
                                metrics={"heads": top, "cie_seconds": heads.seconds})
