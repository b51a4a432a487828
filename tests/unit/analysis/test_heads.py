"""Taylor head scores, exact ablations, key/random head sets and attention-sink statistics on the tiny model."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.attention_stats import attention_stats
from tvmech.analysis.head_attribution import (
    HeadScores,
    ablated_accuracy,
    ablation,
    ablation_effects,
    check_heads,
    key_heads,
    layer_histogram,
    mean_std,
    n_key,
    prompt_batch,
    random_head_sets,
    spearman,
    taylor_scores,
)
from tvmech.data.prompts import encode, make_prompts
from tvmech.experiments.key_heads import key_vs_random
from tvmech.experiments.sinks import compare_sets
from tvmech.interventions.head_patch import HeadPatch
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.function_vectors import mean_head_z

TASK = tv.builtin_task("capitalize")
PROMPTS = make_prompts(TASK, TASK.examples[:6], 0)


def _vec(model, layer=1, position=-1, scale=3.0):
    g = torch.Generator().manual_seed(0)
    return TaskVector.for_model(model, scale * torch.randn(1, 1, tv.adapt(model).d_model, generator=g), (layer,),
                                (position,))


def _p(ad, batch, hooks):
    """p(correct first token) per prompt: embeddings outside the hooks, then all blocks with them."""
    rows = torch.arange(len(batch))
    h0 = ad.residual(batch.tokens, 0).detach().requires_grad_(torch.is_grad_enabled())
    with ad.hooks(hooks):
        final = ad.run_blocks(h0, 0)
    return torch.softmax(ad.unembed(final[rows, batch.query_pos]), -1)[rows, batch.label_first]


def test_taylor_score_is_the_derivative_of_scaling_the_head(tiny):
    """a·∂p/∂a = d p(α z_h[q]) / dα at α = 1, checked by autograd through α and by a finite difference."""
    ad, vec = tv.adapt(tiny), _vec(tiny)
    scores = taylor_scores(tiny, vec, TASK, PROMPTS, score="paper")
    assert scores.score == "paper" and scores.taylor.shape == (ad.n_layers, ad.n_heads) and scores.n == len(PROMPTS)
    assert (scores.taylor >= scores.signed.abs() - 1e-7).all() and scores.taylor.max() > 0
    batch = encode(ad.tokenizer, TASK, PROMPTS)
    rows, q = torch.arange(len(batch)), batch.query_pos
    for layer, head in [(0, 2), (1, 0), (2, 3)]:
        def scaled(alpha):
            def hook(z, hook=None):
                z = z.clone()
                z[rows, q, head] = z[rows, q, head] * alpha[:, None]
                return z
            return vec.hooks(tiny, batch.query_pos) + [(ad.act_name(layer, "z"), hook)]

        alpha = torch.ones(len(batch), requires_grad=True)
        (deriv,) = torch.autograd.grad(_p(ad, batch, scaled(alpha)).sum(), alpha)
        assert torch.allclose(scores.taylor[layer, head], deriv.abs().mean(), rtol=1e-4, atol=1e-7)
        assert torch.allclose(scores.signed[layer, head], deriv.mean(), rtol=1e-4, atol=1e-7)
        eps = 1e-2
        with torch.no_grad():
            fd = (_p(ad, batch, scaled(torch.full((len(batch),), 1 + eps)))
                  - _p(ad, batch, scaled(torch.full((len(batch),), 1 - eps)))) / (2 * eps)
        assert torch.allclose(fd, deriv, rtol=0.05, atol=1e-4 * (1 + deriv.abs().max())), (fd, deriv)


def test_z_gradient_equals_head_output_times_attn_out_gradient(tiny):
    """z·∂p/∂z = (z W_O)·∂p/∂attn_out: the score is the head's output a = z W_O dotted with ∂p/∂a."""
    ad, vec = tv.adapt(tiny), _vec(tiny)
    batch = encode(ad.tokenizer, TASK, PROMPTS)
    rows, q, layer = torch.arange(len(batch)), batch.query_pos, 2
    kept = {}

    def keep(name):
        def hook(x, hook=None):
            kept[name] = x
            return x
        return hook

    p = _p(ad, batch, vec.hooks(tiny, batch.query_pos) + [(ad.act_name(layer, "z"), keep("z")),
                                                     (ad.act_name(layer, "attn_out"), keep("out"))])
    gz, gout = torch.autograd.grad(p.sum(), [kept["z"], kept["out"]])
    z = kept["z"][rows, q].detach()  # [B, H, d_head]
    a = torch.einsum("bhd,hdm->bhm", z, ad.W_O[layer].detach())
    assert torch.allclose((z * gz[rows, q]).sum(-1), (a * gout[rows, q][:, None]).sum(-1), atol=1e-6)
    scores = taylor_scores(tiny, vec, TASK, PROMPTS, score="paper")
    assert torch.allclose(scores.taylor[layer], (a * gout[rows, q][:, None]).sum(-1).abs().mean(0), atol=1e-6)


