"""The random-vector null of the polar statistics: the verdict functions, and on a random 6-layer model that
the "rotation then scaling" trend of a random θ is what the null predicts (not task-vector-specific)."""

import math

import numpy as np
import pytest
import torch

import tvmech as tv
from tvmech.analysis.polar_null import (
    matched_random_vectors,
    null_verdict,
    polar_table,
    pooled_verdict,
    row_verdicts,
    verdict_fields,
)
from tvmech.analysis.tv_map import fit_prompts, fit_tv_map, jacobians
from tvmech.core.models import wrap
from tvmech.experiments import linear_map


# ------------------------------------------------------------------------------- pure functions
def test_null_verdict_places_a_value_in_its_null():
    null = [float(x) for x in range(1, 11)]
    mid = null_verdict(5.0, null, "gain")
    assert mid["statistic"] == "gain" and mid["null_n"] == 10 and mid["ltv"] == 5.0
    assert mid["null_mean"] == pytest.approx(5.5) and mid["null_sd"] == pytest.approx(np.std(null, ddof=1))
    assert mid["null_q025"] == pytest.approx(1 + 0.025 * 9) and mid["null_q975"] == pytest.approx(10 - 0.025 * 9)
    assert mid["percentile"] == pytest.approx(45.0) and mid["specific"] is False  # 4 below, 1 tie (half)
    assert null_verdict(5.5, null)["percentile"] == 50.0
    high, low = null_verdict(11.0, null), null_verdict(-3.0, null)
    assert (high["percentile"], high["specific"], low["percentile"], low["specific"]) == (100.0, True, 0.0, True)
    # inside the range but below the interpolated q2.5: outside the central 95 %
    edge = null_verdict(1.1, null)
    assert edge["specific"] is True and edge["percentile"] == 10.0
    assert null_verdict(1.3, null)["specific"] is False
    with pytest.raises(ValueError, match="at least 2 values"):
        null_verdict(1.0, [2.0])
    with pytest.raises(ValueError, match="not finite"):
        null_verdict(float("nan"), null)


def test_pooled_verdict_is_a_two_sided_test_of_the_mean_percentile():
    def v(p, specific=False):
        return {"statistic": "gain", "percentile": p, "null_n": 10, "specific": specific}

    sd = 100 * math.sqrt(12 / 120)  # the sd of a uniform rank's percentile among 10 draws
    centred = pooled_verdict([v(40), v(60), v(50, True)])
    assert centred["m"] == 3 and centred["mean_percentile"] == 50 and centred["z"] == 0
    assert centred["specific"] is False and centred["share_specific"] == pytest.approx(1 / 3)
    high = pooled_verdict([v(100, True)] * 3)
    assert high["z"] == pytest.approx(50 / (sd / math.sqrt(3))) and high["specific"] is True
    assert pooled_verdict([v(100, True)])["specific"] is False  # one row cannot pass 1.96 σ: z = 1.58
    assert pooled_verdict([v(0, True)] * 2)["specific"] is True
    with pytest.raises(ValueError, match="at least one"):
        pooled_verdict([])


def test_row_verdicts_read_a_row_and_skip_old_rows():
    row = {"rotation_distance": 0.5, "jac_rotation_distance": 0.9, "null_jac_rotation_distance": [0.1, 0.2, 0.3],
           "gain": 2.0, "null_gain": [1.0]}
    (v,) = row_verdicts(row)  # W's gain has one null value only: no verdict
    assert v["map"] == "J" and v["statistic"] == "rotation_distance" and v["percentile"] == 100 and v["specific"]
    assert row_verdicts({"rotation_distance": 0.5, "gain": 3.0}) == []
    flat = verdict_fields(v, "null_jac_rotation_distance")
    assert set(flat) == {f"null_jac_rotation_distance_{k}" for k in ("mean", "sd", "q025", "q975", "percentile",
                                                                     "specific")}
    assert flat["null_jac_rotation_distance_mean"] == pytest.approx(0.2)


def test_matched_random_vectors_have_the_norm_and_are_seeded():
    V = matched_random_vectors(3.5, 40, 12, seed=1)
    assert V.shape == (12, 40) and torch.allclose(V.norm(dim=1), torch.full((12,), 3.5, dtype=torch.float64))
    assert torch.equal(V, matched_random_vectors(3.5, 40, 12, seed=1))
    assert not torch.equal(V, matched_random_vectors(3.5, 40, 12, seed=2))
    cos = torch.nn.functional.cosine_similarity(V[:, None], V[None], dim=-1)
    assert cos[~torch.eye(12, dtype=torch.bool)].abs().max() < 0.7  # spread out, not one direction
    with pytest.raises(ValueError, match="> 0"):
        matched_random_vectors(0.0, 4, 2, 0)


# ------------------------------------------------------------------------------- a random 6-layer model
@pytest.fixture(scope="module")
def deep(make_tiny_hf, make_tokenizer):
    """A random 6-layer tiny Llama, norm gains randomised too (N(1, 0.3), as ``conftest.arch_hf``)."""
    tok = make_tokenizer()
    hf = make_tiny_hf(n_layers=6, vocab=len(tok))
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 1:
                p.normal_(1.0, 0.3)
    return wrap(hf, tok, "tiny-llama-6")


TASK = tv.builtin_task("capitalize")
LAYERS = (1, 3, 5)
TREND = ("rotation_distance", "cos_theta_qtheta")


