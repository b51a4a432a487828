"""OV circuits and the packaged OV effect on tiny random Llamas (exact algebra, no trained weights)."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.ov import (
    Reconstruction,
    capture,
    check_head,
    factored_matrix,
    head_ov_image,
    ov_circuits,
    ov_images,
    packaged_ov_effect,
    reconstruction_effect,
    reconstruction_injection,
    reinjection,
)
from tvmech.core.models import wrap
from tvmech.data.prompts import encode, make_prompts
from tvmech.experiments.ov_reconstruction import reconstruction_accuracy
from tvmech.interventions.capture import Capture
from tvmech.interventions.task_vector import TaskVector

TASK = tv.builtin_task("capitalize")


def _batch(model, n=5):
    return encode(tv.adapt(model).tokenizer, TASK, make_prompts(TASK, TASK.examples[:n], 0))


def _vec(model, layer, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return TaskVector.for_model(model, scale * torch.randn(1, 1, tv.adapt(model).d_model, generator=g), (layer,))


@pytest.fixture(scope="module")
def attn_only(make_tokenizer, make_tiny_hf):
    """One block, MLP output weights zeroed: the block is attention only."""
    tok = make_tokenizer()
    hf = make_tiny_hf(n_layers=1, vocab=len(tok), seed=1)
    with torch.no_grad():
        for block in hf.model.layers:
            block.mlp.down_proj.weight.zero_()
    return wrap(hf, tok, "tiny-attn-only")


def _fixed_pattern(kind: str):
    """A hook replacing the attention pattern by one that does not depend on the input."""
    def hook(p, hook=None):
        T = p.shape[-1]
        if kind == "self":
            return torch.eye(T, dtype=p.dtype).expand_as(p).clone()
        g = torch.Generator().manual_seed(7)
        s = torch.randn(p.shape[1], T, T, generator=g).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
        return torch.softmax(s, -1).to(p.dtype).expand_as(p).clone()
    return hook


def _attn_out_at_query(ad, batch, hooks):
    got = {}

    def grab(x, hook=None):
        got["a"] = x.detach().clone()

    with torch.no_grad():
        h0 = ad.residual(batch.tokens, 0)  # outside the hooks: Adapter.residual fires blocks.0.hook_resid_pre twice
        with ad.hooks(hooks + [(ad.act_name(0, "attn_out"), grab)]):
            ad.run_blocks(h0, 0)
    return got["a"][torch.arange(len(batch)), batch.query_pos]


def test_ov_circuits_are_hf_value_and_output_weights_with_gqa(tiny):
    """W_OV[l, h] = v_proj(kv head h // group)ᵀ o_proj(head h)ᵀ, built from the Hugging Face weights."""
    ad = tv.adapt(tiny)
    ov = ov_circuits(tiny)
    assert isinstance(ov, factored_matrix()) and tuple(ov.shape) == (ad.n_layers, ad.n_heads, ad.d_model, ad.d_model)
    dh, group = ad.d_head, ad.n_heads // ad.n_kv_heads
    theta = torch.randn(ad.d_model)
    images = ov_images(tiny, theta)
    for l, block in enumerate(tiny.original_model.model.layers):
        wv, wo = block.self_attn.v_proj.weight, block.self_attn.o_proj.weight
        for h in range(ad.n_heads):
            g = h // group
            w_ov = wv[g * dh:(g + 1) * dh].T @ wo[:, h * dh:(h + 1) * dh].T
            assert torch.allclose(ov.AB[l, h], w_ov, atol=1e-5)
            assert torch.allclose(images[l, h], theta @ w_ov, atol=1e-4)
    assert torch.allclose(head_ov_image(tiny, theta, 2, 3), images[2, 3])
    per_layer = torch.randn(4, 2, ad.d_model)  # [batch, n_sel, d]: one input per selected layer
    out = ov_images(tiny, per_layer, [0, 2])
    assert out.shape == (4, 2, ad.n_heads, ad.d_model)
    assert torch.allclose(out[1, 1, 3], per_layer[1, 1] @ ov.AB[2, 3], atol=1e-4)


@pytest.mark.parametrize("pattern", ["self", "fixed_random"])
def test_packaged_ov_effect_is_the_attention_change_when_the_pattern_is_fixed(attn_only, pattern):
    """One attention-only block whose pattern does not depend on θ: the weighted, norm-aware packaged OV
    effect equals the measured change of the attention output at the query, exactly."""
    ad = tv.adapt(attn_only)
    batch, vec = _batch(attn_only), _vec(attn_only, 0)
    force = [(ad.act_name(0, "pattern"), _fixed_pattern(pattern))]
    injected = _attn_out_at_query(ad, batch, force + vec.hooks(ad, batch.query_pos))
    measured = injected - _attn_out_at_query(ad, batch, force)
    with ad.hooks(force):
        cap = capture(attn_only, vec, batch)
    effect = packaged_ov_effect(attn_only, cap)
    assert effect.shape == (len(batch), 1, ad.d_model)
    assert measured.norm() > 1  # θ does change the output
    assert torch.allclose(effect[:, 0], measured, atol=1e-4), (effect[:, 0] - measured).abs().max()
    assert torch.allclose(cap.attn_delta[:, 0], measured, atol=1e-5)
    # the options matter: θ without the norm, or without the attention weight, is not the change
    raw = packaged_ov_effect(attn_only, cap, norm_aware=False)
    assert not torch.allclose(raw[:, 0], measured, atol=1e-2)
    unweighted = packaged_ov_effect(attn_only, cap, weighted=False)
    if pattern == "self":  # attending only to itself: weight 1, the two coincide
        assert torch.allclose(cap.weights, torch.ones_like(cap.weights))
        assert torch.allclose(unweighted, effect, atol=1e-5)
    else:
        assert not torch.allclose(unweighted, effect, atol=1e-2)


def test_measured_changes_telescope_to_the_injected_final_residual(tiny):
    """final(without θ) + θ + Σ ΔAttn + Σ ΔMLP = final(with θ) at the query, and "final" re-injection puts a
    vector exactly there."""
    ad = tv.adapt(tiny)
    batch, vec = _batch(tiny), _vec(tiny, 1)
    cap = capture(tiny, vec, batch)
    assert cap.attn_delta.shape == cap.mlp_delta.shape == (len(batch), 2, ad.d_model)
    total = cap.final_clean + cap.theta + cap.attn_delta.sum(1) + cap.mlp_delta.sum(1)
    assert torch.allclose(total, cap.final_injected, atol=1e-4)
    effect = cap.attn_delta + cap.mlp_delta
    effect[:, 0] += cap.theta
    with torch.no_grad(), reinjection(tiny, effect, cap.layers, "final").apply(tiny, batch.query_pos):
        final = ad.residual(batch.tokens, ad.n_layers)
    assert torch.allclose(final[torch.arange(len(batch)), batch.query_pos], cap.final_injected, atol=1e-4)


def _mlp_out(ad, batch, hooks, layer):
    cap = Capture([(layer, "mlp_out")])
    with torch.no_grad(), ad.hooks(hooks + cap.hooks(ad, batch.query_pos)):
        ad.residual(batch.tokens, ad.n_layers)
    return cap[layer, "mlp_out"]


def test_layerwise_reinjection_at_attn_out_reaches_the_blocks_own_mlp(tiny):
    """Acceptance (issue 11): the layer-wise OV effect of block l' is added at its hook_attn_out (the default),
    so that block's MLP output changes; added at hook_resid_post (the old placement) the MLP never sees it."""
    ad = tv.adapt(tiny)
    batch, vec = _batch(tiny), _vec(tiny, 1)
    cap = capture(tiny, vec, batch)
    rec = Reconstruction(reinject="layerwise")
    assert rec.layerwise_point == "attn_out"
    effect = reconstruction_effect(tiny, cap, rec)
    writes = reinjection(tiny, effect, cap.layers, "layerwise").writes(ad)
    assert [(w.layer, w.point) for w in writes] == [(1, "attn_out"), (2, "attn_out")]
    q = batch.query_pos
    clean = _mlp_out(ad, batch, [], 1)
    at_attn = _mlp_out(ad, batch, reconstruction_injection(tiny, cap, rec).hooks(tiny, q), 1)
    old = _mlp_out(ad, batch, reinjection(tiny, effect, cap.layers, "layerwise", "resid_post").hooks(tiny, q), 1)
    rows = torch.arange(len(batch))
    assert (at_attn[rows, q] - clean[rows, q]).norm(dim=-1).min() > 1e-3  # block 1's MLP reads its effect
    assert torch.equal(old, clean)  # at resid_post: block 1's MLP output is unchanged
    expected = ad.mlp_output(1, _mid(ad, batch, 1)[rows, q] + effect[:, 0])
    assert torch.allclose(at_attn[rows, q], expected, atol=1e-5)


def _mid(ad, batch, layer):
    cap = Capture([(layer, "resid_mid")])
    with torch.no_grad(), cap.apply(ad, batch.query_pos):
        ad.residual(batch.tokens, ad.n_layers)
    return cap[layer, "resid_mid"]


@pytest.fixture(scope="module")
def mlp_only(make_tokenizer, make_tiny_hf):
    """Attention output weights zeroed: θ reaches each MLP only directly, at its own position."""
    tok = make_tokenizer()
    hf = make_tiny_hf(n_layers=2, vocab=len(tok), seed=2)
    with torch.no_grad():
        for block in hf.model.layers:
            block.self_attn.o_proj.weight.zero_()
    return wrap(hf, tok, "tiny-mlp-only")


def test_direct_mlp_path_is_the_measured_mlp_change_without_attention(mlp_only):
    """With no attention, block l's MLP input changes by θ alone: the direct path MLP(h_mid + θ) − MLP(h_mid)
    of the injection block equals the total measured change there; later blocks differ (they also read
    the earlier MLP changes)."""
    batch, vec = _batch(mlp_only), _vec(mlp_only, 0)
    cap = capture(mlp_only, vec, batch)
    assert cap.mlp_direct.shape == cap.mlp_delta.shape == (len(batch), 2, 64)
    assert cap.mlp_direct[:, 0].norm() > 1e-2
    assert torch.allclose(cap.mlp_direct[:, 0], cap.mlp_delta[:, 0], atol=1e-5)
    assert not torch.allclose(cap.mlp_direct[:, 1], cap.mlp_delta[:, 1], atol=1e-3)
    rec = Reconstruction("mlp_direct")
    assert rec.at_injected_position and rec.layerwise_point == "mlp_out"


def test_paper_literal_theta_control_and_alpha(tiny):
    """ov_paper = Σ_{l' ≥ l+1, h} θ W_V W_O (raw, unweighted, block l left out); the θ control puts θ itself on
    the final residual; α scales the re-injected effect."""
    ad = tv.adapt(tiny)
    batch, vec = _batch(tiny), _vec(tiny, 1)
    cap = capture(tiny, vec, batch)
    paper = reconstruction_effect(tiny, cap, Reconstruction(weighted=False, norm_aware=False, from_next=True))
    images = ov_images(tiny, cap.theta, [2])[0].sum(0)
    assert torch.equal(paper[:, 0], torch.zeros_like(paper[:, 0]))
    assert torch.allclose(paper[:, 1], images.expand(len(batch), -1), atol=1e-5)
    with torch.no_grad(), reconstruction_injection(tiny, cap, Reconstruction("theta")).apply(tiny, cap.query_pos):
        final = ad.residual(batch.tokens, ad.n_layers)[torch.arange(len(batch)), batch.query_pos]
    assert torch.allclose(final, cap.final_clean + cap.theta, atol=1e-5)
    one = reconstruction_effect(tiny, cap, Reconstruction("mlp_direct"))
    assert torch.allclose(reconstruction_effect(tiny, cap, Reconstruction("mlp_direct", alpha=4.0)), 4 * one)
    with pytest.raises(ValueError, match="from_next applies to the OV effect only"):
        Reconstruction("mlp", from_next=True)


def test_layerwise_reinjection_at_another_point(tiny):
    """``point="attn_out"``: each block's vector joins its attention output, so the block's own MLP reads it
    (``resid_mid`` of block 1 moves by exactly ``effect[:, 0]`` at the query, nowhere else)."""
    ad = tv.adapt(tiny)
    batch, vec = _batch(tiny), _vec(tiny, 1)
    cap = capture(tiny, vec, batch)
    effect = reconstruction_effect(tiny, cap, Reconstruction(reinject="layerwise", point="attn_out"))
    writes = reinjection(tiny, effect, cap.layers, "layerwise", "attn_out").writes(ad)
    assert [(w.layer, w.point) for w in writes] == [(1, "attn_out"), (2, "attn_out")]
    mids = [Capture([(1, "resid_mid")]) for _ in range(2)]
    with torch.no_grad():
        with mids[0].apply(tiny, batch.query_pos):
            ad.residual(batch.tokens, ad.n_layers)
        hooks = reinjection(tiny, effect, cap.layers, "layerwise", "attn_out").hooks(tiny, batch.query_pos)
        with ad.hooks(hooks + mids[1].hooks(tiny, batch.query_pos)):
            ad.residual(batch.tokens, ad.n_layers)
    clean, recon = (m[1, "resid_mid"] for m in mids)
    rows = torch.arange(len(batch))
    assert torch.allclose(recon[rows, batch.query_pos], clean[rows, batch.query_pos] + effect[:, 0], atol=1e-5)
    keep = torch.ones(clean.shape[:2], dtype=torch.bool)
    keep[rows, batch.query_pos] = False
    assert torch.equal(recon[keep], clean[keep])


def test_reconstruction_accuracy_rows(tiny):
    vec = _vec(tiny, 1)
    queries = TASK.splits(0).test[:6]
    rows = reconstruction_accuracy(tiny, vec, TASK, queries, batch_size=4, alphas=(1.0, 2.0),
                                   paths=("v", "qk", "mlp", "all"))
    by = {r["method"]: r for r in rows}
    assert list(by)[:2] == ["zero_shot", "ltv"]
    assert {"ov_direct", "ov_direct_layerwise", "ov_paper", "mlp_direct", "mlp_total_measured",
            "attn_total_measured", "theta_final", "mlp_direct@2", "path_v", "path_qk", "path_mlp"} <= set(by)
    assert all(0 <= r["accuracy"] <= 1 and r["n"] == 6 and r["layer"] == 1 for r in rows)
    assert by["mlp_direct@2"]["variant"] == "mlp_direct" and by["mlp_direct@2"]["alpha"] == 2.0
    assert by["path_qk"]["variant"] == "path_restricted" and by["path_qk"]["path"] == "qk"
    ltv = tv.evaluate(tiny, TASK, queries, 0, intervention=vec)
    assert by["ltv"]["accuracy"] == ltv.accuracy == by["path_all"]["accuracy"]  # every path open = the LTV
    assert by["zero_shot"]["accuracy"] == tv.evaluate(tiny, TASK, queries, 0).accuracy
    assert by["attn_total_measured"]["cos_attn"] == pytest.approx(1.0, abs=1e-5)
    assert by["ov_direct"]["effect_norm"] > 0 and by["ov_unweighted"]["effect_norm"] > by["ov_direct"]["effect_norm"]
    assert by["mlp_direct@2"]["effect_norm"] == pytest.approx(2 * by["mlp_direct"]["effect_norm"], rel=1e-4)
    assert by["theta_final"]["effect_norm"] == pytest.approx(by["ltv"]["effect_norm"], rel=1e-4)
    from tvmech.plots.mechanism_plots import reconstruction_figure

    fig = reconstruction_figure(rows, "tiny")  # the figure draws the new rows (and, in test_heads, the old ones)
    names = {tr.name: tr for tr in fig.data}
    assert names["MLP direct path, α = 2"].visible == "legendonly" and names["MLP direct path"].visible is True
    assert names["θ through queries/keys only"].y[0] == by["path_qk"]["accuracy"]


def test_bad_input(tiny):
    with pytest.raises(ValueError, match=r"head 4 is out of range.*0\.\.3"):
        check_head(tiny, 1, 4)
    with pytest.raises(ValueError, match=r"head -1 is out of range"):
        head_ov_image(tiny, torch.randn(64), 0, -1)
    with pytest.raises(ValueError, match=r"layer 3 is out of range.*0\.\.2"):
        ov_circuits(tiny, [0, 3])
    with pytest.raises(ValueError, match="no layers"):
        ov_circuits(tiny, [])
    with pytest.raises(ValueError, match="d_model is 64"):
        ov_images(tiny, torch.randn(32))
    with pytest.raises(ValueError, match="reinject 'middle' is not valid"):
        Reconstruction(reinject="middle")
    with pytest.raises(ValueError, match="source 'resid' is not valid"):
        Reconstruction(source="resid")
    with pytest.raises(ValueError, match="hook point 'z' is not supported here; valid: resid_pre, resid_post"):
        Reconstruction(reinject="layerwise", point="z")
    with pytest.raises(ValueError, match=r"does not fit \[batch, 2 layers, d_model\]"):
        reinjection(tiny, torch.zeros(3, 1, 64), (1, 2))
    two = TaskVector.for_model(tiny, torch.randn(2, 1, 64), (0, 1))
    with pytest.raises(ValueError, match="one layer and one position"):
        capture(tiny, two, _batch(tiny))
    with pytest.raises(ValueError, match="no queries"):
        reconstruction_accuracy(tiny, _vec(tiny, 0), TASK, [])


def test_reconstruction_streams_without_hooks_equal_the_hooked_reinjections(tiny):
    """The accuracies read every reconstruction's final stream without its own forward pass ("final": the clean
    stream plus the vector at its position) or from one stacked pass (layer-wise): each equals the stream of the
    full forward pass with the re-injection hooked in."""
    from dataclasses import replace

    from tvmech.analysis.evaluation import final_residual
    from tvmech.experiments.ov_reconstruction import DEFAULT_RECONSTRUCTIONS, final_stream, layerwise_streams

    ad = tv.adapt(tiny)
    vec = _vec(tiny, 1)
    batch = _batch(tiny, 6).to(ad.device)
    cap = capture(ad, vec, batch)
    torch.testing.assert_close(cap.clean_stream, final_residual(ad, batch))
    torch.testing.assert_close(cap.injected_stream, final_residual(ad, batch, vec))
    recs = {f"{n}@{a}": replace(r, alpha=a) for n, r in DEFAULT_RECONSTRUCTIONS.items() for a in (1.0, 3.0)}
    layerwise = [(m, r, reconstruction_effect(ad, cap, r)) for m, r in recs.items() if r.reinject == "layerwise"]
    stacked = layerwise_streams(ad, cap, layerwise)
    assert len(stacked) == len(layerwise) >= 6
    for m, rec in recs.items():
        with reconstruction_injection(ad, cap, rec).apply(ad, cap.query_pos):  # the TransformerLens hooks
            ref = final_residual(ad, batch)
        total = reconstruction_effect(ad, cap, rec).sum(1)
        got = stacked[m] if rec.reinject == "layerwise" else final_stream(cap, total, rec)
        assert (got - cap.clean_stream).abs().max() > 1e-3, m  # it changes something
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5, msg=m)
