"""Issue 11 checks of W_TV(l): per-prompt R², the ray test, the rotation null (Haar rotations)."""

import math

import pytest
import torch
from test_linear_map import THETA, make_toy, toy_batch

import tvmech as tv
from tvmech.analysis.polar import haar_orthogonal, polar_decomposition, rotation_null
from tvmech.analysis.tv_map import (
    MapConfig,
    fit_linear_map,
    fit_prompts,
    fit_tv_map,
    per_prompt_r2,
    r_squared,
    ray_test,
)
from tvmech.experiments import linear_map


def test_linear_toy_gives_per_prompt_r2_one_and_an_exact_ray():
    fit = fit_tv_map(make_toy(), toy_batch(), THETA, 1, MapConfig(n_samples=30, n_heldout=10, seed=1))
    assert len(fit.r2_per_prompt) == 3 and all(r > 1 - 1e-8 for r in fit.r2_per_prompt + fit.r2_per_prompt_centred)
    assert [r["alpha"] for r in fit.ray] == [0.25, 0.5, 2.0, 4.0]
    assert all(r["rel_error"] < 1e-6 and r["cos"] > 1 - 1e-10 for r in fit.ray)
    row = fit.summary()
    assert "theta_rel_error" not in row and row["r2_per_prompt_min"] > 1 - 1e-8 and len(row["r2_per_prompt"]) == 3
    assert row["ray_rel_error_0.25"] < 1e-6 and row["ray_cos_4"] > 1 - 1e-10


def test_per_prompt_r2_measures_each_prompt_against_the_shared_map():
    """Δ_p(x) = M_p x: the fit recovers the mean map (mean-response R² = 1) but explains each prompt only partly."""
    g = torch.Generator().manual_seed(0)
    d, P = 6, 4
    M = torch.eye(d, dtype=torch.float64) + 0.1 * torch.randn(d, d, generator=g, dtype=torch.float64)
    Mp = M + 0.5 * torch.randn(P, d, d, generator=g, dtype=torch.float64)

    def response(X):
        return torch.einsum("pij,bj->bpi", Mp, X.double())

    fit = fit_linear_map(response, torch.ones(d), MapConfig(n_samples=40, n_heldout=30, seed=2))
    assert torch.allclose(fit.W.double(), Mp.mean(0), atol=1e-4) and fit.r2_heldout > 1 - 1e-8
    assert len(fit.r2_per_prompt) == P and all(r < 0.99 for r in fit.r2_per_prompt)
    X = torch.randn(50, d, generator=g, dtype=torch.float64)
    Y = response(X)
    direct = [r_squared(Mp.mean(0), X, Y[:, p]) for p in range(P)]
    assert per_prompt_r2(Mp.mean(0), X, Y) == pytest.approx(direct)
    assert per_prompt_r2(Mp[1], X, Y)[1] == pytest.approx(1.0)
    # a constant offset per prompt lowers the plain per-prompt R² but not the centred one
    shifted = Y + torch.randn(1, P, d, generator=g, dtype=torch.float64)
    assert per_prompt_r2(Mp[1], X, shifted)[1] < 0.9
    assert per_prompt_r2(Mp[1], X, shifted, centred=True)[1] == pytest.approx(1.0)
    assert per_prompt_r2(Mp.mean(0), X, Y, centred=True) == pytest.approx(
        [r_squared(Mp.mean(0), X, Y[:, p] - (Y[:, p] - X @ Mp.mean(0).T).mean(0)) for p in range(P)])
    with pytest.raises(ValueError, match="per-prompt responses"):
        per_prompt_r2(M, X, Y[:, 0])


def test_ray_test_grows_off_a_nonlinear_response():
    fit = fit_linear_map(lambda x: torch.tanh(x), 0.5 * torch.ones(5), MapConfig(n_samples=20, n_heldout=0))
    err = {r["alpha"]: r["rel_error"] for r in fit.ray}
    assert err[0.25] < err[2.0] < err[4.0] and err[4.0] > 0.3
    lin = ray_test(lambda x: 3 * x, 3 * torch.eye(4), torch.ones(4), (-1.0, 10.0))
    assert all(r["rel_error"] < 1e-12 and r["cos"] == pytest.approx(1.0) for r in lin)
    with pytest.raises(ValueError, match="non-zero"):
        MapConfig(ray_alphas=(0.0, 1.0))


