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
from tvmech.interventions.sites import Mode, check_mode
from tvmech.interventions.task_vector import TaskVector


def mean_query_state(model, task: Task, prompts: Sequence[Prompt], layer: int,
                     batch_size: int = 16) -> Float[Tensor, " d_model"]:
    """Mean over prompts of the residual stream entering block ``layer`` at the query token.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task (prompt encoding).
        prompts: the prompts, encoded ``batch_size`` at a time.
        layer: the block whose input is read.

    Returns:
        ``mean_i h_layer(P_i)[q_i]`` (float64 accumulation, returned as float32 on the CPU).
    """
    ad = adapt(model)
    total = torch.zeros(ad.d_model, dtype=torch.float64)
    with torch.no_grad():
        for _, b in batches(ad.tokenizer, task, prompts, batch_size):
            b = b.to(ad.device)
            h = ad.residual(b.tokens, layer)
            total += h[torch.arange(len(b), device=h.device), b.query_pos].double().sum(0).cpu()
    return (total / len(prompts)).float()


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
