"""tvmech's measurements against TransformerLens's own tools, on every architecture of the matrix
(:mod:`tvmech.analysis.tl_agreement`): the same quantity computed two ways agrees to float32 rounding, and the
variants differ as the module docstring says."""

from __future__ import annotations

import pytest
import torch

import tvmech as tv
from tvmech.analysis import tl_agreement as ta
from tvmech.analysis.tv_map import MapConfig
from tvmech.data.prompts import make_prompts

TASK = tv.builtin_task("antonym")
PROMPTS = make_prompts(TASK, TASK.splits(0).test[:2], 0)


def rows_of(model) -> ta.QueryRows:
    return ta.query_rows(model, TASK, PROMPTS)


def test_query_rows_cut_after_the_query(tiny):
    rows = rows_of(tiny)
    batch = rows.batch()
    for b, (ids, q) in enumerate(zip(rows.ids, rows.query)):
        assert ids[: q + 1] == tuple(tiny.to_tokens(PROMPTS[b].text)[0].tolist())
        assert batch.tokens[b, : q + 1].tolist() == list(ids[: q + 1]) and int(batch.label_first[b]) == ids[q + 1]
    assert rows.take([1]).texts == rows.texts[1:]


def test_exact_jacobian_is_the_single_position_jacobian_lens(make_arch, arch):
    model, _ = make_arch(arch)
    out = ta.jacobian_agreement(model, rows_of(model), 1)
    assert out["jac_one_rel"] < 1e-5 and out["jac_mean_rel"] < 1e-5, out


def test_w_tv_tends_to_the_jacobian_lens_as_theta_shrinks(make_arch64):
    model = make_arch64("llama")
    rows = rows_of(model)
    u = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    config = MapConfig(n_heldout=0, noise_scales=(0.05,))
    small = ta.jacobian_agreement(model, rows, 1, 1e-2 * u, config)  # ‖θ‖ ≈ 0.08, the query stream's ≈ 30
    large = ta.jacobian_agreement(model, rows, 1, 4 * u, config)
    assert small["wtv_rel"] < 1e-2 and small["wtv_cos"] > 1 - 1e-4, small
    # far from 0 the map is the tangent at θ, not at 0: it differs from the J-lens as J(θ) does
    assert large["jac_theta_rel"] > 0.05 and abs(large["wtv_rel"] - large["jac_theta_rel"]) < 0.2 * large[
        "jac_theta_rel"], large


def test_jacobian_lens_has_no_layer_zero(tiny):
    err = ta.guarded("jlens", ta.jacobian_agreement, tiny, rows_of(tiny), 0)
    assert "layer 0" in err["jlens_error"] and err["jlens_error"].startswith("ValueError")


def test_taylor_scores_are_minus_attribution_patching(make_arch, arch):
    model, _ = make_arch(arch)
    out = ta.attribution_agreement(model, TASK, PROMPTS, swap=model.tokenizer.convert_tokens_to_ids("z"))
    assert out["ap_norm"] > 0 and out["ap_rel"] < 1e-4, out


def test_attribution_refuses_a_corrupt_token_equal_to_the_query(tiny):
    with pytest.raises(ValueError, match="clean query token"):
        ta.attribution_agreement(tiny, TASK, PROMPTS[:1], swap=tiny.tokenizer.convert_tokens_to_ids(":"))


def test_logit_lens_is_transformerlens_logit_lens(make_arch, arch):
    model, _ = make_arch(arch)
    out = ta.lens_agreement(model, rows_of(model), n_vectors=8, repeats=1)
    assert out["lens_rel"] < 1e-6 and out["lens_stack_rel"] < 1e-5, out


@pytest.mark.slow
def test_agreement_on_the_default_model(default_model):
    rows = ta.query_rows(default_model, TASK, PROMPTS[:1])
    assert ta.jacobian_agreement(default_model, rows, 28)["jac_one_rel"] < 1e-4  # a late layer: few blocks to run
    swap = default_model.tokenizer.encode(" z", add_special_tokens=False)[-1]
    assert ta.attribution_agreement(default_model, TASK, PROMPTS[:1], swap)["ap_rel"] < 1e-3
    assert ta.lens_agreement(default_model, rows, n_vectors=4, repeats=1)["lens_rel"] < 1e-5
