"""Function Vectors (Todd et al. 2024, "Function Vectors in Large Language Models").

1. Mean head outputs. Over k-shot ICL prompts, the mean per-head attention result at the query
   token, ``ā_{l,h} = mean_i z_{l,h}(ICL_i)[q]`` (``z`` is the attention-weighted value of head h,
   ``[d_head]``); in the residual basis the head's mean output is ``o_{l,h} = ā_{l,h} W_O^{l,h}``.
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
from tqdm.auto import tqdm

from tvmech.core.adapter import adapt
from tvmech.data.prompts import Prompt, encode, make_prompts
from tvmech.data.tasks import Task
from tvmech.interventions.task_vector import TaskVector


def mean_head_z(model, task: Task, prompts: Sequence[Prompt]) -> Float[Tensor, "n_layers n_heads d_head"]:
    """Mean over prompts of every head's ``z`` at the query token."""
    ad = adapt(model)
    batch = encode(ad.tokenizer, task, prompts).to(ad.device)
    rows = torch.arange(len(batch), device=ad.device)
    got: dict[int, Tensor] = {}

    def grab(layer):
        def hook(z, hook=None):
            got[layer] = z[rows, batch.query_pos].mean(0).detach()
        return hook

    with torch.no_grad(), ad.hooks([(ad.act_name(l, "z"), grab(l)) for l in range(ad.n_layers)]):
        ad.residual(batch.tokens, ad.n_layers)
    return torch.stack([got[l] for l in range(ad.n_layers)])


def head_outputs(model, z_mean: Float[Tensor, "n_layers n_heads d_head"]) -> Float[Tensor, "n_layers n_heads d_model"]:
    """``o_{l,h} = z̄_{l,h} W_O^{l,h}``: each head's mean output in the residual basis."""
    return torch.einsum("lhd,lhdm->lhm", z_mean, adapt(model).W_O.to(z_mean.dtype))


def indirect_effects(model, task: Task, prompts: Sequence[Prompt], z_mean: Tensor,
                     progress: bool = False) -> Float[Tensor, "n_layers n_heads"]:
    """CIE of every head: gain in p(correct first token) when its query ``z`` is set to ``z_mean``."""
    ad = adapt(model)
    batch = encode(ad.tokenizer, task, prompts).to(ad.device)
    B, H = len(batch), ad.n_heads
    rows = torch.arange(B * H, device=ad.device)
    qpos = batch.query_pos.repeat(H)
    head_of_row = torch.arange(H, device=ad.device).repeat_interleave(B)
    label = batch.label_first.repeat(H)
    effects = torch.zeros(ad.n_layers, H)
    with torch.no_grad():
        final = ad.residual(batch.tokens, ad.n_layers)
        clean = torch.softmax(ad.unembed(final[rows[:B], batch.query_pos]).float(), -1)[rows[:B], batch.label_first]
        resid = ad.residual(batch.tokens, 0)
        for layer in tqdm(range(ad.n_layers), desc="indirect effects", disable=not progress, leave=False):
            def patch(z, hook=None, layer=layer):
                z = z.clone()
                z[rows, qpos, head_of_row] = z_mean[layer].to(z.dtype)[head_of_row]
                return z

            with ad.hooks([(ad.act_name(layer, "z"), patch)]):
                out = ad.run_blocks(resid.repeat(H, 1, 1), layer)
            p = torch.softmax(ad.unembed(out[rows, qpos]).float(), -1)[rows, label]
            effects[layer] = (p.view(H, B) - clean[None]).mean(1).cpu()
            resid = ad.run_blocks(resid, layer, layer + 1)
    return effects


@dataclass
class FunctionVectorHeads:
    effects: Tensor  # [n_layers, n_heads] causal indirect effects
    outputs: Tensor  # [n_layers, n_heads, d_model] mean head outputs
    seconds: float  # time taken by the indirect-effect pass

    def top(self, n: int) -> list[tuple[int, int]]:
        flat = self.effects.flatten().topk(n).indices
        return [(int(i) // self.effects.shape[1], int(i) % self.effects.shape[1]) for i in flat]


def function_vector_heads(model, task: Task, *, k: int = 5, n_prompts: int = 16, seed: int = 0,
                          progress: bool = False) -> FunctionVectorHeads:
    """Mean head outputs over k-shot prompts and every head's CIE on label-shuffled prompts."""
    sp = task.splits(seed)
    queries = list(sp.train)[:n_prompts]
    if len(queries) < 1:
        raise ValueError(f"task {task.name!r} has no training examples for function-vector heads")
    z_mean = mean_head_z(model, task, make_prompts(task, queries, k, sp.train, seed=seed))
    t = time.perf_counter()
    cie = indirect_effects(model, task, make_prompts(task, queries, k, sp.train, seed=seed + 1, shuffle_labels=True), z_mean, progress)
    return FunctionVectorHeads(cie, head_outputs(model, z_mean).cpu(), time.perf_counter() - t)


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
