"""Extracted task vectors (baselines for the learned ones).

Vanilla TV (Hendel et al. 2023, "In-Context Learning Creates Task Vectors"), in the additive variant
used as a baseline by Yang et al. 2026: with ``h_l(P)`` the residual stream entering block ``l`` at
the last token of prompt ``P``,

    θ_l = mean_i h_l(ICL_i) − mean_i h_l(ZS_i)

where ``ICL_i`` is a k-shot prompt (demonstrations from the training split) and ``ZS_i`` the zero-shot
prompt of the same query; θ_l is *added* at the query of a zero-shot prompt. ``mode="replace"`` gives
Hendel's original patching: θ_l = mean_i h_l(ICL_i), *written over* the query's hidden state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.data.prompts import Prompt, batches, make_prompts
from tvmech.data.tasks import Example, Task, as_examples
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import residual
from tvmech.interventions.sites import Mode, check_mode
from tvmech.interventions.task_vector import TaskVector


def query_states_at(model, task: Task, prompts: Sequence[Prompt], layers: Sequence[int], batch_size: int = 16
                    ) -> Float[Tensor, "n n_layers d_model"]:
    """Each prompt's residual stream entering each of ``layers`` at its query token, from one pass per batch.

    Args:
        model: a TransformerLens model or its adapter.
        task: the prompts' task.
        prompts: the prompts.
        layers: the blocks whose input is read.
        batch_size: prompts per pass.

    Returns:
        ``[n, len(layers), d_model]`` (float32, CPU), in the order of ``prompts``.
    """
    ad = adapt(model)
    layers = [int(layer) for layer in layers]
    for layer in layers:
        ad.check_layer(layer)
    out = torch.zeros(len(prompts), len(layers), ad.d_model)
    stop = min(max(layers) + 1, ad.n_layers)
    with torch.no_grad():
        for idx, b in batches(ad.tokenizer, task, prompts, batch_size):
            b = b.to(ad.device)
            capture = Capture([(layer, "resid_pre") for layer in layers], positions=(-1,))
            residual(ad, b.tokens, stop, intervention=capture, ctx=b.query_pos)
            out[idx] = torch.stack([capture[layer, "resid_pre"][:, 0] for layer in layers], 1).float().cpu()
    return out


def mean_query_state(model, task: Task, prompts: Sequence[Prompt], layer: int,
                     batch_size: int = 16) -> Float[Tensor, " d_model"]:
    """Mean over prompts of the residual stream entering block ``layer`` at the query token.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task (prompt encoding).
        prompts: the prompts, encoded ``batch_size`` at a time.
        layer: the block whose input is read.

    Returns:
        ``mean_i h_layer(P_i)[q_i]`` (float64 accumulation of :func:`query_states_at`, returned as float32 on the CPU).
    """
    return query_states_at(model, task, prompts, (layer,), batch_size)[:, 0].double().mean(0).float()


def vanilla_task_vector(model, task: Task, layer: int, queries: Sequence[Example] | None = None,
                        demos: Sequence[Example] | None = None, *, k: int = 5, n: int = 32, seed: int = 0,
                        mode: Mode = "add", batch_size: int = 16) -> TaskVector:
    """Vanilla TV at ``layer`` from ``n`` k-shot prompts (defaults: train split for both queries and demos).

    Args:
        model: a TransformerLens model or its adapter.
        task: the task; ``queries`` and ``demos`` default to its training split (seed ``seed``).
        layer: the block whose input is read and later written.
        k: demonstrations per ICL prompt; n: the most queries used.
        mode: ``"add"`` (ICL minus zero-shot mean, added) or ``"replace"`` (ICL mean, written over).

    Returns:
        The :class:`TaskVector` (method ``"vanilla"`` or ``"vanilla_replace"``).
    """
    ad = adapt(model)
    ad.hook_name(layer)
    check_mode(mode)
    sp = task.splits(seed)
    queries = list(as_examples(sp.train if queries is None else queries, "queries"))[:n]
    demos = as_examples(sp.train if demos is None else demos, "demos")
    if not queries:
        raise ValueError(f"task {task.name!r}: no queries to extract a vector from")
    icl = mean_query_state(ad, task, make_prompts(task, queries, k, demos, seed=seed), layer, batch_size)
    if mode == "add":
        icl = icl - mean_query_state(ad, task, make_prompts(task, queries, 0), layer, batch_size)
    return TaskVector.for_model(ad, icl[None, None], (layer,), (-1,), mode=mode, task=task.name,
                                method="vanilla" if mode == "add" else "vanilla_replace",
                                config={"k": k, "n": len(queries), "seed": seed})