def test_haar_rotations_and_the_rotation_null():
    g = torch.Generator().manual_seed(0)
    R = haar_orthogonal(16, g)
    assert torch.allclose(R.T @ R, torch.eye(16, dtype=torch.float64), atol=1e-12)
    d = 64
    u = torch.zeros(d)
    u[0] = 2.0
    theta = torch.randn(d, generator=g)
    null = rotation_null(torch.eye(d), theta, u, n=200, seed=3)
    assert len(null["rot_null"]) == 200 and null["rot_null_n"] == 200
    assert abs(null["rot_null_mean"]) < 3 / math.sqrt(d * 200) * 3
    assert null["rot_null_std"] == pytest.approx(1 / math.sqrt(d), rel=0.2)
    assert null == rotation_null(torch.eye(d), theta, u, n=200, seed=3)
    assert null["rot_null"] != rotation_null(torch.eye(d), theta, u, n=200, seed=4)["rot_null"]
    # batched QR in chunks (any chunk size, any device) draws the rotations haar_orthogonal draws one by one
    g3 = torch.Generator().manual_seed(3)
    one_by_one = [float((haar_orthogonal(d, g3) @ theta.double()) @ (u.double() / 2) / theta.double().norm())
                  for _ in range(200)]
    assert rotation_null(torch.eye(d), theta, u, n=200, seed=3, chunk=7)["rot_null"] == pytest.approx(one_by_one,
                                                                                                      abs=1e-12)
    if torch.cuda.is_available():
        assert rotation_null(torch.eye(d), theta, u, n=200, seed=3, device="cuda")["rot_null"] == pytest.approx(
            one_by_one, abs=1e-10)
    # a rotation taking θ onto ū beats every draw; one taking it onto −ū none
    onto = polar_decomposition(torch.outer(u, theta) + 1e-3 * torch.eye(d))[0]  # Q θ ∝ ū (approximately)
    top = rotation_null(onto, theta, u, n=200, seed=3)
    assert top["rot_align"] > 0.99 and top["rot_null_count_ge"] == 0 and top["rot_null_percentile"] == 100
    bottom = rotation_null(-onto, theta, u, n=200, seed=3)
    assert bottom["rot_null_count_ge"] == 200 and bottom["rot_null_percentile"] == 0
    with pytest.raises(ValueError, match="n >= 1"):
        rotation_null(torch.eye(d), theta, u, n=0)


def test_linear_map_run_rows_have_the_new_columns(tiny):
    cfg = linear_map.Config(tasks=("capitalize",), layers=(1,), ltv_steps=1, map_prompts=3, map_samples=8,
                            map_heldout=4, map_solver="ridge", map_null=20, n_test=3)
    (row,) = linear_map.run(tiny, cfg).rows()
    assert row["n_prompts"] == 3 and len(row["r2_per_prompt"]) == 3
    assert {f"ray_rel_error_{a:g}" for a in cfg.map_ray} <= set(row)
    assert len(row["rot_null"]) == 20 and 0 <= row["rot_null_percentile"] <= 100 and 0 <= row["rot_null_count_ge"] <= 20
    assert row["rot_align"] == pytest.approx(row["align_qtheta"], abs=1e-5)
    assert row["scoring"] == tv.builtin_task("capitalize").scoring
    with pytest.raises(ValueError, match="linear map_null 0"):
        linear_map.Config(map_null=0)


def test_linear_map_rows_hold_the_polar_statistics_of_j_and_the_random_vector_null(tiny):
    cfg = linear_map.Config(tasks=("capitalize",), layers=(1,), ltv_steps=1, map_prompts=3, map_samples=8,
                            map_heldout=4, map_solver="ridge", map_null=5, n_test=3, map_random=4, map_random_fits=2)
    (row,) = linear_map.run(tiny, cfg).rows()
    for pre in ("", "jac_", "vanilla_", "vanilla_jac_"):
        assert 0 <= row[f"{pre}rotation_distance"] <= 2 and -1 <= row[f"{pre}cos_theta_qtheta"] <= 1
        assert row[f"{pre}gain"] > 0 and row[f"{pre}reflection"] == (row[f"{pre}det_q"] < 0)
    assert row["null_n"] == 4 and row["null_fits"] == 2 and row["vanilla_theta_norm"] > 0
    for pre, n in (("jac_", 4), ("", 2)):
        for stat in ("rotation_distance", "cos_theta_qtheta", "gain"):
            assert len(row[f"null_{pre}{stat}"]) == n and 0 <= row[f"null_{pre}{stat}_percentile"] <= 100
            assert row[f"null_{pre}{stat}_specific"] in (True, False)
    # the null's vectors have θ's norm, so J at them is J at other points than θ: their statistics differ
    assert row["jac_rotation_distance"] not in row["null_jac_rotation_distance"]
    assert row["r2_per_prompt_centred_median"] >= row["r2_per_prompt_centred_min"]
    with pytest.raises(ValueError, match="linear map_random 1 / linear map_random_fits .* the first must be 0 or >= 2"):
        linear_map.Config(map_random=1)
    with pytest.raises(ValueError, match="map_random_fits 3 .* the second from 0 to the first"):
        linear_map.Config(map_random=2, map_random_fits=3)
    task = tv.builtin_task("capitalize")
    bare = linear_map.Config(map_random=0, map_vanilla=0, map_samples=8, map_solver="ridge")
    none = linear_map.null_report(tiny, bare, task, fit_prompts(tiny, task, task.examples[:2]), torch.ones(64), 1,
                                  torch.eye(64))
    assert "jac_rotation_distance" in none and not any(k.startswith(("null_jac_r", "vanilla_")) for k in none)
