"""Batched generation on the real default model: equal to one prompt at a time (with a vector, prompts of different
lengths), the context bound (issue 28's cases refused before any forward pass), no deprecation warning."""

import time
import warnings

import pytest
import torch

import tvmech as tv

pytestmark = pytest.mark.slow

PROMPTS = ["The capital of France is", "Q: hot\nA: cold\n\nQ: big\nA:", "Once upon a time", "2 + 2 ="]


def test_batched_generation_equals_one_prompt_at_a_time(default_model):
    ad = tv.adapt(default_model)
    v = torch.randn(len(PROMPTS), ad.d_model, generator=torch.Generator().manual_seed(0))
    ids = ad.tokenizer(PROMPTS[0], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        v = v / v.norm(dim=-1, keepdim=True) * float(ad.residual(ids, 15)[0, -1].norm())
    per_row = tv.Injection(v[:, None, None], (15,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        batched = tv.generate(default_model, PROMPTS, 8, intervention=per_row)
        plain = tv.generate(default_model, PROMPTS, 8)
    alone = [tv.generate(default_model, p, 8, intervention=tv.Injection.single(v[i], 15))[0]
             for i, p in enumerate(PROMPTS)]
    assert [g.new_ids for g in batched] == [g.new_ids for g in alone]
    assert [g.new_ids for g in plain] != [g.new_ids for g in batched]  # the vectors change the tokens


def test_issue_28_cases_are_refused_before_any_pass(default_model):
    ad = tv.adapt(default_model)
    assert ad.n_ctx == 8192
    calls = []
    handle = ad.model.original_model.register_forward_pre_hook(lambda *a: calls.append(1))
    long = " ".join(["word"] * 8194)
    n_long = len(ad.tokenizer(long, add_special_tokens=False)["input_ids"])
    assert n_long == 8194  # the issue's prompt
    t = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="with max_new_tokens=8193 that is 8198 tokens, beyond the model's "
                                             "context of 8192 tokens"):
            tv.generate(default_model, "The capital of France is", max_new_tokens=8193)
        with pytest.raises(ValueError, match="is 8194 tokens long, which leaves no room"):
            tv.generate(default_model, long, 40, truncate=True)
        with pytest.raises(ValueError, match=r"is 8194 tokens long; with max_new_tokens=40 that is 8234 tokens, beyond "
                                             r"the model's context of 8192 tokens: shorten the prompt"):
            tv.generate(default_model, long, 40)
        with pytest.raises(ValueError, match="max_new_tokens=1000000"):
            tv.generate(default_model, "The capital of France is", 10**6)
    finally:
        handle.remove()
    assert calls == [] and time.perf_counter() - t < 10
