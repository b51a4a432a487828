"""Headroom (issue 24): the sweep and PEFT tables and figures lead with full-vocabulary scoring where a task was
scored two ways and keep both; the composition table shows each part's ICL headroom; old rows still build."""

import pytest

from tvmech.pipeline.readme_tables import composition, layer_sweep, peft
from tvmech.plots import behaviour_plots as plots
from tvmech.plots import peft_plots

META = {"device": "cpu", "date": "today", "settings": {"model": "m", "task": "sentiment"}}


def _sweep_rows(scored: bool):
    rows = []
    for task, own in (("sentiment", "label_set"), ("antonym", "first_token")):
        scorings = dict.fromkeys(("first_token", own)) if scored else [None]
        for s in scorings:
            high = 0.9 if s == "label_set" or (not scored and task == "sentiment") else 0.1
            base = {"task": task, "n": 10, **({"scoring": s} if s else {})}
            rows += [{**base, "method": "zero_shot", "layer": None, "accuracy": high},
                     {**base, "method": "icl_5shot", "layer": None, "accuracy": 0.5},
                     {**base, "method": "ltv", "layer": 15, "accuracy": 0.9 if high > 0.5 else 0.7}]
    return rows


def test_layer_sweep_table_and_figure_lead_with_full_vocabulary():
    text = layer_sweep({"layer_sweep": _sweep_rows(True)}, {"layer_sweep": META})
    lines = text.splitlines()
    assert lines[2] == "| LTV (full vocabulary) | 0.70 |" and lines[3] == "| LTV (own scoring) | 0.80 |"
    assert "| sentiment | first_token | 0.10 | 0.50 | 0.70 |" in text
    assert "| sentiment | label_set | 0.90 | 0.50 | 0.90 |" in text
    fig = plots.layer_sweep_figure(_sweep_rows(True))
    assert "full-vocabulary first-token scoring" in fig.layout.title.text
    zero = next(s for s in fig.layout.shapes)  # the zero-shot line: full vocabulary on both tasks
    assert zero.y0 == pytest.approx(0.1)
    old = layer_sweep({"layer_sweep": _sweep_rows(False)}, {"layer_sweep": META})
    assert "| LTV | 0.80 |" in old and "scoring" not in old.splitlines()[4]
    assert "first-token" not in plots.layer_sweep_figure(_sweep_rows(False)).layout.title.text
    by_task = plots.layer_sweep_by_task_figure(_sweep_rows(True))
    assert len(by_task.data) == 6  # 3 methods x 2 tasks, one scoring each


def _peft_rows(new: bool):
    rows = []
    for m, ft, ls in (("ltv", 0.96, 0.97), ("prefix", 0.9, 0.98)):
        r = {"method": m, "task": "sentiment", "layer": 15, "accuracy": ft if new else ls, "trainable_params": 576,
             "zero_shot_accuracy": 0.44 if new else 0.96, "step_latency_s": 0.07, "peak_memory_bytes": 1.5e8}
        if new:
            r.update(scoring="first_token", acc_by_scoring={"first_token": ft, "label_set": ls},
                     zero_shot_by_scoring={"first_token": 0.44, "label_set": 0.96})
        rows.append(r)
    return rows


def test_peft_table_shows_both_scorings_and_the_zero_shot_row():
    text = peft({"peft": _peft_rows(True)}, {"peft": META})
    assert text.splitlines()[0].startswith("| method | accuracy, full vocabulary | accuracy, label set |")
    assert "| zero-shot (no training) | 0.44 | 0.96 | — | — | — |" in text
    assert "| LTV | 0.96 | 0.97 | 576 |" in text
    old = peft({"peft": _peft_rows(False)}, {"peft": META})
    assert old.splitlines()[0].startswith("| method | accuracy | trainable params |")
    assert "| zero-shot (no training) | 0.96 | — |" in old
    fig = peft_plots.peft_figure(_peft_rows(True))
    assert "(full vocabulary)" in fig.layout.annotations[0].text
    assert "accuracy, label set: 0.970 (zero-shot 0.960)" in fig.data[0].hovertext[0]


def test_composition_table_shows_the_parts_and_the_headroom_verdict():
    rows = [{"task": "c", "role": "composed", "method": m, "accuracy": a, "n": 41, "k": 0, "scoring": s}
            for m, a in (("zero_shot", 0.0), ("p LTV", 0.1), ("q LTV", 0.2), ("sum of both", 0.3), ("icl_5shot", 0.8))
            for s in ("exact_match", "first_token")]
    rows += [{"task": t, "role": "part", "method": m, "accuracy": a, "n": 16, "k": 0, "scoring": "exact_match"}
             for t in ("p", "q") for m, a in (("zero_shot", 0.0), ("icl_5shot", 0.9), (f"{t} LTV", 0.7))]
    text = composition({"composition": rows}, {"composition": META})
    assert "| method (on c) | accuracy, exact match | accuracy, full vocabulary |" in text
    assert "| sum of both | 0.30 | 0.30 |" in text and "| p (exact match) | 0.00 | 0.90 | 0.70 |" in text
    assert "zero-shot 0.00, k-shot ICL 0.80, gain +0.80: ICL does the composed task" in text
    old = composition({"composition": [r for r in rows if r["role"] == "composed" and r["scoring"] == "exact_match"
                                       and r["method"] != "icl_5shot"]}, {"composition": META})
    assert "part task" not in old and "ICL headroom" not in old
