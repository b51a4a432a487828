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


__all__ = ["polar_decomposition", "rotation_scaling"]
