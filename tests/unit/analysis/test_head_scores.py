"""The TV-reliance head score, layer-matched comparison sets and precision@k (issue 11)."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.head_attribution import (
    HeadScores,
    check_score,
    heads_from_layer,
    key_heads,
    layer_histogram,
    layer_matched_sets,
    precision_at_k,
    taylor_scores,
)
from tvmech.data.prompts import encode, make_prompts
from tvmech.interventions.task_vector import TaskVector

TASK = tv.builtin_task("capitalize")
PROMPTS = make_prompts(TASK, TASK.examples[:6], 0)


def _vec(model, layer=1, scale=3.0):
    g = torch.Generator().manual_seed(0)
    return TaskVector.for_model(model, scale * torch.randn(1, 1, tv.adapt(model).d_model, generator=g), (layer,), (-1,))


def _p(ad, batch, hooks):
    rows = torch.arange(len(batch))
    h0 = ad.residual(batch.tokens, 0).detach().requires_grad_(torch.is_grad_enabled())
    with ad.hooks(hooks):
        final = ad.run_blocks(h0, 0)
    return torch.softmax(ad.unembed(final[rows, batch.query_pos]), -1)[rows, batch.label_first]


@pytest.mark.parametrize("layer", [1, 2])
def test_heads_below_the_injection_layer_score_exactly_zero(tiny, layer):
    ad, vec = tv.adapt(tiny), _vec(tiny, layer)
    tvr = taylor_scores(tiny, vec, TASK, PROMPTS)
    assert tvr.score == "tv_reliance" and tvr.taylor.shape == (ad.n_layers, ad.n_heads)
    assert (tvr.taylor[:layer] == 0).all() and (tvr.signed[:layer] == 0).all()
    assert (tvr.taylor[layer:] > 0).all()
    paper = taylor_scores(tiny, vec, TASK, PROMPTS, score="paper")
    assert (paper.taylor[:layer] > 0).any()  # the paper's score also ranks heads θ cannot reach
    assert paper.p == pytest.approx(tvr.p)
    assert all(l >= layer for l, _ in key_heads(tvr, 0.25))


def test_tv_reliance_is_the_derivative_along_the_theta_change(tiny):
    """(z_θ − z_clean)·∂p/∂z = d p(z_clean + α (z_θ − z_clean)) / dα at α = 1: autograd through α and a
    finite difference."""
    ad, vec = tv.adapt(tiny), _vec(tiny)
    scores = taylor_scores(tiny, vec, TASK, PROMPTS)
    batch = encode(ad.tokenizer, TASK, PROMPTS)
    rows, q = torch.arange(len(batch)), batch.query_pos
    for layer, head in [(1, 0), (1, 3), (2, 2)]:
        kept = {}
        with torch.no_grad():
            _p(ad, batch, [(ad.act_name(layer, "z"), lambda z, hook=None: kept.setdefault("z", z.clone()))])
        z_clean = kept["z"][rows, q, head]

        def along(alpha):
            def hook(z, hook=None):
                z = z.clone()
                z[rows, q, head] = z_clean + alpha[:, None] * (z[rows, q, head] - z_clean)
                return z
            return vec.hooks(tiny, batch.query_pos) + [(ad.act_name(layer, "z"), hook)]

        alpha = torch.ones(len(batch), requires_grad=True)
        (deriv,) = torch.autograd.grad(_p(ad, batch, along(alpha)).sum(), alpha)
        assert deriv.abs().max() > 0
        assert torch.allclose(scores.taylor[layer, head], deriv.abs().mean(), rtol=1e-4, atol=1e-7)
        assert torch.allclose(scores.signed[layer, head], deriv.mean(), rtol=1e-4, atol=1e-7)
        eps = 1e-2
        with torch.no_grad():
            fd = (_p(ad, batch, along(torch.full((len(batch),), 1 + eps)))
                  - _p(ad, batch, along(torch.full((len(batch),), 1 - eps)))) / (2 * eps)
        assert torch.allclose(fd, deriv, rtol=0.05, atol=1e-4 * (1 + deriv.abs().max())), (fd, deriv)


def test_layer_matched_sets_match_the_histogram_and_differ_by_seed():
    key = [(0, 1), (2, 0), (2, 5), (5, 3), (5, 4), (5, 7)]
    sets = layer_matched_sets(key, 8, 9, n_sets=6, seed=2)
    want = layer_histogram(key, 8)
    assert len(sets) == 6
    for s in sets:
        assert torch.equal(layer_histogram(s, 8), want) and len(set(s)) == len(key)
        assert not set(s) & set(key) and all(0 <= h < 9 for _, h in s)
    assert len({tuple(s) for s in sets}) == 6  # every seed gives another set
    assert sets == layer_matched_sets(key, 8, 9, n_sets=6, seed=2)
    assert sets[1:] == layer_matched_sets(key, 8, 9, n_sets=5, seed=3)  # set i depends on seed + i only
    with pytest.raises(ValueError, match="layer 1 has 3 key heads but only 1 other heads"):
        layer_matched_sets([(1, 0), (1, 1), (1, 2)], 3, 4)
    with pytest.raises(ValueError, match="key set is empty"):
        layer_matched_sets([], 3, 4)


def test_precision_at_k_on_constructed_scores():
    exact = torch.arange(20.0)  # top 10% (k = 2): entries 19 and 18
    assert precision_at_k(exact, exact, 0.1) == (1.0, 2)
    assert precision_at_k(-exact, exact, 0.1) == (0.0, 2)
    one = exact.clone()
    one[18] = -1.0  # keeps 19 on top, drops 18 below 17
    assert precision_at_k(one, exact, 0.1) == (0.5, 2)
    assert precision_at_k(exact, exact * 3 + 1, 0.25) == (1.0, 5)  # any increasing transform
    shuffled = torch.tensor([0.9, 0.8, 0.7, 0.1, 0.0, 0.2, 0.3, 0.4, 0.5, 0.6])
    ref = torch.tensor([0.9, 0.0, 0.7, 0.8, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert precision_at_k(shuffled, ref, 0.3) == (pytest.approx(2 / 3), 3)  # {0,1,2} vs {0,3,2}
    with pytest.raises(ValueError, match="same length"):
        precision_at_k(torch.ones(3), torch.ones(4))


def test_heads_from_layer_and_score_names():
    assert heads_from_layer(3, 2, 1) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        heads_from_layer(3, 2, 3)
    with pytest.raises(ValueError, match="head score 'abs' is not valid"):
        check_score("abs")
    assert HeadScores(torch.zeros(1, 1), torch.zeros(1, 1), 0.0, 1).score == "tv_reliance"
