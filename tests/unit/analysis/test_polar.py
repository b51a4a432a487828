"""The proper polar decomposition W = Q₊ Σ₊ (the reflection split off when det Q = −1), on maps with known
factors."""

import math

import pytest
import torch

from tvmech.analysis.polar import haar_orthogonal, polar_decomposition, polar_stats, proper_polar, rotation_scaling

D = 9


def rotation(d: int, seed: int) -> torch.Tensor:
    """A Haar-random proper rotation (det +1)."""
    R = haar_orthogonal(d, torch.Generator().manual_seed(seed))
    if torch.linalg.det(R) < 0:
        R = R.clone()
        R[:, 0] = -R[:, 0]
    return R


def spd(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(S, V, s)``: a symmetric positive definite ``S = V diag(s) Vᵀ`` with distinct ``s`` (descending)."""
    V = rotation(d, seed)
    s = torch.linspace(3.0, 0.5, d, dtype=torch.float64)
    return V @ torch.diag(s) @ V.T, V, s


def test_a_proper_map_keeps_its_rotation_and_scaling():
    R, (S, _, _) = rotation(D, 0), spd(D, 1)
    Q, sigma, det = proper_polar(R @ S)
    assert det == 1 and torch.allclose(Q, R, atol=1e-10) and torch.allclose(sigma, S, atol=1e-10)
    assert torch.allclose(Q, polar_decomposition(R @ S)[0], atol=1e-10)


def test_a_reflection_along_the_weakest_direction_is_split_off_exactly():
    """W = R H S with H = I − 2 v vᵀ, v the eigenvector of S's smallest eigenvalue: Q = R H (det −1), Q₊ = R."""
    R, (S, V, s) = rotation(D, 2), spd(D, 3)
    v = V[:, -1]
    H = torch.eye(D, dtype=torch.float64) - 2 * torch.outer(v, v)
    W = R @ H @ S
    Q_orth, _ = polar_decomposition(W)
    assert torch.linalg.det(Q_orth) == pytest.approx(-1) and torch.allclose(Q_orth, R @ H, atol=1e-10)
    Q, sigma, det = proper_polar(W)
    assert det == -1 and torch.linalg.det(Q) == pytest.approx(1)
    assert torch.allclose(Q, R, atol=1e-10) and torch.allclose(sigma, H @ S, atol=1e-10)
    assert torch.allclose(Q @ sigma, W, atol=1e-10) and torch.allclose(sigma, sigma.T, atol=0)
    want = torch.cat([s[:-1], -s[-1:]]).sort().values  # one negative eigenvalue: the reflection, in the scaling
    assert torch.allclose(torch.linalg.eigvalsh(sigma), want, atol=1e-10)
    assert torch.allclose(Q_orth, Q @ H, atol=1e-10)  # Q = Q₊ H


def test_a_reflection_composed_with_a_rotation_gives_the_nearest_rotation():
    """W = R H_u S with a reflection along any u: Q₊ ∈ SO(d), W = Q₊ Σ₊, and no rotation is nearer to W."""
    R, (S, _, _) = rotation(D, 4), spd(D, 5)
    u = torch.randn(D, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    u /= u.norm()
    W = R @ (torch.eye(D, dtype=torch.float64) - 2 * torch.outer(u, u)) @ S
    Q, sigma, det = proper_polar(W)
    assert det == -1 and torch.linalg.det(Q) == pytest.approx(1)
    assert torch.allclose(Q.T @ Q, torch.eye(D, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(Q @ sigma, W, atol=1e-10) and torch.allclose(sigma, sigma.T, atol=0)
    assert (torch.linalg.eigvalsh(sigma) < 0).sum() == 1
    best = (W - Q).norm()
    others = [R, *(rotation(D, 100 + i) for i in range(50))]
    assert all(best <= (W - O).norm() + 1e-12 for O in others)
    # the orthogonal factor is nearer still, but it is not a rotation
    assert (W - polar_decomposition(W)[0]).norm() < best


def test_statistics_are_those_of_the_proper_rotation():
    R, (S, V, _) = rotation(D, 7), spd(D, 8)
    H = torch.eye(D, dtype=torch.float64) - 2 * torch.outer(V[:, -1], V[:, -1])
    theta = torch.arange(1.0, D + 1, dtype=torch.float64)
    stats = rotation_scaling(R @ H @ S, theta)
    assert stats["reflection"] is True and stats["det_q"] == -1
    assert stats["rotation_distance"] == pytest.approx((R - torch.eye(D)).norm().item() / math.sqrt(D))
    assert stats["rotation_distance"] == pytest.approx(math.sqrt(2 - 2 * torch.trace(R).item() / D))
    assert stats["cos_theta_qtheta"] == pytest.approx(torch.cosine_similarity(theta, R @ theta, dim=0).item())
    assert stats["gain"] == pytest.approx(((S @ theta).norm() / theta.norm()).item())
    assert stats["sv_1"] == pytest.approx(3.0)
    proper = polar_stats(R @ S, theta)
    assert proper["reflection"] is False and proper["det_q"] == 1
    assert proper["rotation_distance"] == pytest.approx(stats["rotation_distance"])
    # a pure reflection −I in odd dimension: its nearest rotation is not −I, and is still at distance > 0
    minus = polar_stats(-torch.eye(D, dtype=torch.float64) * 2, theta)
    assert minus["reflection"] is True and 0 < minus["rotation_distance"] < 2
    with pytest.raises(ValueError, match="zero norm"):
        polar_stats(torch.eye(D), torch.zeros(D))
    with pytest.raises(ValueError, match="square"):
        proper_polar(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        proper_polar(torch.full((2, 2), float("nan")))
