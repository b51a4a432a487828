"""The intervention engine: every point written the same way through TransformerLens hooks and through
native PyTorch hooks on the Hugging Face modules; row groups, per-row vectors, head patches, captures."""

import pytest
import torch

import tvmech as tv
from tvmech.interventions import Capture, HeadPatch, Injection, compose, residual
from tvmech.interventions.engine import attached


def _tokens(model, n=3, seq=9, seed=0):
    ad = tv.adapt(model)
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, 90, (n, seq), generator=gen), ad


def _edits(ad, gen):
    """One intervention per point, each large enough to move the output."""
    d, H, dh = ad.d_model, ad.n_heads, ad.d_head
    big = lambda *s: torch.randn(*s, generator=gen) * 4.0  # noqa: E731
    return {
        "resid_pre": Injection(big(1, 1, d), (1,), (-1, -3)),
        "resid_post": Injection(big(1, 1, d), (0,), (-2,), point="resid_post"),
        "attn_out": Injection(big(3, 1, 1, d), (1,), (-1,), point="attn_out"),  # one vector per row
        "mlp_out": Injection(big(1, 1, d), (2,), (-1,), point="mlp_out", mode="replace"),
        "z": HeadPatch(1, [0, H - 1], values=big(H, dh)),
        "z_zero": HeadPatch(2, torch.tensor([1, 0, 1]), per_row=True),
    }


@pytest.mark.parametrize("point", ["resid_pre", "resid_post", "attn_out", "mlp_out", "z", "z_zero"])
def test_pytorch_hooks_write_what_transformerlens_hooks_write(make_arch, arch, point):
    model, _ = make_arch(arch)
    tokens, ad = _tokens(model)
    inj = _edits(ad, torch.Generator().manual_seed(3))[point]
    q = torch.tensor([8, 6, 7])
    with torch.no_grad():
        clean = model(tokens)
        with inj.apply(model, q):
            via_tl = model(tokens)
            assert not ad.fast()  # apply: TransformerLens hooks
        with ad.native() as hf, attached(ad, inj, q, native=True):
            via_native = hf(input_ids=tokens).logits
        with attached(ad, inj, q) as fast:  # the one internal path picks the PyTorch hooks here
            assert fast
        via_engine = ad.unembed(residual(ad, tokens, ad.n_layers, intervention=inj, ctx=q))
    assert not torch.allclose(clean, via_tl, atol=1e-3), "the intervention must change the output"
    torch.testing.assert_close(via_native, via_tl, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(via_engine, via_tl, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # the bridge is whole again afterwards
        torch.testing.assert_close(model(tokens), clean)


def test_row_groups_equal_separate_runs(tiny):
    tokens, ad = _tokens(tiny, n=2)
    gen = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(ad.d_model, generator=gen), torch.randn(ad.d_model, generator=gen)
    grouped = compose([Injection(v1[None, None], (0,), rows=(0, 2)), Injection(v2[None, None], (2,), rows=(2, 4))])
    with torch.no_grad(), grouped.apply(tiny):
        both = tiny(tokens.repeat(2, 1))
    with torch.no_grad():
        with Injection.single(v1, 0).apply(tiny):
            a = tiny(tokens)
        with Injection.single(v2, 2).apply(tiny):
            b = tiny(tokens)
    torch.testing.assert_close(both, torch.cat([a, b]))


def test_capture_reads_without_changing_and_gathers_positions(tiny):
    tokens, ad = _tokens(tiny)
    q = torch.tensor([8, 5, 3])
    cap = Capture([(1, "resid_pre"), (2, "pattern")], positions=(-1,))
    with torch.no_grad():
        clean = tiny(tokens)
        with cap.apply(tiny, q):
            out = tiny(tokens)
        resid = ad.residual(tokens, 1)
    torch.testing.assert_close(out, clean)
    assert cap[1, "resid_pre"].shape == (3, 1, ad.d_model)
    torch.testing.assert_close(cap[1, "resid_pre"][:, 0], resid[torch.arange(3), q])
    assert cap[2, "pattern"].shape == (3, 1, ad.n_heads, tokens.shape[1])
    assert torch.allclose(cap[2, "pattern"].sum(-1), torch.ones(3, 1, ad.n_heads))


def test_head_patch_sets_exactly_the_chosen_heads(tiny):
    tokens, ad = _tokens(tiny)
    values = torch.randn(ad.n_heads, ad.d_head)
    seen = Capture([(1, "z")])
    with torch.no_grad(), (HeadPatch(1, [2], values=values) + seen).apply(tiny):
        tiny(tokens)
    clean = Capture([(1, "z")])
    with torch.no_grad(), clean.apply(tiny):
        tiny(tokens)
    z, z0 = seen[1, "z"], clean[1, "z"]
    torch.testing.assert_close(z[:, -1, 2], values[2].expand(3, -1))
    mask = torch.ones_like(z, dtype=torch.bool)
    mask[:, -1, 2] = False
    torch.testing.assert_close(z[mask], z0[mask])


def test_bad_interventions_are_refused(tiny):
    ad = tv.adapt(tiny)
    with pytest.raises(ValueError, match="hook point 'resid_mid' is not supported"):
        Injection(torch.zeros(1, 1, ad.d_model), (0,), point="resid_mid")
    with pytest.raises(ValueError, match="do not fit 2 layers x 1 positions"):
        Injection(torch.zeros(3, 1, ad.d_model), (0, 1))
    with pytest.raises(ValueError, match="heads \\[9\\] are out of range"):
        HeadPatch(0, [9]).hooks(tiny)
    with pytest.raises(ValueError, match="mode 'mul' is not valid"):
        Injection(torch.zeros(1, 1, ad.d_model), (0,), mode="mul")
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        Injection.single(torch.zeros(ad.d_model), 7).hooks(tiny)
