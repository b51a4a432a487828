"""Key-head and attention-sink experiments on the tiny model: the score is recorded, exact ablation covers the
heads at or above the injection layer, layer-matched random sets are used (issue 11)."""

import pytest
import torch

from tvmech.analysis.head_attribution import layer_histogram
from tvmech.core.adapter import adapt
from tvmech.experiments import key_heads, sinks


def _config(module, **kw):
    return module.Config(tasks=("capitalize",), ltv_steps=1, n_test=4, n_score=4, frac=0.17, n_random=2, **kw)


@pytest.mark.parametrize("score", ["tv_reliance", "paper"])
def test_key_heads_run_records_score_precision_and_layer_matched_sets(tiny, score):
    res = key_heads.run(tiny, _config(key_heads, score=score), progress=False)
    layer = res.config.layer
    assert layer == 1
    scores = res.scores
    assert len(scores) == 12 and all(r["score"] == score for r in scores + res.ablation)
    exact = [r for r in scores if r["exact"] is not None]
    assert {(r["layer"], r["head"]) for r in exact} == {(l, h) for l in (1, 2) for h in range(4)}
    assert all(r["eligible"] == (r["layer"] >= layer) for r in scores)
    assert all(0 <= r["precision_at_k"] <= 1 and r["k_precision"] == 1 for r in res.taylor)
    assert len(res.taylor) == 8 * len(key_heads.COMPARISONS) and set(res.taylor[0]) == set(key_heads.TAYLOR_KEYS)
    # every comparison over the same heads; each score against its own intervention and TV-reliance vs zero too
    by = {(r["score"], r["intervention"]): r for r in res.taylor}
    assert set(by) == set(key_heads.COMPARISONS)
    assert [r["estimates"] for r in by.values()] == [True, True, False]
    for r in res.taylor:  # the exact effect of a row is the one its intervention names in the scores rows
        head = next(s for s in scores if (s["layer"], s["head"]) == (r["layer"], r["head"]))
        assert r["exact"] == head["exact" if r["intervention"] == "zero" else "exact_revert"]
        if r["score"] == score:
            assert r["taylor"] == head["taylor"] and r["rank"] == head["rank"]
    assert all(r["exact_revert"] > 0 for r in exact)
    if score == "tv_reliance":
        assert all(r["taylor"] == 0 for r in scores if r["layer"] < layer)
        assert all(r["layer"] >= layer for r in scores if r["key"])
    key = [(r["layer"], r["head"]) for r in scores if r["key"]]
    assert len(key) == 2
    sets = {r["set"] for r in res.ablation}
    assert sets == {"none", "key", "random", "random_layer_matched"}
    assert sorted(r["seed"] for r in res.ablation if r["set"] == "random_layer_matched" and r["kind"] == "zero") \
        == [0, 1]


def test_key_heads_exact_kinds_choose_the_comparisons(tiny):
    res = key_heads.run(tiny, _config(key_heads, exact=("revert",)), progress=False)
    assert {(r["score"], r["intervention"]) for r in res.taylor} == {("tv_reliance", "revert")}
    assert all(r["exact"] is None for r in res.scores) and any(r["exact_revert"] for r in res.scores)
    with pytest.raises(ValueError, match=r"mechanism exact \['half'\] is not valid"):
        key_heads.Config(exact=("half",))
    cfg = sinks.Config().resolve(30)
    assert "exact" not in cfg.settings() and "exact" in cfg.key_heads_config().settings()


def test_comparison_sets_are_layer_matched_and_disjoint():
    key = [(0, 1), (2, 2), (2, 3)]
    sets = key_heads.comparison_sets(key, 3, 4, 5, 7)
    matched = [s for n, _, s in sets if n == "random_layer_matched"]
    anywhere = [s for n, _, s in sets if n == "random"]
    assert len(matched) == len(anywhere) == 5 and [s for n, s, _ in sets][:5] == [7, 8, 9, 10, 11]
    assert all(torch.equal(layer_histogram(s, 3), layer_histogram(key, 3)) for s in matched)
    assert all(not set(s) & set(key) for s in matched + anywhere)
    # a layer without enough other heads: the layer-matched sets are left out, the others kept
    crowded = key_heads.comparison_sets([(0, 0), (0, 1), (0, 2)], 3, 4, 2, 0)
    assert {n for n, _, _ in crowded} == {"random"}
    with pytest.raises(ValueError, match="not valid"):
        key_heads.comparison_sets(key, 3, 4, 2, 0, ("nearby",))
    with pytest.raises(ValueError, match="mechanism score 'x'"):
        key_heads.Config(score="x")
    with pytest.raises(ValueError, match="mechanism random_sets"):
        key_heads.Config(random_sets=())


def test_sinks_run_compares_key_heads_with_both_kinds_of_random_sets(tiny):
    res = sinks.run(tiny, _config(sinks))
    rows = res.rows()
    assert {r["set"] for r in rows} == {"key", "random", "random_mean", "random_layer_matched",
                                        "random_layer_matched_mean"}
    assert all(r["score"] == "tv_reliance" for r in rows)
    for name in ("random", "random_layer_matched"):
        per = [r["value"] for r in rows if r["set"] == name and r["metric"] == "first"]
        mean = next(r["value"] for r in rows if r["set"] == f"{name}_mean" and r["metric"] == "first")
        assert len(per) == 2 and mean == pytest.approx(sum(per) / 2)


def test_sinks_per_head_rows_average_to_the_key_sets_statistics(tiny):
    cfg = _config(sinks)
    key = [(1, 0), (1, 1)]
    res = sinks.run(tiny, cfg, key_sets={t: key for t in cfg.tasks})
    heads = res.tables()["attention_sinks_heads"]
    assert len(heads) == len(cfg.tasks) * adapt(tiny).n_layers * adapt(tiny).n_heads
    for metric in ("first", "self", "rest", "sink_rate"):
        mine = [r[metric] for r in heads if (r["layer"], r["head"]) in key and r["task"] == cfg.tasks[0]]
        saved = next(r["value"] for r in res.rows() if r["set"] == "key" and r["metric"] == metric
                     and r["task"] == cfg.tasks[0])
        assert saved == pytest.approx(sum(mine) / len(mine), abs=1e-6)  # (rows keep 6 decimals)
