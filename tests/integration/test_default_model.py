"""Integration tests on the real default model (SmolLM2-135M-Instruct from the embedded GGUF)."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import last_logprobs
from tvmech.core import models

pytestmark = pytest.mark.slow


def _twenty_prompts():
    prompts = []
    for name in ("country_capital", "antonym", "sentiment", "present_past"):
        task = tv.builtin_task(name)
        sp = task.splits(0)
        for k in (0, 1, 3, 5, 2):
            prompts.append((task, tv.make_prompts(task, [sp.test[k]], k, sp.train, seed=k)[0]))
    return prompts


def test_parity_with_transformers_forward_of_the_gguf(default_model):
    """Last-position log-probs of the wrapped model equal transformers' own forward of the GGUF."""
    from transformers import AutoModelForCausalLM

    path = models.default_gguf_path()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tok = tv.adapt(default_model).tokenizer
    prompts = _twenty_prompts()
    assert len(prompts) == 20
    worst = 0.0
    for task, p in prompts:
        ids = torch.tensor([tok(p.text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            ref = torch.log_softmax(hf(ids).logits[0, -1].float(), -1)
        ours = last_logprobs(default_model, task, [p])[0]
        worst = max(worst, float((ours - ref).abs().max()))
    assert worst < 1e-3, worst


def test_warm_load_does_not_dequantize(default_model, monkeypatch):
    """The first load left a safetensors cache; loading again must not touch the GGUF reader."""
    cache = models.gguf_cache_dir(models.default_gguf_path())
    assert (cache / "model.safetensors").is_file()
    import transformers.modeling_gguf_pytorch_utils as gg

    def forbidden(*a, **k):
        raise AssertionError("dequantized again")

    monkeypatch.setattr(gg, "load_gguf_checkpoint", forbidden)
    model = tv.load_model()
    assert tv.adapt(model).n_layers == 30 and tv.adapt(model).n_kv_heads == 3


def test_padded_batch_matches_single_prompts_on_default_model(default_model):
    pairs = _twenty_prompts()[:8]
    task = pairs[0][0]
    prompts = [p for _, p in pairs if _ is task]
    together = last_logprobs(default_model, task, prompts)
    alone = torch.cat([last_logprobs(default_model, task, [p]) for p in prompts])
    assert (together - alone).abs().max() < 1e-4


def test_icl_beats_zero_shot_on_word_tasks(default_model):
    better = 0
    for name in ("capitalize", "singular_plural", "antonym", "present_past"):
        task = tv.builtin_task(name)
        sp = task.splits(0)
        zero = tv.evaluate(default_model, task, sp.test[:20], 0)
        five = tv.evaluate(default_model, task, sp.test[:20], 5, sp.train)
        better += five.accuracy > zero.accuracy + 0.2
    assert better >= 3


def test_exact_match_is_stricter_than_first_token(default_model):
    task = tv.builtin_task("country_capital")
    sp = task.splits(0)
    first = tv.evaluate(default_model, task, sp.test[:24], 5, sp.train)
    exact = tv.evaluate(default_model, task, sp.test[:24], 5, sp.train, scoring="exact_match")
    assert exact.accuracy <= first.accuracy
    assert all(f or not e for f, e in zip(first.correct, exact.correct))


@pytest.mark.parametrize("with_vector", [False, True])
def test_generation_with_and_without_cache_equals_full_forward_greedy(default_model, with_vector):
    """The README's example: with the cache the bridge's own decoding degenerated (' Paris-----');
    tvmech's cached path equals full forward passes of the bridge for 24 tokens, with a vector too."""
    ad = tv.adapt(default_model)
    prompt = "The capital of France is"
    ids = ad.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    inj = None
    if with_vector:
        with torch.no_grad():
            norm = float(ad.residual(ids, 15)[0, -1].norm())
        v = torch.randn(ad.d_model, generator=torch.Generator().manual_seed(0))
        inj = tv.Injection.single(v / v.norm() * norm, 15)
    ref, x = [], ids
    with torch.no_grad():
        for _ in range(24):
            logits = default_model.run_with_hooks(x, fwd_hooks=inj.hooks(ad, ids.shape[1] - 1) if inj else [])
            ref.append(int(logits[0, -1].argmax()))
            x = torch.cat([x, torch.tensor([[ref[-1]]])], 1)
    cached = tv.generate(default_model, prompt, 24, intervention=inj, use_cache=True)[0]
    uncached = tv.generate(default_model, prompt, 24, intervention=inj, use_cache=False)[0]
    assert list(cached.new_ids) == ref and list(uncached.new_ids) == ref
    if not with_vector:
        assert cached.text.startswith(" Paris")
    else:
        assert cached.new_ids != tuple(tv.generate(default_model, prompt, 24)[0].new_ids)
