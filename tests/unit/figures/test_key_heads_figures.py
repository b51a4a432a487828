"""The key-head and sink figures draw rows of issue 11 (score, layer-matched sets, precision@k) and older rows."""

import pytest

from tvmech.figures import mechanism_plots as mp


def _ablation_rows(with_matched: bool, score: str | None):
    rows = [{"task": t, "set": "none", "seed": None, "kind": "none", "size": 0, "accuracy": 0.9, "n": 4} for t in "ab"]
    rows += [{"task": t, "set": "key", "seed": None, "kind": "zero", "size": 3, "accuracy": 0.1, "n": 4} for t in "ab"]
    names = ["random"] + (["random_layer_matched"] if with_matched else [])
    rows += [{"task": t, "set": n, "seed": s, "kind": "zero", "size": 3, "n": 4,
              "accuracy": 0.5 + 0.1 * s - 0.3 * (n != "random")} for n in names for t in "ab" for s in range(3)]
    return [{**r, "score": score} if score else r for r in rows]


def test_key_ablation_figure_draws_layer_matched_sets_and_old_rows():
    fig = mp.key_ablation_figure(_ablation_rows(True, "tv_reliance"))
    names = [tr.name for tr in fig.data]
    assert any("layer-matched" in n for n in names) and any("all layers" in n for n in names)
    matched = next(tr for tr in fig.data if "layer-matched" in tr.name)
    assert matched.y[-1] == pytest.approx(0.3) and matched.error_y.array[-1] == pytest.approx(0.1)
    assert "TV-reliance" in fig.layout.title.text
    old = mp.key_ablation_figure(_ablation_rows(False, None))
    assert len(old.data) == 3 and "|a·∂p/∂a|" in old.layout.title.text


def test_taylor_figure_shows_precision_and_sinks_figure_both_sets():
    taylor = [{"task": "a", "score": "tv_reliance", "layer": 1, "head": h, "rank": h, "taylor": 0.1 / (h + 1),
               "exact": 0.1 / (h + 1), "spearman": 1.0, "precision_at_k": 0.5, "k_precision": 2} for h in range(3)]
    fig = mp.taylor_exact_figure(taylor)
    assert "precision@10% = 0.50" in fig.layout.title.text and "P@2=0.50" in fig.data[0].name
    sinks = [{"task": "a", "score": "paper", "set": s, "seed": i, "metric": "first", "value": v, "std": 0.0}
             for s, i, v in (("key", None, 0.2), ("random", 0, 0.6), ("random", 1, 0.8),
                             ("random_layer_matched", 0, 0.3), ("random_layer_matched", 1, 0.5))]
    fig = mp.sinks_figure(sinks, threshold=0.3)
    assert [tr.y[0] for tr in fig.data] == [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.7)]
