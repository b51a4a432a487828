"""W_TV(l) at scale (issue 29): the fit runs only the positions from the earliest query on (the prefix's keys and
values frozen), in large passes, and solves by QR on the model's device; on every architecture of the matrix it
equals the fit as it was (every position, passes of 32 vectors, the host's SVD least squares)."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.tv_map import (
    ROWS_PER_PASS,
    MapConfig,
    fit_prompts,
    fit_tv_map,
    perturbations,
    r_squared,
    solve,
    tv_response,
)


def reference_fit(model, batch, theta, layer, config):
    """The fit before issue 29: every position run, in passes of 32 vectors, ``gelsd`` on the CPU, R² on the CPU."""
    response = tv_response(model, batch, layer, per_prompt=True, frozen=False)
    n = config.samples_for(theta.numel())

    def run(X):
        return torch.cat([response(X[s : s + 32]).double().cpu().mean(1) for s in range(0, len(X), 32)])

    X = perturbations(theta, n, config.noise_scales, torch.Generator().manual_seed(config.seed))
    Y = run(X)
    W = torch.linalg.lstsq(X, Y, driver="gelsd").solution.T
    Xh = perturbations(theta, config.n_heldout, config.noise_scales,
                       torch.Generator().manual_seed(config.seed + 1_000_003))
    return W, r_squared(W, X, Y), r_squared(W, Xh, run(Xh))


def test_the_fit_equals_the_old_fit_on_every_architecture(arch, make_arch):
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    task = tv.builtin_task("capitalize")
    batch = fit_prompts(model, task, task.examples[:3])
    theta = torch.randn(ad.d_model, generator=torch.Generator().manual_seed(3))
    theta = theta * float(ad.residual(batch.tokens[:, :1], 1).norm(dim=-1).mean())
    config = MapConfig(n_heldout=32, seed=1)
    fit = fit_tv_map(model, batch, theta, 1, config)
    W, r2_train, r2_held = reference_fit(model, batch, theta, 1, config)
    assert float((fit.W.double() - W).norm() / W.norm()) < 1e-4
    assert fit.r2_train == pytest.approx(r2_train, abs=1e-4) and fit.r2_heldout == pytest.approx(r2_held, abs=1e-4)
    assert fit.n_samples == 2 * ad.d_model and config.batch_size is None  # passes of ~ROWS_PER_PASS rows
    assert ROWS_PER_PASS // len(batch) > 32


def test_qr_solve_equals_the_svd_and_falls_back_on_a_singular_design():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 12, generator=g, dtype=torch.float64) + 3.0
    Y = torch.randn(40, 12, generator=g, dtype=torch.float64)
    svd = torch.linalg.lstsq(X, Y, driver="gelsd").solution.T
    assert torch.allclose(solve(X, Y), svd, atol=1e-10)
    Xs = X.clone()
    Xs[:, 5] = Xs[:, 4]  # rank-deficient: the minimum-norm solution, as before
    assert torch.allclose(solve(Xs, Y), torch.linalg.lstsq(Xs, Y, driver="gelsd").solution.T, atol=1e-8)


def test_the_jacobian_solver_is_the_exact_jacobian_with_the_same_quality_fields(tiny):
    task = tv.builtin_task("capitalize")
    batch = fit_prompts(tiny, task, task.examples[:3])
    theta = torch.randn(64, generator=torch.Generator().manual_seed(4))
    fit = fit_tv_map(tiny, batch, theta, 1, MapConfig(solver="jacobian", n_heldout=16))
    J = tv.exact_jacobian(tiny, batch, theta, 1)
    assert torch.allclose(fit.W, J) and fit.n_samples == 0 and fit.r2_train != fit.r2_train  # NaN
    Xh = perturbations(theta, 16, (0.05, 0.1, 0.2), torch.Generator().manual_seed(1_000_003))
    Yh = tv_response(tiny, batch, 1)(Xh)
    assert fit.r2_heldout == pytest.approx(r_squared(J, Xh, Yh), abs=1e-6)
    assert len(fit.r2_per_prompt_centred) == 3 and len(fit.ray) == 4
    noise = fit_tv_map(tiny, batch, theta, 1, MapConfig(n_heldout=16))
    assert float((noise.W - J).norm() / J.norm()) < 0.2  # the noise fit is near the local Jacobian
