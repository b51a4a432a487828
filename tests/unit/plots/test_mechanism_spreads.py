"""Mechanism figures over several run seeds: error bars from the runs, one colour per variant, α sweep."""

import pytest

from tvmech.plots import mechanism_plots as mp


def _ov_rows():
    rows = []
    for s in (0, 1, 2):
        for t in ("a", "b"):
            for m, v, alpha in (("zero_shot", "zero_shot", None), ("ltv", "ltv", None), ("ov_direct", "ov_direct", 1.0),
                                ("ov_direct@4", "ov_direct", 4.0), *((f"v{i}", f"v{i}", 1.0) for i in range(12))):
                rows.append({"task": t, "layer": 3, "method": m, "variant": v, "alpha": alpha, "run_seed": s,
                             "accuracy": 0.1 * s + (0.5 if m == "ov_direct@4" else 0.0), "scoring": "first_token"})
    return rows


def test_reconstruction_figure_has_error_bars_over_runs_and_no_repeated_variant_colour():
    fig = mp.reconstruction_figure(_ov_rows())
    assert "3 run seeds" in fig.layout.title.text
    bars = {t.name: t for t in fig.data}
    ov = bars[mp._label("ov_direct")]
    assert list(ov.y)[-1] == pytest.approx(0.1) and list(ov.error_y.array)[-1] == pytest.approx(0.1)
    colours = {t.marker.color for t in fig.data if "α" not in t.name}
    assert len(colours) == len([t for t in fig.data if "α" not in t.name])  # 16 variants, 16 colours
    assert bars[mp._label("ov_direct@4")].marker.color == ov.marker.color  # a scaled copy keeps its colour


def test_alpha_sweep_figure_puts_each_variant_on_the_alpha_axis():
    fig = mp.alpha_sweep_figure(_ov_rows())
    ov = next(t for t in fig.data if t.name == mp._label("ov_direct"))
    assert list(ov.x) == [1.0, 4.0] and list(ov.y) == [pytest.approx(0.1), pytest.approx(0.6)]


def test_by_scoring_keeps_each_tasks_own_scoring_or_the_named_one():
    rows = [{"task": "w", "scoring": "first_token", "v": 1}, {"task": "c", "scoring": "label_set", "v": 2},
            {"task": "c", "scoring": "first_token", "v": 3}]
    assert [r["v"] for r in mp.by_scoring(rows)] == [1, 2]
    assert [r["v"] for r in mp.by_scoring(rows, "first_token")] == [1, 3]


def test_key_ablation_error_bars_are_over_runs_when_there_are_several():
    rows = []
    for s in (0, 1):
        rows += [{"task": "a", "set": "none", "seed": None, "kind": "none", "size": 0, "accuracy": 0.9, "n": 4,
                  "run_seed": s},
                 {"task": "a", "set": "key", "seed": None, "kind": "zero", "size": 3, "accuracy": 0.2 + 0.2 * s,
                  "n": 4, "run_seed": s}]
        rows += [{"task": "a", "set": "random_layer_matched", "seed": i, "kind": "zero", "size": 3, "n": 4,
                  "accuracy": 0.8 + 0.1 * i, "run_seed": s} for i in range(2)]
    fig = mp.key_ablation_figure(rows)
    key = next(t for t in fig.data if t.name.startswith("key heads"))
    assert list(key.y) == [pytest.approx(0.3)] * 2 and list(key.error_y.array)[0] == pytest.approx(0.14142136, 1e-6)
    rnd = next(t for t in fig.data if t.name.startswith("layer-matched"))
    assert "2 run seeds" in rnd.name and list(rnd.error_y.array)[0] == pytest.approx(0.0, abs=1e-12)
