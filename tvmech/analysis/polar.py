"""Rotation vs scaling: the polar decomposition of a linear map ``W_TV(l)`` (or of its exact Jacobian ``J``).

Polar decomposition. With the SVD ``W = U S Vᵀ`` (singular values ``s_1 ≥ … ≥ s_d ≥ 0``), ``W = Q Σ`` with
``Q = U Vᵀ`` orthogonal and ``Σ = V S Vᵀ = (WᵀW)^{1/2}`` symmetric positive semi-definite
(:func:`polar_decomposition`): θ is first stretched by ``Σ`` then turned by ``Q``. ``Q`` is the orthogonal
matrix nearest to ``W`` (Frobenius norm).

Reflections. ``det Q = det U · det V = ±1``. When it is −1, ``Q`` is not a rotation: it includes a reflection.
The proper polar decomposition (:func:`proper_polar`, the special orthogonal Procrustes / Kabsch solution)
flips the sign of the last column ``u_d`` of ``U`` (the smallest singular value's): with ``F = diag(1, …, 1, −1)``,

    W = (U F Vᵀ)(V F S Vᵀ) = Q₊ Σ₊,    Q₊ = Q H,    H = V F Vᵀ = I − 2 v_d v_dᵀ,

so ``Q₊ ∈ SO(d)`` is the rotation nearest to ``W``, ``Σ₊ = H Σ`` is symmetric with eigenvalues
``s_1, …, s_{d−1}, −s_d`` (one negative: the reflection, across the hyperplane orthogonal to ``v_d``, is
put into the scaling, along the direction ``W`` shrinks most) and ``Q = Q₊ H``. When ``det Q = +1``,
``Q₊ = Q`` and ``Σ₊ = Σ``. ``‖Q₊ − Q‖_F = ‖H − I‖_F = 2``, so in d dimensions the rotation distance below moves
by at most ``2/√d`` (0.08 at d = 576).

Statistics (:func:`polar_stats`, :func:`rotation_scaling`), always of the proper rotation ``Q₊`` (``reflection``
says whether a reflection was split off, ``det_q`` is ``det Q`` of the orthogonal factor):

* ``rotation_distance = ‖Q₊ − I‖_F / ‖I‖_F = ‖Q₊ − I‖_F / √d``. For orthogonal ``Q₊`` this is
  ``√(2 − 2 tr(Q₊)/d)``: 0 for the identity, ≈ √2 ≈ 1.41 for a random rotation (``tr Q₊ ≈ 0``), 2 for ``−I``;
* ``cos_theta_qtheta = cos(θ, Q₊θ)``: how far the rotation turns this particular vector;
* ``gain = ‖Σθ‖ / ‖θ‖`` (``= ‖Wθ‖/‖θ‖ = ‖Σ₊θ‖/‖θ‖`` since ``Q`` and ``H`` preserve norms) and
  ``sv_1 ≥ sv_2 ≥ …`` the top singular values of ``W``;
* ``det_q``: +1 for a proper rotation, −1 when the orthogonal polar factor includes a reflection.

Rotation null (:func:`rotation_null`). Does ``Q₊`` turn θ toward the task direction ``ū`` (the normalised mean
label direction of :mod:`tvmech.analysis.lens`) more than a random rotation would? ``R`` is drawn from the Haar
measure on O(d) (:func:`haar_orthogonal`: QR of a standard Gaussian matrix, columns' signs fixed by
``sign(diag R)``; seeded), ``n`` times; the null is the distribution of ``cos(Rθ, ū)`` (for Haar ``R``, that of
a uniform unit vector's cosine with ``ū``: mean 0, sd ≈ 1/√d; the same on SO(d) for d ≥ 2), and the actual
rotation's ``cos(Q₊θ, ū)`` is placed in it by the count of draws at least as aligned and its percentile (share
of draws below it).

Whether the statistics above are specific to a task vector (rather than what any vector of the same norm gets)
is :mod:`tvmech.analysis.polar_null`'s question. :func:`tvmech.experiments.linear_map.polar_report` adds, with
the model, the alignment (:mod:`tvmech.analysis.lens`: cosine with the task's mean label direction ``ū``, and the
maximum over its labels of the cosine with ``u_t``) of θ, ``Q₊θ`` and ``Wθ``, and the tokens the logit lens
decodes from each.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from jaxtyping import Float
from torch import Tensor


def polar_decomposition(W: Float[Tensor, "d d"]) -> tuple[Float[Tensor, "d d"], Float[Tensor, "d d"]]:
    """``(Q, Σ)`` with ``W = Q Σ``, ``Q`` orthogonal, ``Σ`` symmetric PSD (float64, CPU)."""
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"the polar decomposition needs a square matrix, got shape {tuple(W.shape)}")
    if not torch.isfinite(W).all():
        raise ValueError("W has NaN or infinite entries")
    Q, S = scipy.linalg.polar(W.detach().double().cpu().numpy(), side="right")
    S = (S + S.T) / 2  # exactly symmetric (scipy's is symmetric up to rounding)
    return torch.from_numpy(np.ascontiguousarray(Q)), torch.from_numpy(np.ascontiguousarray(S))


def proper_polar(W: Float[Tensor, "d d"]) -> tuple[Float[Tensor, "d d"], Float[Tensor, "d d"], int]:
    """``(Q₊, Σ₊, det Q)`` with ``W = Q₊ Σ₊``, ``Q₊ ∈ SO(d)`` the rotation nearest to ``W`` and ``Σ₊`` symmetric
    (one negative eigenvalue when ``det Q = −1``; see the module docstring). Float64 on the CPU.

    Args:
        W: a square, finite matrix.

    Returns:
        The proper rotation, the symmetric factor, and the sign of ``det Q`` of the orthogonal polar factor.
    """
    if W.ndim != 2 or W.shape[0] != W.shape[1]:
        raise ValueError(f"the polar decomposition needs a square matrix, got shape {tuple(W.shape)}")
    if not torch.isfinite(W).all():
        raise ValueError("W has NaN or infinite entries")
    W = W.detach().double().cpu()
    U, S, Vh = torch.linalg.svd(W)
    det = int(torch.sign(torch.linalg.det(U) * torch.linalg.det(Vh)))
    if det < 0:
        U = U.clone()
        U[:, -1] = -U[:, -1]
        S = S.clone()
        S[-1] = -S[-1]
    Q = U @ Vh
    sigma = Vh.T @ (S[:, None] * Vh)
    return Q, (sigma + sigma.T) / 2, det


def polar_stats(W: Float[Tensor, "d d"], theta: Float[Tensor, " d"]) -> dict:
    """``rotation_distance``, ``cos_theta_qtheta``, ``gain``, ``det_q`` and ``reflection`` of ``W`` and θ, the
    rotation being the proper one ``Q₊`` (see the module docstring)."""
    Q, S, det = proper_polar(W)
    th = theta.detach().double().cpu().reshape(-1)
    if th.shape[0] != Q.shape[0]:
        raise ValueError(f"θ has size {th.shape[0]}; W is {Q.shape[0]}x{Q.shape[0]}")
    if th.norm() == 0:
        raise ValueError("θ has zero norm")
    d = Q.shape[0]
    return {"rotation_distance": float((Q - torch.eye(d, dtype=Q.dtype)).norm() / d**0.5),
            "cos_theta_qtheta": float(torch.nn.functional.cosine_similarity(th, Q @ th, dim=0)),
            "gain": float((S @ th).norm() / th.norm()), "det_q": float(det), "reflection": det < 0}


def rotation_scaling(W: Float[Tensor, "d d"], theta: Float[Tensor, " d"], top: int = 5) -> dict:
    """:func:`polar_stats` plus the ``top`` singular values ``sv_1, sv_2, …`` of ``W``."""
    out = polar_stats(W, theta)
    sv = torch.linalg.svdvals(W.detach().double().cpu())
    out.update({f"sv_{i + 1}": float(s) for i, s in enumerate(sv[:top])})
    return out


def haar_orthogonal(d: int, generator: torch.Generator) -> Float[Tensor, "d d"]:
    """A Haar-random orthogonal ``d × d`` matrix (float64): ``Q · sign(diag R)`` for ``QR`` of a Gaussian matrix."""
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    return _haar(torch.randn(d, d, generator=generator, dtype=torch.float64))


def _haar(gaussian: Float[Tensor, "*n d d"]) -> Float[Tensor, "*n d d"]:
    """``Q · sign(diag R)`` for the QR of each Gaussian matrix (batched; on the matrices' device)."""
    q, r = torch.linalg.qr(gaussian)
    signs = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    return q * torch.where(signs == 0, torch.ones_like(signs), signs)[..., None, :]


def rotation_null(Q: Float[Tensor, "d d"], theta: Float[Tensor, " d"], direction: Float[Tensor, " d"], *,
                  n: int = 200, seed: int = 0, device: str | torch.device | None = None, chunk: int = 50) -> dict:
    """``cos(Qθ, ū)`` against its null over ``n`` Haar-random orthogonal ``R`` (see the module docstring).

    Args:
        Q: the rotation (the proper rotation ``Q₊`` of ``W``, :func:`proper_polar`).
        theta: the task vector θ.
        direction: the task direction ``ū``.
        n: null draws (>= 1).
        seed: the draws' seed.
        device: where the QR factorisations run (``None``: the CPU); the Gaussian draws are always made by the
            CPU generator, one ``d × d`` matrix after another, so every device sees the same rotations.
        chunk: draws factorised per batched QR.

    Returns:
        ``rot_align`` (= cos(Qθ, ū)), ``rot_null`` (the ``n`` null cosines), ``rot_null_mean``, ``rot_null_std``,
        ``rot_null_q05`` / ``rot_null_q95``, ``rot_null_count_ge`` (draws with cos >= the actual one),
        ``rot_null_percentile`` (100 × share of draws below it) and ``rot_null_n``.
    """
    if n < 1:
        raise ValueError(f"the rotation null needs n >= 1 draws, got {n}")
    th = theta.detach().double().cpu().reshape(-1)
    u = direction.detach().double().cpu().reshape(-1)
    Q = Q.detach().double().cpu()
    if not (Q.shape == (th.shape[0], th.shape[0]) and u.shape == th.shape):
        raise ValueError(f"shapes do not fit: Q {tuple(Q.shape)}, θ {tuple(th.shape)}, ū {tuple(u.shape)}")
    if th.norm() == 0 or u.norm() == 0:
        raise ValueError("θ and ū must be non-zero")
    u = u / u.norm()
    g = torch.Generator().manual_seed(seed)
    dev = torch.device("cpu") if device is None else torch.device(device)
    d, parts = len(th), []
    for start in range(0, n, chunk):
        gauss = torch.stack([torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(min(chunk, n - start))])
        parts.append((_haar(gauss.to(dev)) @ th.to(dev) @ u.to(dev)).cpu())
    null = torch.cat(parts) / th.norm()
    actual = float((Q @ th) @ u / (Q @ th).norm())
    return {"rot_align": actual, "rot_null": null.tolist(), "rot_null_mean": float(null.mean()),
            "rot_null_std": float(null.std()) if n > 1 else 0.0, "rot_null_q05": float(null.quantile(0.05)),
            "rot_null_q95": float(null.quantile(0.95)), "rot_null_count_ge": int((null >= actual).sum()),
            "rot_null_percentile": float(100 * (null < actual).double().mean()), "rot_null_n": n}


__all__ = ["polar_decomposition", "proper_polar", "polar_stats", "rotation_scaling", "haar_orthogonal", "rotation_null"]
