"""The slider figures show one layer at a time; the head heatmap's hover carries the exact ablation effect."""

import pytest

from tvmech.plots import interactive


def test_lens_slider_shows_one_layer_of_traces_per_step():
    rows = [{"task": t, "condition": c, "layer": l, "accuracy": 0.5, "p_correct": 0.1 * l, "top_tokens": "'<a>' 1.0"}
            for t in "ab" for c in ("zero_shot", "ltv") for l in (0, 3, 6)]
    fig = interactive.lens_layer_figure(rows)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0", "3", "6"] and len(fig.data) == 6
    assert steps[1].args[0]["visible"] == [False, False, True, True, False, False]
    assert [t.visible for t in fig.data] == [False] * 4 + [True] * 2  # opens at the last layer
    assert fig.layout.sliders[0].active == 2
    assert fig.data[4].y == (pytest.approx(0.6), pytest.approx(0.6)) and "&lt;a>" in fig.data[0].hovertext[0]


def test_rotation_slider_averages_run_seeds_and_draws_the_null_range():
    rows = [{"task": "a", "layer": l, "run_seed": s, **{f"align_{v}": 0.1 * s for v in ("theta", "qtheta", "wtheta")},
             **{f"tokens_{v}": "x" for v in ("theta", "qtheta", "wtheta")}, "rot_null_q05": -0.1, "rot_null_q95": 0.2}
            for l in (3, 9) for s in (0, 1)]
    fig = interactive.rotation_layer_figure(rows)
    assert len(fig.data) == 6 and fig.data[1].y == (pytest.approx(0.05),)
    assert fig.data[1].error_y.array == (pytest.approx(0.15),) and fig.data[1].error_y.arrayminus == (
        pytest.approx(0.15),)


def test_head_heatmap_hover_has_score_exact_effect_and_key_share():
    rows = [{"task": t, "layer": l, "head": h, "taylor": 1.0 + l, "exact": 0.5 if h == 0 else None,
             "key": (l, h) == (1, 0) and t == "a"} for t in "ab" for l in range(2) for h in range(2)]
    fig = interactive.head_heatmap_figure(rows)
    z, text = fig.data[0].z, fig.data[0].text
    assert z[0][1] == 2.0 and "exact ablation effect 5.00e-01" in text[0][1] and "key head in 50%" in text[0][1]
    assert "not checked" in text[1][0]


def test_head_heatmap_hover_has_each_heads_sink_statistics_averaged_over_tasks_and_seeds():
    rows = [{"task": "a", "layer": l, "head": h, "taylor": 1.0, "exact": None, "key": False}
            for l in range(2) for h in range(2)]
    sinks = [{"task": t, "run_seed": s, "layer": l, "head": h, "first": 0.2 * s + (0.5 if t == "b" else 0.0),
              "self": 0.1, "injected": 0.1, "rest": 0.3, "sink_rate": 1.0 if (l, h) == (1, 1) else 0.0}
             for t in "ab" for s in (0, 1) for l in range(2) for h in range(2)]
    text = interactive.head_heatmap_figure(rows, sinks=sinks).data[0].text
    assert "attention to the first token 0.350" in text[0][1] and "sink rate (share of prompts) 0.000" in text[0][1]
    assert "sink rate (share of prompts) 1.000" in text[1][1] and "attention elsewhere 0.300" in text[1][1]
    assert "first token" not in interactive.head_heatmap_figure(rows).data[0].text[0][0]
