"""Logit lens: decoding, label directions, per-layer states and metrics (tiny random Llama)."""

from __future__ import annotations

import pytest
import torch

import tvmech as tv
from tvmech.analysis.lens import (
    alignment,
    decode,
    decode_vector_rows,
    effective_unembedding,
    label_directions,
    lens_logits,
    lens_metrics,
    query_states,
)
from tvmech.experiments.logit_lens import lens_conditions
from tvmech.interventions.injection import Injection
from tvmech.interventions.task_vector import TaskVector

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:30], TASK.template)


def unit_rms(n: int, d: int = 64, seed: int = 0) -> torch.Tensor:
    h = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return h / h.pow(2).mean(-1, keepdim=True).sqrt()


def test_decode_returns_the_top_tokens_of_the_lens(tiny):
    ad = tv.adapt(tiny)
    v = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    out = decode(tiny, v, k=4)
    probs = torch.softmax(ad.unembed(v).float(), -1)
    assert len(out) == 3
    for row, p in zip(out, probs):
        assert list(row.ids) == p.topk(4).indices.tolist()
        assert list(row.probs) == sorted(row.probs, reverse=True)
        assert abs(row.probs[0] - float(p.max())) < 1e-6
        assert row.tokens[0] == ad.tokenizer.decode([row.ids[0]])
    with pytest.raises(ValueError, match="d_model 64"):
        decode(tiny, torch.zeros(2, 10))
    with pytest.raises(ValueError, match="k must be >= 1"):
        decode(tiny, v, k=0)


def test_effective_unembedding_is_the_lens_on_unit_rms_vectors(tiny):
    """For ‖h‖_rms = 1 the lens is affine: logits(h) − logits(0) = h @ E (up to the norm's epsilon)."""
    E = effective_unembedding(tiny)
    h = unit_rms(5)
    got = lens_logits(tiny, h) - lens_logits(tiny, torch.zeros(1, 64))
    assert torch.allclose(got, h @ E, atol=1e-3 * float(got.abs().max()))


def test_label_direction_measures_the_logit_margin_over_the_vocabulary(tiny):
    """h · u_t = (z_t − mean_v z_v) of the lens, up to the bias, for unit-RMS h: the documented definition."""
    dirs = label_directions(tiny, SMALL)
    h = unit_rms(4, seed=1)
    z = lens_logits(tiny, h) - lens_logits(tiny, torch.zeros(1, 64))
    for i, t in enumerate(dirs.tokens[:5]):
        margin = z[:, t] - z.mean(-1)
        assert torch.allclose(h @ dirs.u[i], margin, atol=1e-3 * float(margin.abs().max()) + 1e-5)
    assert abs(float(dirs.mean.norm()) - 1) < 1e-5
    assert abs(float(alignment(dirs.mean * 7, dirs.mean)) - 1) < 1e-5
    assert abs(float(alignment(-dirs.mean, dirs.mean)) + 1) < 1e-5


def test_query_states_match_the_adapter_and_the_injection_hooks(tiny):
    ad = tv.adapt(tiny)
    batch = tv.encode(ad.tokenizer, SMALL, tv.make_prompts(SMALL, SMALL.examples[:4], 0))
    rows = torch.arange(4)
    states = query_states(tiny, batch.tokens, batch.query_pos)
    assert states.shape == (ad.n_layers + 1, 4, 64)
    for l in (0, 2, ad.n_layers):
        assert torch.allclose(states[l], ad.residual(batch.tokens, l)[rows, batch.query_pos], atol=1e-5)
    v = torch.randn(64, generator=torch.Generator().manual_seed(3))
    injected = query_states(tiny, batch.tokens, batch.query_pos, v, 1)
    assert torch.allclose(injected[0], states[0]) and torch.allclose(injected[1], states[1] + v, atol=1e-5)
    with Injection.single(v, 1).apply(tiny, batch.query_pos), torch.no_grad():
        final = ad.residual(batch.tokens, ad.n_layers)[rows, batch.query_pos]
    assert torch.allclose(injected[-1], final, atol=1e-4)
    assert not torch.allclose(injected[-1], states[-1], atol=1e-3)
    with pytest.raises(ValueError, match="vector is a tensor, which does not say where it goes: pass layer"):
        query_states(tiny, batch.tokens, batch.query_pos, v)
    with pytest.raises(ValueError, match="out of range"):
        query_states(tiny, batch.tokens, batch.query_pos, v, 7)


def test_lens_at_the_final_layer_is_the_models_accuracy(tiny):
    """The last row of the lens is the model's output, so its accuracy is ``tv.evaluate``'s (first-token scoring)."""
    queries = SMALL.examples[:12]
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(4)) * 3, (1,))
    for v in (None, vec):
        rows = lens_metrics(tiny, SMALL, tv.make_prompts(SMALL, queries, 0), v, batch_size=5)
        assert [r["layer"] for r in rows] == list(range(tv.adapt(tiny).n_layers + 1))
        ref = tv.evaluate(tiny, SMALL, queries, 0, intervention=v)
        assert rows[-1]["accuracy"] == pytest.approx(ref.accuracy)
        for r in rows:
            assert 0 <= r["accuracy"] <= 1 and 0 <= r["p_correct"] <= 1 and r["n"] == 12
            assert -1 <= r["task_alignment"] <= 1 and -1 <= r["label_alignment"] <= 1 and r["top_tokens"]
    multi = TaskVector.for_model(tiny, torch.randn(2, 1, 64), (0, 1))
    with pytest.raises(ValueError, match="one layer"):
        lens_metrics(tiny, SMALL, tv.make_prompts(SMALL, queries, 0), multi)


def test_lens_conditions_and_vector_decoding(tiny):
    sp = SMALL.splits(0)
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(5)), (2,))
    rows = lens_conditions(tiny, SMALL, sp.test[:4], vec, k=2, demos=sp.train)
    n = tv.adapt(tiny).n_layers + 1
    assert [r["condition"] for r in rows] == ["zero_shot"] * n + ["icl_2shot"] * n + ["tv_L2"] * n
    zs, inj = rows[:n], rows[2 * n :]
    assert [r["accuracy"] for r in zs[:2]] == [r["accuracy"] for r in inj[:2]]  # before the injection layer
    dec = decode_vector_rows(tiny, {2: vec.vectors.reshape(-1), 0: -vec.vectors.reshape(-1)}, SMALL, k=3)
    assert [r["layer"] for r in dec] == [0, 2]
    assert dec[0]["task_alignment"] == pytest.approx(-dec[1]["task_alignment"], abs=1e-5)