@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_batched_exact_ablation_matches_one_head_at_a_time(tiny, kind):
    ad, vec = tv.adapt(tiny), _vec(tiny)
    heads = [(0, 1), (1, 0), (1, 3), (2, 2)]
    means = mean_head_z(tiny, TASK, PROMPTS) if kind == "mean" else None
    got = ablation_effects(tiny, vec, TASK, PROMPTS, heads, kind=kind, means=means)
    assert got.shape == (len(heads), len(PROMPTS))
    batch = encode(ad.tokenizer, TASK, PROMPTS)
    with torch.no_grad():
        p = _p(ad, batch, vec.hooks(tiny, batch.query_pos))
        for i, head in enumerate(heads):
            pa = _p(ad, batch, (vec + ablation(tiny, [head], kind=kind, means=means)).hooks(tiny, batch.query_pos))
            assert torch.allclose(got[i], p - pa, atol=1e-5), head
    assert got.abs().max() > 0


def test_ablation_zeroes_the_heads_at_each_query_only(tiny):
    """Zeroing every head of a layer at the query zeroes that layer's attention output there (no bias) and
    leaves the other positions alone; prompts of different lengths have different query positions."""
    ad = tv.adapt(tiny)
    batch = encode(ad.tokenizer, TASK, PROMPTS)
    assert len(set(batch.query_pos.tolist())) > 1
    got = []
    grab = (ad.act_name(1, "attn_out"), lambda x, hook=None: got.append(x.detach().clone()))
    with torch.no_grad():
        _p(ad, batch, [grab])
        _p(ad, batch, ablation(tiny, [(1, h) for h in range(ad.n_heads)]).hooks(tiny, batch.query_pos) + [grab])
    clean, ablated = got
    rows = torch.arange(len(batch))
    assert torch.allclose(ablated[rows, batch.query_pos], torch.zeros(1), atol=1e-6)
    keep = torch.ones_like(ablated[..., 0], dtype=torch.bool)
    keep[rows, batch.query_pos] = False
    assert torch.allclose(ablated[keep], clean[keep]) and clean[rows, batch.query_pos].abs().max() > 0


def test_ablation_is_one_head_patch_per_layer(tiny):
    means = torch.randn(3, 4, 16)
    abl = ablation(tiny, [(2, 1), (0, 3), (2, 0)], kind="mean", means=means)
    assert [(p.layer, p.heads.tolist()) for p in abl.parts] == [(2, [1, 0]), (0, [3])]
    assert torch.equal(abl.parts[0].values, means[2]) and torch.equal(abl.parts[1].values, means[0])
    one = ablation(tiny, [(1, 2)])
    assert isinstance(one, HeadPatch) and one.values is None and one.positions == (-1,)


def test_key_heads_and_random_sets():
    taylor = torch.tensor([[0.1, 0.9, 0.0, 0.3], [0.5, 0.2, 0.8, 0.05], [0.4, 0.6, 0.7, 0.01]])
    scores = HeadScores(taylor, taylor, 0.5, 4)
    assert n_key(12, 0.1) == 1 and n_key(12, 0.25) == 3 and n_key(270, 0.1) == 27
    key = key_heads(scores, 0.25)
    assert key == [(0, 1), (1, 2), (2, 2)]
    sets = random_head_sets(3, 4, len(key), 5, seed=3, exclude=key)
    assert len(sets) == 5 and all(len(s) == 3 and len(set(s)) == 3 and not set(s) & set(key) for s in sets)
    assert all(0 <= l < 3 and 0 <= h < 4 for s in sets for l, h in s)
    assert sets == random_head_sets(3, 4, 3, 5, seed=3, exclude=key)
    assert sets[1:] == random_head_sets(3, 4, 3, 4, seed=4, exclude=key)  # set i depends on seed + i only
    assert len({tuple(s) for s in sets}) > 1
    assert layer_histogram(key, 3).tolist() == [1, 1, 1]
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 30, 25])) == pytest.approx(0.8)


