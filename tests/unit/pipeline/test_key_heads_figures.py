"""The key-head and sink figures draw rows of issue 11 (score, layer-matched sets, precision@k), of issue 24 (each
score against the intervention it estimates) and older rows; the Taylor verdict and README table label every
comparison's intervention."""

import pytest

from tvmech.analysis.head_verdicts import comparison, taylor_agreement
from tvmech.pipeline.readme_mechanism import taylor_table
from tvmech.plots import mechanism_plots as mp


def _ablation_rows(with_matched: bool, score: str | None, matched_tasks: str = "ab"):
    rows = [{"task": t, "set": "none", "seed": None, "kind": "none", "size": 0, "accuracy": 0.9, "n": 4} for t in "ab"]
    rows += [{"task": t, "set": "key", "seed": None, "kind": "zero", "size": 3, "accuracy": 0.1, "n": 4} for t in "ab"]
    names = ["random"] + (["random_layer_matched"] if with_matched else [])
    rows += [{"task": t, "set": n, "seed": s, "kind": "zero", "size": 3, "n": 4,
              "accuracy": 0.5 + 0.1 * s - 0.3 * (n != "random") + 0.2 * (t == "b")}
             for n in names for t in "ab" for s in range(3) if n == "random" or t in matched_tasks]
    return [{**r, "score": score} if score else r for r in rows]


def test_key_ablation_figure_draws_layer_matched_sets_and_old_rows():
    fig = mp.key_ablation_figure(_ablation_rows(True, "tv_reliance"))
    names = [tr.name for tr in fig.data]
    assert any("layer-matched" in n for n in names) and any("all layers" in n for n in names)
    assert all("zero ablation (z = 0)" in n for n in names[1:])
    matched = next(tr for tr in fig.data if "layer-matched" in tr.name)
    assert list(matched.x) == ["a", "b", "mean"]
    assert matched.y[-1] == pytest.approx(0.4) and matched.error_y.array[-1] == pytest.approx(0.1)
    assert "TV-reliance" in fig.layout.title.text
    old = mp.key_ablation_figure(_ablation_rows(False, None))
    assert len(old.data) == 3 and "|a·∂p/∂a|" in old.layout.title.text


def test_key_ablation_figure_means_cover_the_same_tasks_for_every_bar():
    """Layer-matched sets for task a only: no layer-matched bar in the all-tasks mean, and a second mean group
    over task a where every bar averages task a alone."""
    fig = mp.key_ablation_figure(_ablation_rows(True, "tv_reliance", matched_tasks="a"))
    assert list(fig.data[0].x) == ["a", "b", "mean", "mean over the 1 of 2 tasks with every set"]
    def by(prefix):
        return next(tr for tr in fig.data if tr.name.startswith(prefix))

    matched, anywhere = by("layer-matched random heads"), by("random heads (all layers)")
    assert matched.y[1] is None and matched.y[2] is None and matched.y[3] == pytest.approx(0.3)
    assert anywhere.y[2] == pytest.approx(0.7) and anywhere.y[3] == pytest.approx(0.6)  # all tasks vs task a
    assert by("LTV, no ablation").y[3] == pytest.approx(0.9)


def _taylor_rows(new: bool):
    """Two tasks, 20 heads, k = 2; new rows: three comparisons, revert agreeing fully, zero ablation reversed."""
    rows = []
    cmps = [("tv_reliance", "revert", 1.0, 1.0), ("paper", "zero", 0.5, 0.5), ("tv_reliance", "zero", -0.2, 0.0)]
    for t in "ab":
        for seed in (0, 1):
            for score, kind, rho, prec in (cmps if new else cmps[2:]):
                rows += [{"task": t, "run_seed": seed, "layer": 1, "head": h, "rank": h, "taylor": 0.1 / (h + 1),
                          "exact": 0.1 / (h + 1), "spearman": rho + 0.01 * seed, "precision_at_k": prec,
                          "k_precision": 2, **({"score": score, "intervention": kind} if new else
                                               {"score": score})} for h in range(20)]
    return rows


def test_taylor_agreement_names_each_comparison_with_its_null():
    new = taylor_agreement(_taylor_rows(True))
    assert set(new["comparisons"]) == {"tv_reliance/revert", "paper/zero", "tv_reliance/zero"}
    rev = new["comparisons"]["tv_reliance/revert"]
    assert rev["estimates"] and rev["tasks"] == 2 and rev["runs"] == 2 and rev["heads"] == 20 and rev["k"] == 2
    assert rev["spearman"] == pytest.approx(1.005) and rev["spearman_sd"] == pytest.approx(0.00707, abs=1e-4)
    assert rev["precision_null"] == pytest.approx(0.1) and rev["above_null"]
    off = new["comparisons"]["tv_reliance/zero"]
    assert not off["estimates"] and off["above_null"] is False
    assert new["comparisons"]["paper/zero"]["estimates"] and new["estimate_beats_other"] is True
    old = taylor_agreement(_taylor_rows(False))
    assert list(old["comparisons"]) == ["tv_reliance/zero"] and old["estimate_beats_other"] is None
    assert comparison({}) == ("paper", "zero")


