"""Task vectors from the per-example ICL-minus-zero-shot differences: their mean and their first principal component.

With ``h_l(P)`` the residual stream entering block ``l`` at the last token of prompt ``P``, ``ICL_i`` a k-shot prompt
of query ``x_i`` and ``ZS_i`` its zero-shot prompt, the per-example difference is ``d_i = h_l(ICL_i) − h_l(ZS_i)``
(``D = [d_1 … d_n]``, ``n`` source examples) and ``d̄ = mean_i d_i``:

* ``mean_diff``: ``θ = d̄``, the Vanilla TV's ``add`` form (Hendel et al. 2023; Yang et al. 2026's baseline;
  :func:`tvmech.methods.vanilla.vanilla_task_vector` computes the same vector from two mean passes);
* ``pca_diff``: ``u`` = the first principal component of the differences, *centred* (``d_i − d̄``), as repeng's
  ``pca_diff`` computes it (Vogel 2024, ``repeng/extract.py``: ``sklearn.decomposition.PCA``, which centres);
* ``pca_center``: ``u`` = the first principal component of the ICL and zero-shot states with each pair centred at its
  midpoint (``±d_i / 2``, 2n rows: repeng's ``pca_center``); those rows have mean zero, so this is the first right
  singular vector of the *uncentred* ``D`` (the direction of largest mean square of the differences, which leans
  towards ``d̄`` when the shift is shared).

Both PCA directions are unit vectors with a sign ambiguity; the sign is chosen so that ``⟨u, d̄⟩ ≥ 0`` (repeng picks it
by a majority vote over pairs; here it is aligned with the mean difference). The vector injected is ``‖d̄‖ · u``, so
that at strength α = 1 every method of this module has the Vanilla TV's norm (α scales it:
:func:`tvmech.analysis.site_selection.select_site`). On rank-1 differences ``d_i = c_i v`` (``c_i > 0``, not all
equal) both directions are ``v / ‖v‖``, the normalised mean difference (``tests/unit/methods/test_pca_vectors.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.core.checks import check_choice
from tvmech.data.prompts import make_prompts
from tvmech.data.tasks import Example, Task
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.vanilla import query_states_at

Kind = Literal["mean_diff", "pca_diff", "pca_center"]
KINDS: tuple[str, ...] = get_args(Kind)


def first_component(x: Float[Tensor, "n d"], center: bool = True) -> Float[Tensor, " d"]:
    """The first principal direction of the rows of ``x`` (unit norm, sign arbitrary): the top right singular
    vector of ``x`` (centred first when ``center``), computed in float64.

    Raises:
        ValueError: the (centred) rows are all zero, up to 1e-5 of ``‖x‖`` (float32 rounding): no direction.
    """
    x = x.double()
    scale = float(x.norm())
    if center:
        x = x - x.mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    if not s.numel() or s[0] <= 1e-5 * scale:  # zero, or float32 rounding of equal rows
        raise ValueError(f"no principal direction: the {'centred ' * center}rows are all zero "
                         f"({x.shape[0]} rows; centred PCA needs at least two distinct rows)")
    return vh[0].float()


def aligned(direction: Float[Tensor, " d"], reference: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """``direction`` with its sign flipped where needed so that ``⟨direction, reference⟩ ≥ 0``."""
    return -direction if float(direction.double() @ reference.double()) < 0 else direction


def difference_vector(icl: Float[Tensor, "n d"], zs: Float[Tensor, "n d"], kind: Kind = "pca_diff"
                      ) -> Float[Tensor, " d"]:
    """The task vector of ``kind`` from paired ICL and zero-shot states (see the module docstring).

    Args:
        icl: ``h_l(ICL_i)``, one row per source example.
        zs: ``h_l(ZS_i)``, the same examples zero-shot.
        kind: ``mean_diff``, ``pca_diff`` or ``pca_center``.

    Returns:
        ``d̄`` for ``mean_diff``, else ``‖d̄‖ · u`` with ``u`` the sign-aligned first principal direction (the zero
        vector where every difference is zero).

    Raises:
        ValueError: ``pca_diff`` of equal, non-zero differences (no variance left after centring).
    """
    check_choice(kind, "kind", KINDS)
    if icl.shape != zs.shape or icl.ndim != 2:
        raise ValueError(f"icl and zs states must be two [n, d] tensors of one shape, got {tuple(icl.shape)} and "
                         f"{tuple(zs.shape)}")
    d = icl.double() - zs.double()
    mean = d.mean(0)
    if kind == "mean_diff":
        return mean.float()
    if not bool(d.abs().max() > 0):  # no difference at all (block 0 reads the query token's embedding: the same
        return torch.zeros_like(icl, dtype=torch.float32)[0]  # token in both prompts): the zero vector, as d̄
    if kind == "pca_diff":
        u = first_component(d, center=True)
    else:  # pairs centred at their midpoints: rows ±d_i/2, mean zero
        u = first_component(torch.cat([d / 2, -d / 2]), center=True)
    return (aligned(u, mean.float()).double() * mean.norm()).float()


def extracted_vector(model, task: Task, layer: int, kind: Kind = "pca_diff", queries: Sequence[Example] | None = None,
                     demos: Sequence[Example] | None = None, *, k: int = 5, n: int = 32, seed: int = 0,
                     batch_size: int = 16) -> TaskVector:
    """The ``kind`` vector at ``layer`` from ``n`` source examples (default: the train split for both the queries
    and the demonstrations), added at the query of zero-shot prompts.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task; ``queries`` and ``demos`` default to its training split (seed ``seed``).
        layer: the block whose input is read and later written.
        kind: ``mean_diff``, ``pca_diff`` or ``pca_center``.
        k: demonstrations per ICL prompt; n: the most source examples (queries) used.

    Returns:
        The :class:`TaskVector` (method ``kind``), with ``metrics["cos_mean"]`` (cosine with ``d̄``).
    """
    ad = adapt(model)
    ad.hook_name(layer)
    sp = task.splits(seed)
    queries = list(sp.train if queries is None else queries)[:n]
    demos = sp.train if demos is None else demos
    if not queries:
        raise ValueError(f"task {task.name!r}: no queries to extract a vector from")
    icl = query_states_at(ad, task, make_prompts(task, queries, k, demos, seed=seed), (layer,), batch_size)[:, 0]
    zs = query_states_at(ad, task, make_prompts(task, queries, 0), (layer,), batch_size)[:, 0]
    v = difference_vector(icl, zs, kind)
    mean = (icl - zs).mean(0)
    cos = float(v @ mean / (v.norm() * mean.norm()).clamp_min(1e-12))
    return TaskVector.for_model(ad, v[None, None], (layer,), (-1,), task=task.name, method=kind,
                                config={"k": k, "n": len(queries), "seed": seed}, metrics={"cos_mean": cos})


__all__ = ["Kind", "KINDS", "first_component", "aligned", "difference_vector", "extracted_vector"]
