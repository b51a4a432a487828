import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import final_residual
from tvmech.data.prompts import encode
from tvmech.interventions.injection import Injection


def _batch(tiny, n=4):
    task = tv.builtin_task("capitalize")
    prompts = tv.make_prompts(task, task.examples[:n], 1, task.examples[n:40], seed=2)
    return encode(tiny.tokenizer, task, prompts)


def _final(tiny, batch, inj=None):
    with torch.no_grad():
        return final_residual(tiny, batch, inj)


def test_zero_vector_changes_nothing(tiny):
    b = _batch(tiny)
    inj = Injection(torch.zeros(2, 3, tv.adapt(tiny).d_model), (0, 2), (-3, -2, -1))
    assert torch.equal(_final(tiny, b), _final(tiny, b, inj))


def test_injection_is_causal_and_lands_on_the_query_of_each_padded_row(tiny):
    b = _batch(tiny)
    assert len(set(b.query_pos.tolist())) > 1  # rows of different lengths: right padding in play
    inj = Injection.single(torch.randn(tv.adapt(tiny).d_model) * 5, 1, -2)
    base, hit = _final(tiny, b), _final(tiny, b, inj)
    for r, q in enumerate(b.query_pos.tolist()):
        p = q - 1
        assert torch.allclose(base[r, :p], hit[r, :p], atol=1e-6)  # nothing before p changes
        assert not torch.allclose(base[r, p], hit[r, p], atol=1e-3)  # p itself does


def test_injection_adds_exactly_at_resid_pre(tiny):
    ad = tv.adapt(tiny)
    b = _batch(tiny)
    v = torch.randn(ad.d_model)
    got = {}
    inj = Injection.single(v, 2, -1)
    with torch.no_grad(), ad.hooks(inj.hooks(tiny, b.query_pos)), ad.hooks(
        [(ad.hook_name(2), lambda x, hook: got.setdefault("x", x.clone()))]
    ):
        ad.residual(b.tokens, ad.n_layers)
    with torch.no_grad():
        clean = ad.residual(b.tokens, 2)
    rows = torch.arange(len(b))
    expected = clean.clone()
    expected[rows, b.query_pos] += v
    assert torch.allclose(got["x"], expected, atol=1e-5)


def test_replace_mode_and_absolute_positions(tiny):
    ad = tv.adapt(tiny)
    b = _batch(tiny)
    v = torch.randn(ad.d_model)
    inj = Injection.single(v, 1, 0, mode="replace")
    seen = {}
    with torch.no_grad(), ad.hooks(inj.hooks(tiny, b.query_pos)), ad.hooks(
        [(ad.hook_name(1), lambda x, hook: seen.setdefault("x", x.clone()))]
    ):
        ad.residual(b.tokens, ad.n_layers)
    assert torch.allclose(seen["x"][:, 0], v.expand(len(b), -1))


def test_context_manager_and_generation(tiny):
    ad = tv.adapt(tiny)
    tokens = torch.tensor([[5, 6, 7, 8]])
    inj = Injection.single(torch.randn(ad.d_model) * 10, 1)
    with torch.no_grad():
        base = tiny(tokens)
        with inj.apply(tiny):
            hit = tiny(tokens)
        after = tiny(tokens)
    assert not torch.allclose(base[0, -1], hit[0, -1]) and torch.allclose(base[0, :-1], hit[0, :-1], atol=1e-5)
    assert torch.equal(base, after)  # hooks removed on exit


@pytest.mark.parametrize("kwargs, message", [
    (dict(vectors=torch.zeros(1, 1, 7), layers=(0,)), "does not match the model's d_model 64"),
    (dict(vectors=torch.zeros(1, 1, 64), layers=(9,)), "layer 9 is out of range"),
])
def test_bad_injections(tiny, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Injection(**kwargs).hooks(tiny)


def test_bad_shapes_and_positions(tiny):
    with pytest.raises(ValueError, match=r"do not fit 2 layers x 1 positions"):
        Injection(torch.zeros(3, 1, 64), (0, 1))
    b = _batch(tiny)
    inj = Injection.single(torch.zeros(64), 0, -500)
    with pytest.raises(ValueError, match="position -500 is out of range"):
        _final(tiny, b, inj)