def test_taylor_table_and_figure_label_every_intervention():
    meta = {"device": "cpu", "date": "today"}
    new = taylor_table(_taylor_rows(True), meta)
    header = new.splitlines()[0]
    assert "TV-reliance vs revert: ρ" in header and "paper score vs zero ablation: ρ" in header
    assert "TV-reliance vs zero ablation: ρ" in header and header.count("P@2") == 3
    assert "| null (random ranking) | 0 | 0.10 | 0 | 0.10 | 0 | 0.10 |" in new
    assert "*revert*" in new and "*zero ablation*" in new and "does not estimate" in new
    old = taylor_table(_taylor_rows(False), meta)
    assert "TV-reliance vs zero ablation: ρ" in old.splitlines()[0] and "*revert*" not in old
    fig = mp.taylor_exact_figure(_taylor_rows(True))
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == 3 and "its first-order estimate" in titles[0] and "not what it estimates" in titles[2]
    assert "revert to the clean z" in titles[0] and "null 0.10" in titles[0]


def test_taylor_figure_shows_precision_and_sinks_figure_both_sets():
    taylor = [{"task": "a", "score": "tv_reliance", "layer": 1, "head": h, "rank": h, "taylor": 0.1 / (h + 1),
               "exact": 0.1 / (h + 1), "spearman": 1.0, "precision_at_k": 0.5, "k_precision": 2} for h in range(3)]
    fig = mp.taylor_exact_figure(taylor)
    assert "P@k = 0.50" in fig.layout.annotations[0].text and "P@2=0.50" in fig.data[0].name
    sinks = [{"task": "a", "score": "paper", "set": s, "seed": i, "metric": "first", "value": v, "std": 0.0}
             for s, i, v in (("key", None, 0.2), ("random", 0, 0.6), ("random", 1, 0.8),
                             ("random_layer_matched", 0, 0.3), ("random_layer_matched", 1, 0.5))]
    fig = mp.sinks_figure(sinks, threshold=0.3)
    assert [tr.y[0] for tr in fig.data] == [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.7)]


def test_sinks_figure_averages_every_set_over_the_same_tasks():
    """Layer-matched sets for task a only: every bar (key heads included) is the mean over task a, and the
    title says so."""
    sinks = [{"task": t, "score": "paper", "set": s, "seed": i, "metric": "first", "value": v + (t == "b"),
              "std": 0.0} for t in "ab" for s, i, v in (("key", None, 0.2), ("random", 0, 0.6), ("random", 1, 0.8),
                                                         ("random_layer_matched", 0, 0.3),
                                                         ("random_layer_matched", 1, 0.5))
             if t == "a" or s != "random_layer_matched"]
    fig = mp.sinks_figure(sinks)
    assert [tr.y[0] for tr in fig.data] == [pytest.approx(0.2), pytest.approx(0.4), pytest.approx(0.7)]
    assert "mean over the 1 of 2 tasks every set has" in fig.layout.title.text
    both = mp.sinks_figure([r for r in sinks if r["set"] != "random_layer_matched"])
    assert [tr.y[0] for tr in both.data] == [pytest.approx(0.7), pytest.approx(1.2)]  # (0.2 + 1.2) / 2, ...
    assert "mean over 2 tasks" in both.layout.title.text


def test_committed_key_head_rows_draw():
    """The committed figures/key_heads_*.json (rows saved before issue 24 until they are recomputed) draw."""
    import json
    from pathlib import Path

    figures = Path(__file__).resolve().parents[3] / "figures"
    paths = [figures / f"key_heads_{n}.json" for n in ("taylor", "ablation")]
    if not all(p.is_file() for p in paths):
        pytest.skip("figures not computed")
    taylor, ablation = (json.loads(p.read_text())["rows"] for p in paths)
    assert mp.taylor_exact_figure(taylor).layout.annotations
    fig = mp.key_ablation_figure(ablation)
    names = {tr.name.split(" (")[0] for tr in fig.data}
    assert any(n.startswith("layer-matched") for n in names)
    assert any(x.startswith("mean over the") for x in fig.data[0].x)  # layer-matched sets exist for some tasks only
    assert taylor_agreement(taylor)["comparisons"]["tv_reliance/zero"]["tasks"] == 10
