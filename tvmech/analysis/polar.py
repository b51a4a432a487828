"""Rotation vs scaling: the polar decomposition of a linear map ``W_TV(l)``.

``W = Q Σ`` (``scipy.linalg.polar``, side ``right``) with ``Q`` orthogonal and ``Σ = (WᵀW)^{1/2}``
symmetric positive semi-definite: θ is first stretched by ``Σ`` then rotated by ``Q``. Per map and
vector θ (:func:`rotation_scaling`):

* ``rotation_distance = ‖Q − I‖_F / ‖I‖_F = ‖Q − I‖_F / √d``. For orthogonal ``Q`` this is
  ``√(2 − 2 tr(Q)/d)``: 0 for the identity, ≈ √2 ≈ 1.41 for a random rotation (``tr Q ≈ 0``), 2 for ``−I``;
* ``cos_theta_qtheta = cos(θ, Qθ)``: how far ``Q`` turns this particular vector;
* ``gain = ‖Σθ‖ / ‖θ‖`` (``= ‖Wθ‖/‖θ‖`` since ``Q`` preserves norms) and ``sv_1 ≥ sv_2 ≥ …`` the top
  singular values of ``W`` (the eigenvalues of ``Σ``);
* ``det_q``: +1 for a proper rotation, −1 when ``Q`` includes a reflection.

Rotation null (:func:`rotation_null`). Does ``Q`` turn θ toward the task direction ``ū`` (the normalised mean
label direction of :mod:`tvmech.analysis.lens`) more than a random rotation would? ``R`` is drawn from the Haar
measure on O(d) (:func:`haar_orthogonal`: QR of a standard Gaussian matrix, columns' signs fixed by
``sign(diag R)``; seeded), ``n`` times; the null is the distribution of ``cos(Rθ, ū)`` (for Haar ``R``, that of
a uniform unit vector's cosine with ``ū``: mean 0, sd ≈ 1/√d), and the actual rotation's ``cos(Qθ, ū)`` is
placed in it by the count of draws at least as aligned and its percentile (share of draws below it).

:func:`tvmech.experiments.linear_map.polar_report` adds, with the model, the alignment
(:mod:`tvmech.analysis.lens`: cosine with the task's mean label direction ``ū``, and the maximum over its
labels of the cosine with ``u_t``) of θ, ``Qθ`` and ``Wθ``, and the tokens the logit lens decodes from each.
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


def rotation_scaling(W: Float[Tensor, "d d"], theta: Float[Tensor, " d"], top: int = 5) -> dict:
    """Rotation and scaling numbers of ``W`` and of its action on θ (see the module docstring)."""
    Q, S = polar_decomposition(W)
    th = theta.detach().double().cpu().reshape(-1)
    if th.shape[0] != Q.shape[0]:
        raise ValueError(f"θ has size {th.shape[0]}; W is {Q.shape[0]}x{Q.shape[0]}")
    d = Q.shape[0]
    q_theta = Q @ th
    sv = torch.linalg.svdvals(W.detach().double().cpu())
    out = {"rotation_distance": float((Q - torch.eye(d, dtype=Q.dtype)).norm() / d**0.5),
           "cos_theta_qtheta": float(torch.nn.functional.cosine_similarity(th, q_theta, dim=0)),
           "gain": float((S @ th).norm() / th.norm()),
           "det_q": float(np.sign(np.linalg.slogdet(Q.numpy())[0]))}
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
        Q: the rotation (the orthogonal polar factor of ``W``).
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


__all__ = ["polar_decomposition", "rotation_scaling", "haar_orthogonal", "rotation_null"]
