"""LowRankAttnOut: the LoRA intervention equals the two hand-written hooks it replaced, its rank-r
form equals a sum of rank-1 changes, and it works on the KV-cache path of generate()."""

import pytest
import torch

import tvmech as tv
from tvmech.interventions.generation import generate
from tvmech.interventions.lowrank import LowRankAttnOut, low_rank_delta


def _old_lora_hooks(ad, layer, a, b):
    seen = {}

    def read_z(z, hook=None):
        seen["z"] = z

    def add(out, hook=None):
        z = seen.pop("z")
        return out + ((z.flatten(2) @ a.to(z.dtype))[..., None] * b.to(z.dtype)).to(out.dtype)

    return [(ad.act_name(layer, "z"), read_z), (ad.act_name(layer, "attn_out"), add)]


def _tokens(ad):
    return torch.tensor([ad.tokenizer("Q: cat\nA: CAT\n\nQ: dog\nA:", add_special_tokens=False)["input_ids"]])


def test_equals_the_old_hooks_with_gradients(tiny):
    ad = tv.adapt(tiny)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(ad.n_heads * ad.d_head, generator=g).requires_grad_(True)
    b = torch.randn(ad.d_model, generator=g).requires_grad_(True)
    tokens = _tokens(ad)
    with LowRankAttnOut(1, a, b).apply(tiny):
        new = ad.residual(tokens, ad.n_layers)
    grads_new = torch.autograd.grad(new.square().sum(), (a, b))
    with ad.hooks(_old_lora_hooks(ad, 1, a, b)):
        old = ad.residual(tokens, ad.n_layers)
    grads_old = torch.autograd.grad(old.square().sum(), (a, b))
    assert torch.equal(new, old)
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-5) for x, y in zip(grads_new, grads_old))
    with torch.no_grad():
        plain = ad.residual(tokens, ad.n_layers)
    assert not torch.allclose(plain, new, atol=1e-3)


def test_rank_r_is_a_sum_of_rank_1_changes(tiny):
    ad = tv.adapt(tiny)
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(ad.n_heads * ad.d_head, 2, generator=g), torch.randn(2, ad.d_model, generator=g)
    z = torch.randn(2, 5, ad.n_heads, ad.d_head, generator=g)
    assert torch.allclose(low_rank_delta(z, A, B), low_rank_delta(z, A[:, 0], B[0]) + low_rank_delta(z, A[:, 1], B[1]),
                          atol=1e-4)
    tokens = _tokens(ad)
    with torch.no_grad():
        with LowRankAttnOut(2, A, B).apply(tiny):
            both = ad.residual(tokens, ad.n_layers)
        with (LowRankAttnOut(2, A[:, 0], B[0]) + LowRankAttnOut(2, A[:, 1], B[1])).apply(tiny):
            summed = ad.residual(tokens, ad.n_layers)
    assert torch.allclose(both, summed, atol=1e-4)


def test_kv_cache_generation_matches_full_passes(tiny):
    ad = tv.adapt(tiny)
    g = torch.Generator().manual_seed(2)
    lora = LowRankAttnOut(1, torch.randn(ad.n_heads * ad.d_head, generator=g), torch.randn(ad.d_model, generator=g) * 3)
    prompt = "Q: cat\nA: CAT\n\nQ: dog\nA:"
    cached = generate(tiny, prompt, 12, intervention=lora, use_cache=True)[0]
    full = generate(tiny, prompt, 12, intervention=lora, use_cache=False)[0]
    plain = generate(tiny, prompt, 12, use_cache=False)[0]
    assert cached.new_ids == full.new_ids and full.new_ids != plain.new_ids


def test_bad_factors(tiny):
    with pytest.raises(ValueError, match=r"LoRA factors must have shapes \(64,\) and \(64,\)"):
        LowRankAttnOut(1, torch.zeros(64), torch.zeros(63)).hooks(tiny)
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        LowRankAttnOut(5, torch.zeros(64), torch.zeros(64)).hooks(tiny)


def test_every_architecture_trains_lora_and_prompt_tuning_and_caches_lora(make_arch, arch):
    from tvmech.methods.peft_training import train_peft

    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    task = tv.Task("capitalize", tv.builtin_task("capitalize").examples[:12], tv.builtin_task("capitalize").template)
    for method in ("lora_rank1", "prefix"):
        run = train_peft(model, task, method, layer=1, steps=2, batch_size=4, lr=1e-2, val=())
        assert all(torch.isfinite(torch.tensor(run["curve"]))) and len(run["curve"]) == 2
    g = torch.Generator().manual_seed(4)
    lora = LowRankAttnOut(1, torch.randn(ad.n_heads * ad.d_head, generator=g), torch.randn(ad.d_model, generator=g) * 3)
    prompt = "Q: cat\nA: CAT\n\nQ: dog\nA:"
    cached = generate(model, prompt, 6, intervention=lora, use_cache=True)[0]
    assert cached.new_ids == generate(model, prompt, 6, intervention=lora, use_cache=False)[0].new_ids
