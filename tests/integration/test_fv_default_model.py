"""The function vectors' indirect effects on the default model: the query-only forked passes equal the full-width
per-layer loop (the reference) to 1e-5 in float32 (short 1-shot prompts of two lengths, so that it takes seconds)."""

import pytest
import torch

import tvmech as tv
from tvmech.data.prompts import encode
from tvmech.methods.function_vectors import indirect_effects, mean_head_z

pytestmark = pytest.mark.slow


def test_query_only_indirect_effects_equal_the_full_width_loop_on_the_default_model(default_model):
    task = tv.builtin_task("country_capital")
    sp = task.splits(0)
    queries = list(sp.train[:12])
    z_mean = mean_head_z(default_model, task, tv.make_prompts(task, queries, 2, sp.train, seed=0))
    shuffled = tv.make_prompts(task, queries, 1, sp.train, seed=1)  # short: the equality is the point
    q = encode(default_model.tokenizer, task, shuffled).query_pos.tolist()
    prompts = [shuffled[0], shuffled[next(i for i, p in enumerate(q) if p != q[0])]]  # two query positions
    want = indirect_effects(default_model, task, prompts, z_mean, query_only=False)
    got = indirect_effects(default_model, task, prompts, z_mean)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert want.abs().max() > 1e-3
