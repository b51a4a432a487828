"""Integration tests on a second real model: Gemma-3-270M (base), Q4_K_M GGUF from four chunk wheels.

Skipped when the chunks are not installed and ``$TVMECH_GEMMA3_GGUF`` is unset. The reference is
transformers' own forward of the same GGUF file (loaded separately, not through tvmech).
"""

from __future__ import annotations

import os
import time

import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import last_logprobs, query_logits
from tvmech.core import weights
from tvmech.data.prompts import encode, make_prompts
from tvmech.interventions import Injection, generate

pytestmark = pytest.mark.slow
LAYER = 9  # the middle of 18 layers


def _available() -> str | None:
    if os.environ.get("TVMECH_GEMMA3_GGUF"):
        return None
    try:
        weights.gemma3_parts()
    except weights.ModelNotAvailable as e:
        return str(e)
    return None


_MISSING = _available()
if _MISSING:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=f"Gemma-3-270M not available: {_MISSING}")]


@pytest.fixture(scope="module")
def gemma():
    return tv.load_model("gemma-3-270m")


@pytest.fixture(scope="module")
def reference():
    """transformers' own Gemma-3 model of the GGUF file (float32, eager attention)."""
    from transformers import AutoModelForCausalLM

    path = weights.gemma3_gguf_path()
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                attn_implementation="eager").eval()


def _prompts():
    out = []
    for name in ("capitalize", "antonym", "country_capital"):
        task = tv.builtin_task(name)
        sp = task.splits(0)
        for k in (0, 2, 5):
            out.append((task, make_prompts(task, [sp.test[k]], k, sp.train, seed=k)[0]))
    return out


def test_gemma3_loads_with_its_shape(gemma):
    ad = tv.adapt(gemma)
    assert (ad.n_layers, ad.d_model, ad.n_heads, ad.n_kv_heads, ad.d_head) == (18, 640, 4, 1, 256)
    assert ad.name == weights.GEMMA3_NAME and gemma.cfg.d_vocab == 262144


def test_parity_with_transformers_forward_of_the_gguf(gemma, reference):
    """Last-position log-probs equal transformers' forward; the suffix path equals its hidden states."""
    ad = tv.adapt(gemma)
    worst = worst_h = 0.0
    for task, p in _prompts():
        ids = torch.tensor([ad.tokenizer(p.text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = reference(input_ids=ids, output_hidden_states=True, use_cache=False)
            for l in (0, 5, LAYER, 17):
                h = ad.residual(ids, l)
                worst_h = max(worst_h, float((h - out.hidden_states[l]).norm() / out.hidden_states[l].norm()))
            h = ad.run_blocks(ad.residual(ids, LAYER), LAYER)
            final = out.hidden_states[-1]
            worst_h = max(worst_h, float((ad.final_norm(h) - final).norm() / final.norm()))
        ref = torch.log_softmax(out.logits[0, -1].float(), -1)
        worst = max(worst, float((last_logprobs(gemma, task, [p])[0] - ref).abs().max()))
    print(f"gemma3 parity: max |dlogprob| {worst:.2e}, max rel hidden-state error {worst_h:.2e}")
    assert worst < 1e-3, worst
    assert worst_h < 1e-4, worst_h


def test_injection_changes_the_output(gemma):
    ad = tv.adapt(gemma)
    task = tv.builtin_task("capitalize")
    batch = encode(ad.tokenizer, task, make_prompts(task, task.splits(0).test[:4], 0))
    with torch.no_grad():
        norm = float(ad.residual(batch.tokens[:1], LAYER)[0, int(batch.query_pos[0])].norm())
        v = torch.randn(ad.d_model, generator=torch.Generator().manual_seed(0))
        inj = Injection(v / v.norm() * norm, (LAYER,), (-1,))
        clean, hit = query_logits(gemma, batch), query_logits(gemma, batch, inj)
    assert torch.isfinite(hit).all()
    assert (clean.argmax(-1) != hit.argmax(-1)).any() or (clean - hit).abs().max() > 1.0


def test_cached_generation_equals_uncached(gemma):
    prompt = "Q: cat\nA: Cat\n\nQ: house\nA:"
    cached = generate(gemma, prompt, 20, use_cache=True)[0]
    uncached = generate(gemma, prompt, 20, use_cache=False)[0]
    assert len(cached.new_ids) == 20
    assert cached.new_ids == uncached.new_ids, (cached.text, uncached.text)


def test_ltv_trains_on_capitalize(gemma):
    """40 steps at layer 9 on zero-shot prompts; reports accuracy against zero-shot and 5-shot ICL."""
    task = tv.builtin_task("capitalize")
    sp = task.splits(0)
    test = sp.test[:24]
    t = time.perf_counter()
    vec = tv.learn_task_vector(gemma, task, layers=(LAYER,), config=tv.LTVConfig(steps=40, batch_size=8, eval_every=20),
                               progress=False)
    seconds = time.perf_counter() - t
    zero = tv.evaluate(gemma, task, test, 0).accuracy
    five = tv.evaluate(gemma, task, test, 5, sp.train).accuracy
    ltv = tv.evaluate(gemma, task, test, 0, intervention=vec).accuracy
    print(f"gemma3 capitalize (n={len(test)}): zero-shot {zero:.2f}, 5-shot {five:.2f}, LTV L{LAYER} {ltv:.2f} "
          f"(trained in {seconds:.1f} s)")
    assert torch.isfinite(vec.vectors).all()
    assert ltv > zero