def test_key_vs_random_rows(tiny):
    vec, queries = _vec(tiny), TASK.splits(0).test[:6]
    scores = taylor_scores(tiny, vec, TASK, PROMPTS)
    means = mean_head_z(tiny, TASK, PROMPTS)
    rows = key_vs_random(tiny, vec, TASK, queries, scores, frac=0.25, n_random=5, means=means, batch_size=4)
    assert len(rows) == 1 + 2 * 6
    base = next(r for r in rows if r["set"] == "none")
    assert base["accuracy"] == tv.evaluate(tiny, TASK, queries, 0, intervention=vec).accuracy
    key_zero = next(r for r in rows if r["set"] == "key" and r["kind"] == "zero")
    direct = ablated_accuracy(tiny, vec, TASK, queries, key_heads(scores, 0.25), kind="zero", batch_size=4)
    assert key_zero["accuracy"] == direct.accuracy and key_zero["size"] == 3
    assert sorted(r["seed"] for r in rows if r["set"] == "random" and r["kind"] == "mean") == [0, 1, 2, 3, 4]


def test_stacked_ablations_equal_each_ablation_in_its_own_hooked_pass(tiny):
    """Several ablations stacked along the batch axis (chunked by max_rows) give, row by row, each ablation's
    own predictions from a pass with only its hooks (the reference path)."""
    from tvmech.analysis.head_attribution import ablated_accuracies_many, ablation

    ad = tv.adapt(tiny)
    vec, queries = _vec(tiny), TASK.splits(0).test[:7]
    means = mean_head_z(tiny, TASK, PROMPTS)
    jobs = [([(0, 1), (2, 3)], "zero"), ([(1, 0)], "mean"), ([(0, 0), (1, 1), (2, 2), (1, 3)], "zero"),
            ([(2, 0), (0, 3)], "mean"), ([(l, h) for l in range(ad.n_layers) for h in range(ad.n_heads)], "zero")]
    got = ablated_accuracies_many(tiny, vec, TASK, queries, jobs, scorings=("first_token",), means=means,
                                  batch_size=3, max_rows=6)
    preds = set()
    for (heads, kind), res in zip(jobs, got):
        both = vec.injection + ablation(ad, heads, kind=kind, means=means)
        ref = tv.evaluate(tiny, TASK, queries, 0, scoring="first_token", batch_size=3, intervention=both)
        assert (res["first_token"].correct, res["first_token"].predictions) == (ref.correct, ref.predictions)
        preds.add(tuple(ref.predictions))
    assert len(preds) > 1  # the ablations differ from one another


def _uniform_pattern(p, hook=None):
    T = p.shape[-1]
    causal = torch.ones(T, T).tril()
    return (causal / causal.sum(-1, keepdim=True)).to(p.dtype).expand_as(p).clone()


def test_sink_statistics_with_a_known_pattern(tiny):
    """Uniform causal attention: from query q, each position gets 1/(q+1); rest = 1 − 3/(q+1) when 0, q-1, q
    are distinct (vector at position -2)."""
    ad, vec = tv.adapt(tiny), _vec(tiny, position=-2)
    force = [(ad.act_name(l, "pattern"), _uniform_pattern) for l in range(ad.n_layers)]
    q = encode(ad.tokenizer, TASK, PROMPTS).query_pos.float()
    assert (q >= 2).all()
    with ad.hooks(force):
        stats = attention_stats(tiny, TASK, PROMPTS, vec, threshold=0.1)
    share = (1 / (q + 1)).mean()
    for m in (stats.first, stats.self_, stats.injected):
        assert torch.allclose(m, share.expand_as(m), atol=1e-6)
    assert torch.allclose(stats.rest, (1 - 3 / (q + 1)).mean().expand_as(stats.rest), atol=1e-6)
    assert torch.allclose(stats.sink_rate, ((1 / (q + 1)) > 0.1).float().mean().expand_as(stats.sink_rate))


def test_sink_statistics_sum_to_one_and_compare_sets(tiny):
    stats = attention_stats(tiny, TASK, PROMPTS, _vec(tiny), threshold=0.3)
    assert torch.allclose(stats.self_, stats.injected)  # default position: the query itself
    assert torch.allclose(stats.first + stats.self_ + stats.rest, torch.ones(3, 4), atol=1e-5)
    assert ((stats.sink_rate >= 0) & (stats.sink_rate <= 1)).all() and stats.n == len(PROMPTS)
    none = attention_stats(tiny, TASK, PROMPTS, None)
    assert not torch.allclose(none.first, stats.first)  # the vector changes later layers' attention
    key, rnd = [(0, 1), (2, 2)], random_head_sets(3, 4, 2, 5, exclude=[(0, 1), (2, 2)])
    rows = compare_sets(stats, key, rnd, model=tiny)
    first_key = next(r for r in rows if r["set"] == "key" and r["metric"] == "first")
    assert first_key["value"] == pytest.approx(float(stats.first[0, 1] + stats.first[2, 2]) / 2)
    mean_row = next(r for r in rows if r["set"] == "random_mean" and r["metric"] == "sink_rate")
    per = [r["value"] for r in rows if r["set"] == "random" and r["metric"] == "sink_rate"]
    assert len(per) == 5 and mean_row["value"] == pytest.approx(sum(per) / 5)


