"""Forked runs: one clean batch that branches, at each group's own layer, into a copy carrying that group's
vector — the batched layer sweep at about half the cost of running every copy through every block.

A sweep trains one vector per layer: group ``g`` adds ``θ_g`` at ``blocks.{l_g}.hook_resid_pre``. Below
``l_g`` group ``g``'s rows equal the clean rows, so they need not be computed separately: the run keeps one
clean copy of the batch, and entering block ``j`` every group with ``l_g = j`` forks off it
as a copy of the clean rows. Block ``j`` then runs on ``[clean | groups forked before | groups forking now]``
(the clean copy dropped after the last fork), with each new group's :class:`~tvmech.interventions.injection.Injection`
restricted to its own rows (``rows=``) and attached by the engine (:func:`~tvmech.interventions.engine.run_blocks`),
so ``θ_g`` is written at ``blocks.{l_g}.hook_resid_pre`` exactly as in the group's unbatched run.
With layers ``0..L-1`` that is ``Σ_j (j + 2) ≈ L²/2`` row-blocks of ``B`` rows instead of ``L²``; each group's
rows go through exactly the computation of its own unbatched run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.core.layers import PrefixKV
from tvmech.interventions.engine import compose, run_blocks
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import Context


def forked_run(model, resid: Float[Tensor, "batch pos d_model"], start: int, forks: Sequence[Injection],
               ctx: Context, *, prefix: PrefixKV | None = None) -> Float[Tensor, "n_forks*batch pos d_model"]:
    """The final residual stream of each fork: ``resid`` (the input of block ``start``) run through blocks
    ``start..L-1`` once clean, fork ``g`` branching off at its layer.

    Args:
        model: a TransformerLens model or its adapter.
        resid: the clean residual stream entering block ``start``.
        start: the first block to run (at most every fork's layer).
        forks: one single-layer ``resid_pre`` injection per group, covering all ``batch`` rows
            (``rows=None``).
        ctx: the batch's query positions (and offset: ``prefix.cut`` with a prefix).
        prefix: the frozen keys and values of the positions before ``resid``'s (see
            :meth:`~tvmech.core.adapter.Adapter.run_blocks`).

    Returns:
        ``[len(forks) * batch, pos, d_model]``: group ``g``'s rows are ``g*batch .. (g+1)*batch - 1``.
    """
    ad = adapt(model)
    for f in forks:
        if len(f.layers) != 1 or f.point != "resid_pre" or f.rows is not None:
            raise ValueError("forked_run takes single-layer resid_pre injections over the whole batch, got "
                             f"layers {f.layers}, point {f.point!r}, rows {f.rows}")
    layers = [f.layers[0] for f in forks]
    if not forks or min(layers) < start:
        raise ValueError(f"every fork's layer must be >= start={start}, got layers {layers}")
    n, last_fork = resid.shape[0], max(layers)
    order = sorted(range(len(forks)), key=lambda g: layers[g])  # groups in the order they fork
    clean, forked, taken = resid, [], 0
    for j in range(start, ad.n_layers):
        keep_clean = j < last_fork
        rows = ([clean] if keep_clean else []) + forked
        new = []  # the groups forking here: copies of the clean rows, their vectors written at this block's input
        while taken < len(order) and layers[order[taken]] == j:
            first = len(rows) * n
            new.append(replace(forks[order[taken]], rows=(first, first + n), check_finite=False))
            rows.append(clean)
            taken += 1
        h = run_blocks(ad, torch.cat(rows), j, j + 1, intervention=compose(new) if new else None,
                       ctx=_tiled(ctx, len(rows)) if new else None, prefix=prefix)
        if keep_clean:
            clean, rest = h[:n], h[n:]
        else:
            clean, rest = None, h
        forked = list(rest.split(n)) if rest.shape[0] else []
    by_group = [None] * len(forks)
    for rank, g in enumerate(order):
        by_group[g] = forked[rank]
    return torch.cat(by_group)


def _tiled(ctx: Context, copies: int) -> Context:
    """``ctx`` for ``copies`` copies of its batch stacked along the batch axis."""
    if copies == 1:
        return ctx
    q = ctx.query_pos.repeat(copies) if isinstance(ctx.query_pos, Tensor) else ctx.query_pos
    roles = None if ctx.roles is None else {name: r.repeat(copies) for name, r in ctx.roles.items()}
    return Context(q, offset=ctx.offset, checked=ctx.checked, roles=roles)


__all__ = ["forked_run"]
