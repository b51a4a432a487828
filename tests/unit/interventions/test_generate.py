"""Generation: KV-cache decoding (native Hugging Face path) equals full-forward greedy decoding through
the bridge, token for token, with and without an injected vector, on every architecture of the matrix."""

import pytest
import torch

import tvmech as tv
from tvmech.interventions import Injection, generate

N_NEW = 24


def _reference(model, prompt, inj, n):
    """Greedy decoding by repeated full forward passes of the bridge itself (its own forward, hooks
    applied with the prompt's last token as the query)."""
    ad = tv.adapt(model)
    ids = ad.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    q = ids.shape[1] - 1
    out = []
    with torch.no_grad():
        for _ in range(n):
            hooks = inj.hooks(ad, q) if inj is not None else []
            logits = model.run_with_hooks(ids, fwd_hooks=hooks)
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return out


@pytest.mark.parametrize("with_vector", [False, True])
def test_cached_and_uncached_generation_equal_full_forward(make_arch, arch, with_vector):
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    gen = torch.Generator().manual_seed(1)
    prompt = "The cat sat on"
    ids = ad.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():  # a vector of twice the residual norm at the query
        scale = 2 * float(ad.residual(ids, 1)[0, -1].norm()) / ad.d_model**0.5
    inj = Injection(torch.randn(1, 1, ad.d_model, generator=gen) * scale, (1,), (-1,)) if with_vector else None
    ref = _reference(model, prompt, inj, N_NEW)
    cached = generate(model, prompt, N_NEW, intervention=inj, use_cache=True)[0]
    uncached = generate(model, prompt, N_NEW, intervention=inj, use_cache=False)[0]
    assert list(uncached.new_ids) == ref
    assert list(cached.new_ids) == ref
    if with_vector:  # the vector changes what is generated (else the test would not see a lost write)
        plain = generate(model, prompt, N_NEW, use_cache=True)[0]
        assert plain.new_ids != cached.new_ids


def test_generation_checks_its_arguments(tiny):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny, "ab", 0)
    with pytest.raises(ValueError, match="no prompts"):
        generate(tiny, [], 3)