def test_bad_input(tiny):
    vec = _vec(tiny)
    with pytest.raises(ValueError, match="head set is empty"):
        check_heads(tiny, [])
    with pytest.raises(ValueError, match="head set is empty"):
        ablated_accuracy(tiny, vec, TASK, TASK.examples[:2], [])
    with pytest.raises(ValueError, match=r"head 4 is out of range.*0\.\.3"):
        ablation(tiny, [(0, 4)])
    with pytest.raises(ValueError, match=r"layer 3 is out of range.*0\.\.2"):
        ablation_effects(tiny, vec, TASK, PROMPTS, [(3, 0)])
    with pytest.raises(ValueError, match="kind 'half' is not valid"):
        ablation(tiny, [(0, 1)], kind="half")
    with pytest.raises(ValueError, match="mean ablation needs means"):
        ablation_effects(tiny, vec, TASK, PROMPTS, [(0, 1)], kind="mean")
    with pytest.raises(ValueError, match="repeats"):
        check_heads(tiny, [(0, 1), (0, 1)])
    with pytest.raises(ValueError, match="task 'capitalize': no prompts"):
        prompt_batch(tiny, TASK, [])
    with pytest.raises(ValueError, match=r"frac 0 is not valid.*\(0, 1\]"):
        n_key(12, 0)
    with pytest.raises(ValueError, match="set size 0 is not valid"):
        random_head_sets(3, 4, 0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"threshold {bad} is not valid.*\[0, 1\]"):
            attention_stats(tiny, TASK, PROMPTS, vec, threshold=bad)
    with pytest.raises(ValueError, match="head set is empty"):
        compare_sets(attention_stats(tiny, TASK, PROMPTS), [], [[(0, 0)]])
    with pytest.raises(ValueError, match=r"layer 5 is out of range"):
        layer_histogram([(5, 0)], 3)


def test_mechanism_figures_draw_saved_rows():
    """The figure builders draw rows in the steps' formats (means over tasks, error bars over seeds)."""
    from tvmech.plots import mechanism_plots as mp

    recon = [{"task": t, "layer": 15, "method": m, "accuracy": a, "n": 4} for t in ("a", "b")
             for m, a in (("zero_shot", 0.0), ("ltv", 1.0), ("ov", 0.5))]
    fig = mp.reconstruction_figure(recon, "m")
    assert [tr.name for tr in fig.data] == ["zero-shot", "full LTV", "OV reconstruction"]
    assert list(fig.data[2].y) == [0.5, 0.5, 0.5] and list(fig.data[2].x) == ["a", "b", "mean"]
    abl = [{"task": t, "set": "none", "seed": None, "kind": "none", "size": 0, "accuracy": 0.9, "n": 4} for t in "ab"]
    abl += [{"task": t, "set": "key", "seed": None, "kind": "zero", "size": 3, "accuracy": 0.1, "n": 4} for t in "ab"]
    abl += [{"task": t, "set": "random", "seed": s, "kind": "zero", "size": 3, "accuracy": 0.5 + 0.1 * s, "n": 4}
            for t in "ab" for s in range(3)]
    fig = mp.key_ablation_figure(abl)
    rnd = fig.data[2]
    assert rnd.y[-1] == pytest.approx(0.6) and rnd.error_y.array[-1] == pytest.approx(0.1)
    scores = [{"task": "a", "layer": l, "head": 0, "key": l == 2} for l in range(4)]
    assert list(mp.key_layers_figure(scores, 4, 1).data[0].y) == [0, 0, 1, 0]
    sinks = [{"task": "a", "set": s, "seed": i, "metric": "first", "value": v, "std": 0.0}
             for s, i, v in (("key", None, 0.2), ("random", 0, 0.6), ("random", 1, 0.8))]
    fig = mp.sinks_figure(sinks, threshold=0.3)
    assert fig.data[0].y[0] == pytest.approx(0.2) and fig.data[1].y[0] == pytest.approx(0.7)
    taylor = [{"task": "a", "layer": 0, "head": h, "rank": h, "taylor": 0.1 / (h + 1), "exact": 0.1 / (h + 1),
               "spearman": 1.0} for h in range(3)]
    fig = mp.taylor_exact_figure(taylor)
    assert "ρ = 1.00" in fig.layout.annotations[0].text and "zero ablation" in fig.layout.annotations[0].text
