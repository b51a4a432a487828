import pytest
import torch

import tvmech as tv


def _capture(ad, tokens, names):
    got = {}

    def save(name):
        def hook(x, hook):
            got[name] = x.detach().clone()
        return hook

    with ad.hooks([(n, save(n)) for n in names]), torch.no_grad():
        ad.residual(tokens, ad.n_layers)
    return got


def test_run_blocks_in_slices_equals_full_forward(tiny):
    ad = tv.adapt(tiny)
    tokens = torch.randint(2, 90, (3, 11))
    with torch.no_grad():
        full_logits = tiny(tokens)
        final = ad.residual(tokens, ad.n_layers)
        mid = ad.residual(tokens, 1)
        resumed = ad.run_blocks(mid, 1)
    assert torch.allclose(ad.unembed(final), full_logits, atol=1e-5)
    assert torch.allclose(resumed, final, atol=1e-5)


def test_resid_pre_hook_fires_in_sliced_run(tiny):
    ad = tv.adapt(tiny)
    tokens = torch.randint(2, 90, (2, 7))
    got = _capture(ad, tokens, [ad.hook_name(2)])
    with torch.no_grad():
        assert torch.allclose(got[ad.hook_name(2)], ad.residual(tokens, 2), atol=1e-6)


def test_gqa_expansion_reproduces_attention(tiny):
    """With per-query-head W_V (kv heads expanded) and W_O, the attention output is reassembled exactly."""
    ad = tv.adapt(tiny)
    assert ad.n_kv_heads < ad.n_heads
    layer, group = 1, ad.n_heads // ad.n_kv_heads
    tokens = torch.randint(2, 90, (2, 9))
    names = [f"blocks.{layer}.ln1.hook_out", f"blocks.{layer}.attn.hook_pattern", f"blocks.{layer}.attn.hook_out",
             f"blocks.{layer}.attn.v.hook_out"]
    got = _capture(ad, tokens, names)
    x, pattern, out, v = (got[n] for n in names)
    W_V, W_O = ad.W_V[layer], ad.W_O[layer]
    assert W_V.shape == (ad.n_heads, ad.d_model, ad.d_head)
    v = v.reshape(*v.shape[:2], ad.n_kv_heads, ad.d_head)
    total = torch.zeros_like(out)
    for h in range(ad.n_heads):
        v_h = x @ W_V[h]
        assert torch.allclose(v_h, v[:, :, h // group], atol=1e-5)
        total += (pattern[:, h] @ v_h) @ W_O[h]
    assert torch.allclose(total, out, atol=1e-4)


def test_layer_and_hook_point_validation(tiny):
    ad = tv.adapt(tiny)
    with pytest.raises(ValueError, match=r"layer 3 is out of range.*0\.\.2"):
        ad.hook_name(3)
    with pytest.raises(ValueError, match="resid_mid.*resid_pre"):
        ad.hook_name(0, "resid_mid")
    assert ad.hook_name(2, "resid_post") == "blocks.2.hook_resid_post"
    with pytest.raises(TypeError, match="TransformerLens model"):
        tv.adapt(torch.nn.Linear(2, 2))


def test_patching_hook_z_changes_the_output(tiny):
    """Writing to the per-head z activation propagates (needed for head ablation and function vectors)."""
    ad = tv.adapt(tiny)
    tokens = torch.randint(2, 90, (2, 6))
    name = ad.act_name(1, "z")

    def kill_head0(z, hook):
        z = z.clone()
        z[:, :, 0] = 0
        return z

    with torch.no_grad():
        base = ad.residual(tokens, ad.n_layers)
        with ad.hooks([(name, kill_head0)]):
            patched = ad.residual(tokens, ad.n_layers)
    assert not torch.allclose(base, patched, atol=1e-4)
    with pytest.raises(ValueError, match="activation 'q' is not known"):
        ad.act_name(0, "q")


def test_residual_fires_block_zero_hooks_once_like_a_full_forward(tiny):
    ad = tv.adapt(tiny)
    tokens = torch.randint(2, 60, (2, 7))
    calls = []

    def add_one(x, hook):
        calls.append(hook.name)
        return x + 1.0

    with ad.hooks([(ad.hook_name(0), add_one)]):
        via_adapter = ad.unembed(ad.residual(tokens, ad.n_layers))
        full = tiny(tokens)
    assert len(calls) == 2  # once per pass
    torch.testing.assert_close(via_adapter, full, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ad.embed(tokens), tiny(tokens, stop_at_layer=0))
