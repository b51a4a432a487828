"""Function vectors on the engine: the Capture of z and the per-row HeadPatch give what the
hand-written hooks gave, with the clean prompts run once."""

import pytest
import torch

import tvmech as tv
from tvmech.data.prompts import encode
from tvmech.methods.function_vectors import indirect_effects, mean_head_z

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)


def _prompts(shuffle=False):
    sp = SMALL.splits(0)
    return tv.make_prompts(SMALL, sp.train[:4], 2, sp.train, seed=int(shuffle), shuffle_labels=shuffle)


def test_mean_head_z_equals_grabbing_z_by_hand(tiny):
    ad = tv.adapt(tiny)
    prompts = _prompts()
    b = encode(ad.tokenizer, SMALL, prompts)
    got = {}

    def grab(layer):
        def hook(z, hook=None):
            got[layer] = z[torch.arange(len(b)), b.query_pos].mean(0)

        return hook

    with torch.no_grad(), ad.hooks([(ad.act_name(l, "z"), grab(l)) for l in range(ad.n_layers)]):
        ad.residual(b.tokens, ad.n_layers)
    want = torch.stack([got[l] for l in range(ad.n_layers)])
    assert torch.equal(mean_head_z(tiny, SMALL, prompts), want)


def test_indirect_effects_equal_the_old_double_pass(tiny):
    """The old code: a full clean forward, then every layer's patch (z set by hand) from layer 0 again."""
    ad = tv.adapt(tiny)
    z_mean = mean_head_z(tiny, SMALL, _prompts())
    prompts = _prompts(shuffle=True)
    b = encode(ad.tokenizer, SMALL, prompts)
    B, H = len(b), ad.n_heads
    rows, qpos = torch.arange(B * H), b.query_pos.repeat(H)
    head_of_row, label = torch.arange(H).repeat_interleave(B), b.label_first.repeat(H)
    want = torch.zeros(ad.n_layers, H)
    with torch.no_grad():
        final = ad.residual(b.tokens, ad.n_layers)
        clean = torch.softmax(ad.unembed(final[rows[:B], b.query_pos]), -1)[rows[:B], b.label_first]
        for layer in range(ad.n_layers):
            def patch(z, hook=None, layer=layer):
                z = z.clone()
                z[rows, qpos, head_of_row] = z_mean[layer][head_of_row]
                return z

            with ad.hooks([(ad.act_name(layer, "z"), patch)]):
                out = ad.residual(b.tokens.repeat(H, 1), ad.n_layers)
            p = torch.softmax(ad.unembed(out[rows, qpos]), -1)[rows, label]
            want[layer] = (p.view(H, B) - clean[None]).mean(1)
    got = indirect_effects(tiny, SMALL, prompts, z_mean)
    assert torch.allclose(got, want, atol=1e-6)
    assert got.abs().max() > 1e-4


def test_query_only_effects_equal_the_full_width_ones_on_every_architecture(make_arch, arch):
    """The query token alone after a frozen prefix, many heads forked in one pass (prompts of several lengths, so
    several groups; ``max_rows`` small enough to split a group's heads over passes) gives the full-width CIE."""
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    z_mean = mean_head_z(model, SMALL, _prompts())
    prompts = _prompts(shuffle=True)
    q = encode(ad.tokenizer, SMALL, prompts).query_pos
    assert len(set(q.tolist())) > 1 and ad.fast()
    want = indirect_effects(model, SMALL, prompts, z_mean, query_only=False)
    for max_rows in (None, 5):
        got = indirect_effects(model, SMALL, prompts, z_mean, max_rows=max_rows)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert want.abs().max() > 1e-4


def test_query_only_effects_are_taken_off_the_fast_path_too(tiny):
    z_mean = mean_head_z(tiny, SMALL, _prompts())
    prompts = _prompts(shuffle=True)
    with tv.fast_path(False):
        ref = indirect_effects(tiny, SMALL, prompts, z_mean)  # the full-width reference: no frozen prefix there
    torch.testing.assert_close(indirect_effects(tiny, SMALL, prompts, z_mean), ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="max_rows must be at least 1"):
        indirect_effects(tiny, SMALL, prompts, z_mean, max_rows=0)
