"""Generation: KV-cache decoding (native Hugging Face path) equals full-forward greedy decoding through
the bridge, token for token, with and without an injected vector, on every architecture of the matrix; batches of
prompts (right-padded, shared or per-row vectors) equal one prompt at a time; the context bounds generation."""

import contextlib
import warnings

import pytest
import torch

import tvmech as tv
from tvmech.interventions import Injection, generate
from tvmech.interventions.generation import batch_groups, context_budgets, sliding_window

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


# ------------------------------------------------------------------------------------------- batched generation
N_BATCHED = 12
PROMPTS = ["The cat sat on", "ab", "Hello there, my friend", "x", "The dog", "ab"]  # lengths 14, 2, 22, 1, 7, 2


def _vectors(ad, n, seed=1):
    """``n`` random vectors of three times a typical residual norm (large enough to change the tokens)."""
    return torch.randn(n, ad.d_model, generator=torch.Generator().manual_seed(seed)) * 3


def _new_ids(gens):
    return [g.new_ids for g in gens]


@contextlib.contextmanager
def _no_deprecation():
    """Deprecation warnings (transformers' ``past_key_values``) become errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        yield


def test_batched_generation_equals_one_prompt_at_a_time(make_arch, arch):
    """Right-padded batches of prompts of different lengths give each prompt the tokens it gets alone, with no
    vector, a shared vector, one vector per prompt (a per-row Injection and a list of TaskVectors), cached and
    uncached; no deprecation warning on the way."""
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    v = _vectors(ad, len(PROMPTS))
    shared = Injection.single(v[0], 1)
    per_row = Injection(v[:, None, None], (1,))
    vecs = [tv.TaskVector.for_model(model, v[i][None, None], (1,)) for i in range(len(PROMPTS))]
    alone = {"none": [None] * len(PROMPTS), "shared": [shared] * len(PROMPTS),
             "per_row": [Injection.single(v[i], 1) for i in range(len(PROMPTS))]}
    expected = {k: [generate(model, p, N_BATCHED, intervention=x, batch_size=1)[0].new_ids
                    for p, x in zip(PROMPTS, xs)] for k, xs in alone.items()}
    with _no_deprecation():
        for kind, inter in (("none", None), ("shared", shared), ("per_row", per_row), ("per_row", vecs)):
            assert _new_ids(generate(model, PROMPTS, N_BATCHED, intervention=inter)) == expected[kind], kind
        in_fours = generate(model, PROMPTS, N_BATCHED, intervention=per_row, batch_size=4)
        uncached = generate(model, PROMPTS, N_BATCHED, intervention=per_row, use_cache=False)
    assert _new_ids(in_fours) == _new_ids(uncached) == expected["per_row"]
    # the vectors change the tokens (else a lost write would pass), and each row reads its own
    assert expected["shared"] != expected["none"] and expected["per_row"] != expected["shared"]


def test_rows_without_a_vector_are_plain_generation(make_arch):
    model, _ = make_arch("llama")
    ad = tv.adapt(model)
    v = _vectors(ad, 2)
    mixed = generate(model, PROMPTS[:3], N_NEW, intervention=[Injection.single(v[0], 1), None,
                                                                  Injection.single(v[1], 1)])
    plain = generate(model, PROMPTS[1], N_NEW)[0]
    assert mixed[1].new_ids == plain.new_ids
    assert mixed[0].new_ids == generate(model, PROMPTS[0], N_NEW, intervention=Injection.single(v[0], 1))[0].new_ids


def test_sliding_window_models_batch_padded_rows_only_inside_the_window(make_arch):
    """Gemma-2's window of 4 cache slots counts padding: padded rows share a pass only while L_max + new <= 4."""
    model, _ = make_arch("gemma2")
    assert sliding_window(model) == 4
    assert batch_groups([1, 2], [2, 2], 32, 4) == [[0, 1]]  # padded, inside the window
    assert batch_groups([3, 1, 3, 2], [2] * 4, 32, 4) == [[1], [3], [0, 2]]  # by length
    assert batch_groups([3, 1, 3, 2], [2] * 4, 32, None) == [[1, 3, 0, 2]]
    assert batch_groups([3, 1, 3, 2], [2] * 4, 2, None) == [[1, 3], [0, 2]]
    ad = tv.adapt(model)
    inj = Injection.single(_vectors(ad, 1)[0], 1)
    prompts = ["a", "bc"]
    alone = [generate(model, p, 2, intervention=inj, batch_size=1)[0].new_ids for p in prompts]
    assert _new_ids(generate(model, prompts, 2, intervention=inj)) == alone
    assert sliding_window(make_arch("llama")[0]) is None and sliding_window(make_arch("mistral")[0]) == 4096