def random_theta_rows(model, seeds, scale: float = 1.0) -> dict[int, list[dict]]:
    """Per layer, :func:`linear_map.null_report` rows (with W's statistics) for random θ of the size of the
    query's residual stream, one per seed (its own null vectors, of norm ``scale · ‖θ‖``)."""
    ad = tv.adapt(model)
    batch = fit_prompts(model, TASK, TASK.examples[:3])
    out: dict[int, list[dict]] = {}
    for layer in LAYERS:
        norm = float(ad.residual(batch.tokens, layer)[torch.arange(3), batch.query_pos].norm(dim=1).mean())
        for seed in seeds:
            theta = torch.randn(64, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
            theta *= norm / theta.norm()
            cfg = linear_map.Config(tasks=(TASK.name,), map_random=10, map_random_fits=10 if scale == 1 else 0,
                                    map_vanilla=0, map_samples=128, seed=seed)
            W = fit_tv_map(model, batch, theta, layer, cfg.map_config()).W
            if scale != 1:  # a broken null: vectors of another norm
                J = jacobians(model, batch, torch.cat([theta[None], scale * matched_random_vectors(
                    float(theta.norm()), 64, 10, seed)]), layer)
                tab = polar_table(J[1:], scale * matched_random_vectors(float(theta.norm()), 64, 10, seed))
                mine = polar_table(J[:1], theta[None])
                row = {f"jac_{s}": mine[s][0] for s in TREND} | {f"null_jac_{s}": tab[s] for s in TREND}
            else:
                row = linear_map.null_report(model, cfg, TASK, batch, theta, layer, W)
            out.setdefault(layer, []).append(row)
    return out


def test_the_rotation_then_scaling_trend_of_a_random_theta_is_reproduced_by_the_null(deep):
    rows = random_theta_rows(deep, seeds=(0, 1, 2))
    for pre in ("", "jac_"):
        for seed in range(3):
            # the trend: the rotation shrinks and turns θ less with depth, for θ and for the null's mean alike
            dist = [rows[layer][seed][f"{pre}rotation_distance"] for layer in LAYERS]
            cos = [rows[layer][seed][f"{pre}cos_theta_qtheta"] for layer in LAYERS]
            null_dist = [rows[layer][seed][f"null_{pre}rotation_distance_mean"] for layer in LAYERS]
            null_cos = [rows[layer][seed][f"null_{pre}cos_theta_qtheta_mean"] for layer in LAYERS]
            assert dist == sorted(dist, reverse=True) and null_dist == sorted(null_dist, reverse=True), dist
            assert cos == sorted(cos) and null_cos == sorted(null_cos), cos
            assert dist[0] - dist[-1] > 0.4 and null_dist[0] - null_dist[-1] > 0.4
        for layer in LAYERS:
            verdicts = [v for r in rows[layer] for v in row_verdicts(r) if v["map"] == ("J" if pre else "W")]
            for stat in TREND:
                mine = [v for v in verdicts if v["statistic"] == stat]
                assert len(mine) == 3 and all(v["null_n"] == 10 for v in mine)
                # over the three θ (each with its own null) the verdict is "not specific"
                assert not pooled_verdict(mine)["specific"], (layer, pre, stat, mine)


def test_a_null_of_the_wrong_norm_would_call_a_random_theta_specific(deep):
    """The null must match ‖θ‖: the maps change with the size of the vector, so vectors of a quarter of θ's norm
    make the same random θ look specific at every layer (the test above can fail)."""
    rows = random_theta_rows(deep, seeds=(0, 1, 2), scale=0.25)
    for layer in LAYERS:
        verdicts = [v for r in rows[layer] for v in row_verdicts(r) if v["statistic"] == "rotation_distance"]
        assert len(verdicts) == 3 and sum(v["specific"] for v in verdicts) >= 2, verdicts
        assert pooled_verdict(verdicts)["specific"], verdicts


# ------------------------------------------------------------------------------- the README table
def test_the_null_table_renders_new_rows_and_a_note_for_old_ones():
    from tvmech.pipeline.readme_mechanism import linear_map_null as build

    meta = {"settings": {"model": "m", "map_random": 10, "map_random_fits": 0}}
    old = [{"task": t, "layer": l, "run_seed": s, "rotation_distance": 1.0, "cos_theta_qtheta": 0.5, "gain": 3.0}
           for t in ("a", "b") for l in (1, 2) for s in (0, 1)]
    assert "Not computed yet" in build({"linear_map": old}, {"linear_map": meta})
    null = [0.9 + 0.01 * k for k in range(10)]  # a layer-1 LTV far above its null, a layer-2 one inside it
    new = [{**r, **{f"jac_{k}": v for k, v in r.items() if k in ("rotation_distance", "cos_theta_qtheta", "gain")},
            "jac_rotation_distance": 1.5 if r["layer"] == 1 else 0.945,
            **{f"null_jac_{k}": null for k in ("rotation_distance", "cos_theta_qtheta", "gain")},
            "vanilla_jac_rotation_distance": 0.7} for r in old]
    text = build({"linear_map": new}, {"linear_map": meta})
    lines, stat = {}, ""
    for line in text.splitlines()[2:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.split("|")[1:4]]
            stat = cells[0] or stat
            lines[(stat, cells[1], cells[2])] = line
    top = lines[("‖Q₊−I‖/√d", "1", "J")]
    assert "1.50" in top and "**specific**" in top and "4/4" in top
    assert "| 0.70 ± 0.00 |" in top and "| 100 ± 0 |" in top
    inside = lines[("‖Q₊−I‖/√d", "2", "J")]
    assert "not specific" in inside and "0/4" in inside
    assert "| — | — | — | — |" in lines[("‖Q₊−I‖/√d", "1", "W")]  # no W null without random fits
