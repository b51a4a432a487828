"""Path-restricted task vectors on the tiny Llama: all paths open = the full injected run; each path alone
differs from the full run and from the run without θ; the per-input points change only their input."""

import pytest
import torch

import tvmech as tv
from tvmech.interventions.capture import Capture
from tvmech.interventions.injection import Injection
from tvmech.interventions.paths import PATHS, PathRestricted

LAYER = 1


def _tokens(ad, n=3, length=7):
    g = torch.Generator().manual_seed(0)
    return torch.randint(2, 90, (n, length), generator=g)


def _final(ad, tokens, intervention=None):
    with torch.no_grad():
        if intervention is None:
            return ad.residual(tokens, ad.n_layers)
        with intervention.apply(ad):
            return ad.residual(tokens, ad.n_layers)


@pytest.fixture(scope="module")
def setup(tiny):
    ad = tv.adapt(tiny)
    theta = 3.0 * torch.randn(ad.d_model, generator=torch.Generator().manual_seed(1))
    tokens = _tokens(ad)
    full = _final(ad, tokens, Injection(theta, (LAYER,)))
    clean = _final(ad, tokens)
    return ad, theta, tokens, full, clean


def test_all_paths_open_is_the_full_injected_run(setup):
    ad, theta, tokens, full, clean = setup
    got = _final(ad, tokens, PathRestricted(theta, LAYER, PATHS))
    assert torch.allclose(got, full, atol=1e-5), (got - full).abs().max()
    per_row = PathRestricted(theta.expand(len(tokens), -1), LAYER, PATHS)  # one θ per row
    assert torch.allclose(_final(ad, tokens, per_row), full, atol=1e-5)


@pytest.mark.parametrize("path", ["v", "qk", "mlp", "direct"])
def test_each_path_alone_differs_from_the_full_run_and_from_no_theta(setup, path):
    ad, theta, tokens, full, clean = setup
    got = _final(ad, tokens, PathRestricted(theta, LAYER, (path,)))[:, -1]
    assert (got - full[:, -1]).norm() > 1e-2 and (got - clean[:, -1]).norm() > 1e-2


def test_the_residual_stream_of_the_injection_block_does_not_carry_theta(setup):
    """Without the direct path θ never enters the residual stream: at the injected block's input it is the
    clean residual, and the MLP-only path changes block l's output only by its MLP's output change."""
    ad, theta, tokens, full, clean = setup
    caps = [Capture([(LAYER, "resid_pre"), (LAYER, "resid_mid"), (LAYER, "mlp_out"), (LAYER, "resid_post")])
            for _ in range(2)]
    with torch.no_grad():
        with caps[0].apply(ad):
            ad.residual(tokens, ad.n_layers)
        with (PathRestricted(theta, LAYER, ("mlp",)) + caps[1]).apply(ad):
            ad.residual(tokens, ad.n_layers)
    a, b = caps
    assert torch.equal(a[LAYER, "resid_pre"], b[LAYER, "resid_pre"])
    d_mlp = b[LAYER, "mlp_out"] - a[LAYER, "mlp_out"]
    assert d_mlp[:, -1].norm() > 1e-2 and torch.allclose(d_mlp[:, :-1], torch.zeros_like(d_mlp[:, :-1]), atol=1e-6)
    expected_mlp = ad.mlp_output(LAYER, a[LAYER, "resid_mid"][:, -1] + theta)  # Adapter.mlp_output: MLP(ln2(.))
    assert torch.allclose(b[LAYER, "mlp_out"][:, -1], expected_mlp, atol=1e-5)
    assert torch.allclose(b[LAYER, "resid_post"] - a[LAYER, "resid_post"], d_mlp, atol=1e-5)


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="paths \\['x'\\] are not valid"):
        PathRestricted(torch.zeros(64), 1, ("x",))
    with pytest.raises(ValueError, match="not valid"):
        PathRestricted(torch.zeros(64), 1, ())
    with pytest.raises(ValueError, match="d_model is 64"):
        PathRestricted(torch.zeros(32), 1).writes(tv.adapt(tiny))
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        PathRestricted(torch.zeros(64), 5).writes(tv.adapt(tiny))