def test_rows_stop_at_their_own_eos(make_tiny_hf, make_tokenizer):
    """With ``stop_at_eos``, a row that meets the end-of-sequence token stops; the others go on, as alone."""
    from tvmech.core.models import wrap

    tok = make_tokenizer()
    hf = make_tiny_hf(vocab=len(tok))
    free = [g.text for g in generate(wrap(hf, tok, "tiny-eos-probe"), PROMPTS, N_NEW)]
    # an end-of-sequence character that one continuation meets early and another never does
    eos = next(c for c in free[0][: N_NEW // 2] if any(c not in t for t in free))
    tok.eos_token = eos
    model = wrap(hf, tok, "tiny-eos")
    batched = generate(model, PROMPTS, N_NEW, stop_at_eos=True)
    assert batched == [generate(model, p, N_NEW, stop_at_eos=True, batch_size=1)[0] for p in PROMPTS]
    assert batched[0].stop == "eos" and batched[0].text.endswith(eos) and len(batched[0].new_ids) < N_NEW
    assert any(g.stop == "max_new_tokens" and len(g.new_ids) == N_NEW for g in batched)


def test_per_prompt_interventions_are_checked(tiny):
    from tvmech.interventions import LowRankAttnOut

    ad = tv.adapt(tiny)
    v = _vectors(ad, 3)
    with pytest.raises(ValueError, match="2 interventions for 3 prompts"):
        generate(tiny, PROMPTS[:3], 2, intervention=[None, None])
    with pytest.raises(ValueError, match="per-row injection of 3 rows does not fit 2 prompts"):
        generate(tiny, PROMPTS[:2], 2, intervention=Injection(v[:, None, None], (1,)))
    with pytest.raises(TypeError, match="got a LowRankAttnOut"):
        lora = LowRankAttnOut(1, torch.zeros(ad.n_heads * ad.d_head), torch.zeros(ad.d_model))
        generate(tiny, PROMPTS[:2], 2, intervention=[lora, Injection.single(v[0], 1)])
    with pytest.raises(ValueError, match="must share layers, positions, point and mode"):
        generate(tiny, PROMPTS[:2], 2, intervention=[Injection.single(v[0], 1), Injection.single(v[1], 2)])
    with pytest.raises(ValueError, match="restricted to rows"):
        generate(tiny, PROMPTS[:2], 2, intervention=Injection(v[:2, None, None], (1,), rows=(0, 2)))
    with pytest.raises(TypeError, match="one intervention per prompt: got a str"):
        generate(tiny, PROMPTS[:2], 2, intervention=[None, "vector"])


# ------------------------------------------------------------------------------------------- the context bound
def _count_passes(ad):
    """A counter of the Hugging Face model's forward calls (and the hook's handle)."""
    calls = []
    handle = ad.model.original_model.register_forward_pre_hook(lambda *a: calls.append(1))
    return calls, handle


def test_generation_beyond_the_context_is_refused_before_any_pass(make_arch):
    model, _ = make_arch("gpt2")  # learned positions: n_ctx 256
    ad = tv.adapt(model)
    assert ad.n_ctx == 256
    calls, handle = _count_passes(ad)
    try:
        with pytest.raises(ValueError, match=r"prompt 1 \('abc'\) is 3 tokens long; with max_new_tokens=254 that is "
                                             r"257 tokens, beyond the model's context of 256 tokens: ask for at most "
                                             r"253 new tokens, or pass truncate=True"):
            generate(model, ["a", "abc"], 254)
        with pytest.raises(ValueError, match="beyond the model's context of 256"):
            generate(model, "ab", 10**6, use_cache=False)
        with pytest.raises(ValueError, match=r"is 256 tokens long, which leaves no room in the model's context of "
                                             r"256 tokens for a new token"):
            generate(model, "x" * 256, 1, truncate=True)
        assert calls == []
    finally:
        handle.remove()


@pytest.mark.parametrize("use_cache", [True, False])
def test_truncate_stops_each_prompt_at_the_context(make_arch, use_cache):
    model, _ = make_arch("gpt2")
    prompts = ["y" * 250, "short"]
    gens = generate(model, prompts, 9, truncate=True, use_cache=use_cache)
    assert [len(g.new_ids) for g in gens] == [6, 9] and [g.stop for g in gens] == ["context", "max_new_tokens"]
    assert gens[0].new_ids == generate(model, prompts[0], 6, use_cache=use_cache)[0].new_ids
    assert gens[1].new_ids == generate(model, prompts[1], 9, use_cache=use_cache)[0].new_ids


def test_context_budgets():
    assert context_budgets([3, 5], 4, None) == [4, 4]
    assert context_budgets([3, 5], 4, 9) == [4, 4]
    assert context_budgets([3, 7], 4, 9, truncate=True) == [4, 2]
    with pytest.raises(ValueError, match="prompt 1 is 7 tokens long; with max_new_tokens=4 that is 11 tokens"):
        context_budgets([3, 7], 4, 9)
    with pytest.raises(ValueError, match="is 10 tokens long; with max_new_tokens=4 that is 14 tokens, beyond the "
                                         "model's context of 9 tokens: shorten the prompt"):
        context_budgets([10], 4, 9)
    with pytest.raises(ValueError, match="prompt 0 is 9 tokens long, which leaves no room"):
        context_budgets([9], 4, 9, truncate=True)
