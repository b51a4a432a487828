"""The linear map W_TV(l), its exact Jacobian and the polar decomposition.

The known-answer tests use a purely linear toy "transformer" (:class:`LinearToy`, an Adapter whose
blocks are linear): block ``l`` maps the residual at position ``p`` to ``A_l h[p] + B_l mean_{j<p} h[j]``.
A vector added at the query position ``q`` entering block ``l`` changes position ``q`` of the final
stream by exactly ``A_{L−1} ⋯ A_l x`` (the prefix mixing only reads earlier positions, which the vector
does not touch, but it does change the baseline that the fit must subtract).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import query_logits
from tvmech.analysis.polar import polar_decomposition, rotation_scaling
from tvmech.analysis.tv_map import (
    MapConfig,
    compare_maps,
    exact_jacobian,
    final_injection,
    fit_linear_map,
    fit_prompts,
    fit_tv_map,
    solve,
)
from tvmech.core.adapter import Adapter
from tvmech.data.prompts import Batch
from tvmech.experiments.linear_map import reconstruction_report

PAPER = ["--preset", "paper"]  # the committed settings (the default preset is quick)


@dataclass(frozen=True)
class LinearToy(Adapter):
    """An Adapter over linear blocks (float64): ``h'[p] = A_l h[p] + B_l · mean_{j<p} h[j]``, with
    ``blocks.{l}.hook_resid_pre`` hooks (what the injection engine writes through)."""

    A: Any = None  # [n_layers, d, d]
    B: Any = None  # [n_layers, d, d]
    E: Any = None  # [vocab, d] embedding
    attached: dict = field(default_factory=dict)  # hook name -> hook functions (resid_pre only, as the engine uses)

    @property
    def n_layers(self) -> int:
        return self.A.shape[0]

    @property
    def d_model(self) -> int:
        return self.A.shape[1]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    def residual(self, tokens, layer):
        self.check_layer(layer, allow_final=True)
        return self.run_blocks(self.E[tokens], 0, layer)

    def run_blocks(self, resid, start, stop=None, *, prefix=None):
        assert prefix is None, "the linear toy has no frozen prefix"
        stop = self.n_layers if stop is None else stop
        h = resid
        count = torch.arange(h.shape[1], dtype=h.dtype).clamp_min(1)[None, :, None]
        for l in range(start, stop):
            for fn in self.attached.get(f"blocks.{l}.hook_resid_pre", []):
                out = fn(h, None)
                h = h if out is None else out
            prefix_mean = (h.cumsum(1) - h) / count  # mean over earlier positions (0 at position 0)
            h = h @ self.A[l].T + prefix_mean @ self.B[l].T
        return h

    @contextlib.contextmanager
    def hooks(self, fwd_hooks):
        if any(not name.endswith("hook_resid_pre") for name, _ in fwd_hooks):
            raise NotImplementedError("the linear toy has resid_pre hooks only")
        for name, fn in fwd_hooks:
            self.attached.setdefault(name, []).append(fn)
        try:
            yield
        finally:
            for name, fn in fwd_hooks:
                self.attached[name].remove(fn)

    def product(self, layer: int) -> torch.Tensor:
        """The exact map from a vector added before block ``layer`` to the final stream at that position."""
        M = torch.eye(self.d_model, dtype=torch.float64)
        for l in range(layer, self.n_layers):
            M = self.A[l] @ M
        return M


def make_toy(d: int = 12, n_layers: int = 4, vocab: int = 20, seed: int = 0) -> LinearToy:
    g = torch.Generator().manual_seed(seed)
    A = torch.eye(d, dtype=torch.float64) + 0.4 * torch.randn(n_layers, d, d, generator=g, dtype=torch.float64) / d**0.5
    B = 0.5 * torch.randn(n_layers, d, d, generator=g, dtype=torch.float64) / d**0.5
    return LinearToy(model=None, A=A, B=B, E=torch.randn(vocab, d, generator=g, dtype=torch.float64))


def toy_batch() -> Batch:
    tokens = torch.tensor([[1, 2, 3, 4, 0, 0], [5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]])
    q = torch.tensor([3, 5, 2])
    return Batch(tokens, q, torch.zeros(3, dtype=torch.long), torch.full_like(tokens, -100), q + 1)


THETA = torch.linspace(-1, 1, 12, dtype=torch.float64) + 0.3


# ------------------------------------------------------------------------------- known answers (linear toy)
@pytest.mark.parametrize("layer", [0, 1, 3])
def test_fit_recovers_the_exact_map_of_a_linear_model(layer):
    toy = make_toy()
    fit = fit_tv_map(toy, toy_batch(), THETA, layer, MapConfig(n_samples=30, n_heldout=10, seed=1))
    expected = toy.product(layer)
    assert fit.W.shape == (12, 12)
    assert torch.allclose(fit.W.double(), expected, atol=1e-5), (fit.W.double() - expected).abs().max()
    assert fit.r2_heldout > 1 - 1e-8 and fit.r2_train > 1 - 1e-8
    assert fit.theta_rel_error < 1e-5 and fit.n_prompts == 3
    # the map of another layer is a different matrix: the test can tell layers apart
    assert not torch.allclose(toy.product(layer), toy.product(layer + 1 if layer < 3 else 0), atol=1e-2)


def test_ridge_with_fewer_samples_than_d_still_runs_and_tiny_ridge_is_close():
    toy = make_toy()
    few = fit_tv_map(toy, toy_batch(), THETA, 1, MapConfig(n_samples=6, n_heldout=8, solver="ridge", ridge=1e-2))
    assert few.W.shape == (12, 12) and math.isfinite(few.r2_heldout)
    assert few.r2_heldout < 0.99  # 6 samples cannot pin down a 12x12 map
    tiny_ridge = fit_tv_map(toy, toy_batch(), THETA, 1, MapConfig(n_samples=40, solver="ridge", ridge=1e-9))
    assert torch.allclose(tiny_ridge.W.double(), toy.product(1), atol=1e-4)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_jacobian_equals_the_map_on_a_linear_model(mode):
    toy = make_toy()
    J = exact_jacobian(toy, toy_batch(), THETA, 2, mode=mode)
    assert torch.allclose(J.double(), toy.product(2), atol=1e-5)
    fit = fit_tv_map(toy, toy_batch(), THETA, 2, MapConfig(n_samples=24, n_heldout=0))
    cmp = compare_maps(J, fit.W, THETA)
    assert cmp["jac_rel_frobenius"] < 1e-5 and cmp["jac_cosine"] > 1 - 1e-8 and cmp["jac_rel_theta"] < 1e-5


def test_solve_on_random_linear_data_and_generic_fit():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(8, 8, generator=g, dtype=torch.float64)
    X = torch.randn(20, 8, generator=g, dtype=torch.float64)
    assert torch.allclose(solve(X, X @ W.T), W, atol=1e-10)
    fit = fit_linear_map(lambda x: x @ W.T, torch.ones(8), MapConfig(n_samples=16, n_heldout=4))
    assert torch.allclose(fit.W.double(), W, atol=1e-4) and fit.r2_heldout > 1 - 1e-8


def test_a_nonlinear_response_gives_r2_below_one():
    fit = fit_linear_map(lambda x: torch.tanh(3 * x), torch.ones(6), MapConfig(n_samples=60, n_heldout=30,
                                                                             noise_scales=(1.0,)))
    assert fit.r2_heldout < 0.99


# ------------------------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_clear_errors():
    toy = make_toy()
    with pytest.raises(ValueError, match="λ > 0"):
        MapConfig(noise_scales=(0.1, 0.0))
    with pytest.raises(ValueError, match="λ > 0"):
        MapConfig(noise_scales=(-0.5,))
    with pytest.raises(ValueError, match="n_samples >= d_model = 12"):
        fit_tv_map(toy, toy_batch(), THETA, 1, MapConfig(n_samples=11))
    with pytest.raises(ValueError, match="out of range"):
        fit_tv_map(toy, toy_batch(), THETA, 4)
    with pytest.raises(ValueError, match="out of range"):
        exact_jacobian(toy, toy_batch(), THETA, -1)
    with pytest.raises(ValueError, match="zero norm"):
        fit_tv_map(toy, toy_batch(), torch.zeros(12), 1, MapConfig(n_samples=12))
    with pytest.raises(ValueError, match="d_model is 12"):
        fit_tv_map(toy, toy_batch(), torch.ones(5), 1)
    with pytest.raises(ValueError, match="solver 'svd' is not valid"):
        MapConfig(solver="svd")
    with pytest.raises(ValueError, match="at least d = 4 samples"):
        solve(torch.randn(3, 4), torch.randn(3, 4))


# ------------------------------------------------------------------------------- polar decomposition
def random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def test_polar_factors_are_orthogonal_and_psd_and_multiply_back():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(20, 20, generator=g, dtype=torch.float64)
    Q, S = polar_decomposition(W)
    I = torch.eye(20, dtype=torch.float64)
    assert torch.allclose(Q.T @ Q, I, atol=1e-10)
    assert torch.allclose(S, S.T, atol=0) and torch.linalg.eigvalsh(S).min() > -1e-10
    assert torch.allclose(Q @ S, W, atol=1e-10)


def test_polar_recovers_a_known_rotation_and_stretch():
    g = torch.Generator().manual_seed(1)
    Q0 = random_orthogonal(10, g)
    V = random_orthogonal(10, g)
    S0 = V @ torch.diag(torch.linspace(0.5, 3, 10, dtype=torch.float64)) @ V.T
    Q, S = polar_decomposition(Q0 @ S0)
    assert torch.allclose(Q, Q0, atol=1e-10) and torch.allclose(S, S0, atol=1e-10)


def test_rotation_scaling_numbers_on_known_maps():
    d = 8
    theta = torch.arange(1.0, d + 1)
    scaled = rotation_scaling(3.0 * torch.eye(d), theta)
    assert scaled["rotation_distance"] < 1e-12 and abs(scaled["cos_theta_qtheta"] - 1) < 1e-12
    assert abs(scaled["gain"] - 3) < 1e-12 and abs(scaled["sv_1"] - 3) < 1e-12 and scaled["det_q"] == 1
    assert abs(rotation_scaling(-torch.eye(d), theta)["rotation_distance"] - 2) < 1e-12
    quarter = torch.zeros(d, d)  # a 90° turn in each coordinate plane: tr Q = 0
    for i in range(0, d, 2):
        quarter[i, i + 1], quarter[i + 1, i] = -1.0, 1.0
    r = rotation_scaling(2.0 * quarter, theta)
    assert abs(r["rotation_distance"] - math.sqrt(2)) < 1e-12 and abs(r["cos_theta_qtheta"]) < 1e-12
    assert abs(r["gain"] - 2) < 1e-12
    with pytest.raises(ValueError, match="square matrix"):
        polar_decomposition(torch.zeros(3, 4))


# ------------------------------------------------------------------------------- the tiny random Llama
TASK = tv.builtin_task("capitalize")


def test_fit_on_a_real_bridge_matches_its_jacobian_in_the_linear_regime(tiny):
    """A small θ keeps the response in its linear regime, where W, the Jacobian and the data agree."""
    batch = fit_prompts(tiny, TASK, TASK.examples[:2])
    theta = 0.05 * torch.randn(64, generator=torch.Generator().manual_seed(0))
    fit = fit_tv_map(tiny, batch, theta, 1, MapConfig(n_samples=128, n_heldout=32, noise_scales=(0.5, 1.0)))
    J = exact_jacobian(tiny, batch, theta, 1)
    cmp = compare_maps(J, fit.W, theta)
    assert fit.r2_heldout > 0.95, fit.summary()
    assert cmp["jac_rel_frobenius"] < 0.1 and cmp["jac_cosine"] > 0.99, cmp
    # a large θ leaves the linear regime: the same fit explains the held-out responses less well
    big = fit_tv_map(tiny, batch, theta * 400, 1, MapConfig(n_samples=128, n_heldout=32, noise_scales=(0.5, 1.0)))
    assert big.r2_heldout < fit.r2_heldout


def test_final_injection_adds_to_the_final_stream(tiny):
    ad = tv.adapt(tiny)
    batch = tv.encode(ad.tokenizer, TASK, tv.make_prompts(TASK, TASK.examples[:3], 0))
    v = torch.randn(64, generator=torch.Generator().manual_seed(2))
    inj = final_injection(tiny, v)
    with torch.no_grad():
        got = query_logits(tiny, batch, inj)
        final = ad.residual(batch.tokens, ad.n_layers)[torch.arange(3), batch.query_pos]
        want = ad.unembed(final + v)
    assert torch.allclose(got, want, atol=1e-4)


def test_reconstruction_report_is_consistent(tiny):
    batch = fit_prompts(tiny, TASK, TASK.examples[:2])
    theta = torch.randn(64, generator=torch.Generator().manual_seed(1))
    fit = fit_tv_map(tiny, batch, theta, 2, MapConfig(n_samples=64, n_heldout=0, solver="lstsq"))
    rep = reconstruction_report(tiny, TASK, TASK.examples[:10], fit)
    assert rep["n"] == 10 and rep["scoring"] == TASK.scoring
    assert all(0 <= rep[k] <= 1 for k in rep if k not in ("n", "scoring", "acc_by_scoring"))
    assert rep["acc_by_scoring"] == {"first_token": {"zero_shot": rep["acc_zero_shot"], "original": rep["acc_original"],
                                                     "reconstructed": rep["acc_reconstructed"]}}
    # capitalize is scored by the first-token argmax, which is what the lens of h_L + Wθ reads
    assert rep["lens_acc_map"] == rep["acc_reconstructed"]
    # one pass per condition from layer l (W θ added to the clean final stream) = the hooked full passes
    from tvmech.analysis.tv_map import final_injection
    from tvmech.interventions.injection import Injection

    hooked = {c: tv.evaluate(tiny, TASK, TASK.examples[:10], 0, intervention=iv) for c, iv in (
        ("zero_shot", None), ("original", Injection.single(fit.theta, 2)),
        ("reconstructed", final_injection(tiny, fit.reconstructed)))}
    assert all(rep[f"acc_{c}"] == r.accuracy for c, r in hooked.items())
    same = [a == b for a, b in zip(hooked["original"].predictions, hooked["reconstructed"].predictions)]
    assert rep["agreement"] == sum(same) / 10 and 0 < sum(same) < 10  # the two conditions differ somewhere


# ------------------------------------------------------------------------------- figure steps
def test_lens_and_linear_steps_redraw_from_saved_numbers_without_a_model(tmp_path, monkeypatch):
    """The committed figures/{logit_lens,linear_map}.json redraw every figure of both steps, no model loaded."""
    import json
    import shutil
    from pathlib import Path

    from tvmech.pipeline import cli

    saved = Path(__file__).resolve().parents[3] / "figures"
    names = ("logit_lens.json", "linear_map.json")
    if not all((saved / n).is_file() for n in names):
        pytest.skip("figures/logit_lens.json or figures/linear_map.json not computed yet")
    if "map_null" not in json.loads((saved / "linear_map.json").read_text())["meta"]["settings"]:
        pytest.skip("figures/linear_map.json predates issue 11 (fit prompts, ray test, rotation null): recompute it")
    if "scorings" not in json.loads((saved / "linear_map.json").read_text())["meta"]["settings"]:
        pytest.skip("figures/linear_map.json predates the per-scoring accuracies: recompute it")
    if "map_random" not in json.loads((saved / "linear_map.json").read_text())["meta"]["settings"]:
        pytest.skip("figures/linear_map.json predates issue 24 (the random-vector null of the polar statistics)")
    for n in names:
        shutil.copy(saved / n, tmp_path / n)

    def no_model(*a, **k):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr(cli, "load_model", no_model)
    lens_settings = json.loads((tmp_path / "logit_lens.json").read_text())["meta"]["settings"]
    args = [*PAPER, "--out", str(tmp_path), "--only", "lens", "linear", "--no-png",
            "--lens-tasks", *lens_settings["tasks"], "--lens-n-test", str(lens_settings["n_test"])]
    assert cli.main(args) == 0
    for name in ("logit_lens", "linear_map", "rotation_scaling", "rotation_alignment"):
        assert (tmp_path / f"{name}.html").is_file(), name
    rows = json.loads((tmp_path / "linear_map.json").read_text())["rows"]
    assert rows and all(-1 <= r["cos_theta_qtheta"] <= 1 and 0 <= r["rotation_distance"] <= 2 for r in rows)


def test_lens_plots_draw_the_committed_rows_and_issue_11_rows():
    """Old rows (no per-prompt R², no rotation null) and new ones draw alike."""
    import json
    from pathlib import Path

    from tvmech.plots import lens_plots

    path = Path(__file__).resolve().parents[3] / "figures" / "linear_map.json"
    if not path.is_file():
        pytest.skip("figures/linear_map.json not computed yet")
    saved = json.loads(path.read_text())["rows"]
    issue_11 = ("r2_per_prompt", "r2_per_prompt_mean", "r2_per_prompt_centred", "r2_per_prompt_centred_mean",
                "r2_per_prompt_median", "r2_per_prompt_min")
    null_fields = ("null_", "jac_rotation", "jac_cos_theta", "jac_gain", "jac_det", "jac_reflection", "vanilla_")
    old = [{k: v for k, v in r.items() if k not in issue_11 and not k.startswith(("rot_null", *null_fields))}
           for r in saved]
    new = [{**r, "r2_per_prompt_centred_mean": 0.5, "rot_null_q05": -0.07, "rot_null_q95": 0.07} for r in old]
    for rows, extra in ((old, 0), (new, 1)):
        n_tasks = len({r["task"] for r in rows})
        fig = lens_plots.reconstruction_figure(rows)
        assert sum("per-prompt" in (tr.name or "") for tr in fig.data) == extra * n_tasks
        fig = lens_plots.alignment_figure(rows)
        assert sum("random rotations" in (tr.name or "") for tr in fig.data) == extra * n_tasks
        fig = lens_plots.transition_figure(rows)
        assert not any("random vectors" in (tr.name or "") for tr in fig.data)
    issue_24 = [{**r, **{f"jac_{k}": r[k] for k in ("rotation_distance", "cos_theta_qtheta", "gain")},
                 **{f"null_jac_{k}_{q}": r[k] + s for k in ("rotation_distance", "cos_theta_qtheta", "gain")
                    for q, s in (("q025", -0.1), ("q975", 0.1))}} for r in saved]
    fig = lens_plots.transition_figure(issue_24)
    n_tasks = len({r["task"] for r in saved})
    assert sum("random vectors" in (tr.name or "") for tr in fig.data) == 3 * n_tasks
    assert sum((tr.name or "").endswith(": J") for tr in fig.data) == 3 * n_tasks
