"""Multi-seed runs of the figure script: one run per seed in <out>/runs/seed<s>, gathered with run_seed, reused."""

import json

import pytest

from tvmech.pipeline import cli
from tvmech.plots.spread import error_bars, over_runs


def _fake_icl(calls):
    from tvmech.experiments import icl

    def fake_run(model, config, **kw):
        calls.append((config.seed, config.tasks))
        acc = 0.25 * (config.seed + 1)
        return icl.Result(config, [{"task": config.tasks[0], "k": k, "accuracy": acc, "n": 1, "scoring": "x"}
                                   for k in (0, 5)])
    return icl, fake_run


def test_seeds_run_once_per_seed_gather_rows_and_reuse_each_run(tmp_path, monkeypatch):
    calls = []
    icl, fake_run = _fake_icl(calls)
    monkeypatch.setattr(icl, "run", fake_run)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
    argv = ["--out", str(tmp_path), "--only", "icl", "--tasks", "antonym", "nli", "--no-png", "--icl-ks", "0", "5"]
    assert cli.main(argv + ["--seeds", "0", "1"]) == 0
    assert sorted(calls) == [(0, ("antonym",)), (0, ("nli",)), (1, ("antonym",)), (1, ("nli",))]
    data = json.loads((tmp_path / "icl_accuracy.json").read_text())
    assert data["meta"]["settings"]["seeds"] == [0, 1] and "seed" not in data["meta"]["settings"]
    assert [r["seed"] for r in data["meta"]["runs"]] == [0, 1]
    assert sorted({(r["run_seed"], r["accuracy"]) for r in data["rows"]}) == [(0, 0.25), (1, 0.5)]
    for s in (0, 1):  # each run is kept with its own single-seed settings
        saved = json.loads((tmp_path / "runs" / f"seed{s}" / "icl_accuracy.json").read_text())
        assert saved["meta"]["settings"]["seed"] == s and "run_seed" not in saved["rows"][0]
    # a third seed computes only that seed; the same seeds again compute nothing
    calls.clear()
    assert cli.main(argv + ["--seeds", "0", "1", "2"]) == 0
    assert sorted(calls) == [(2, ("antonym",)), (2, ("nli",))]
    calls.clear()
    assert cli.main(argv + ["--seeds", "0", "1", "2"]) == 0 and calls == []
    # the figure draws the mean over run seeds with the sd as error bars
    from tvmech.plots.behaviour_plots import icl_accuracy_figure

    rows = json.loads((tmp_path / "icl_accuracy.json").read_text())["rows"]
    fig = icl_accuracy_figure(rows)
    assert "mean ± sd over 3 run seeds" in fig.layout.title.text
    mean = next(t for t in fig.data if t.name == "mean")
    assert list(mean.y) == [pytest.approx(0.5)] * 2 and list(mean.error_y.array) == [pytest.approx(0.25)] * 2


def test_a_single_seed_run_of_the_top_level_is_reused_as_that_seed(tmp_path, monkeypatch):
    calls = []
    icl, fake_run = _fake_icl(calls)
    monkeypatch.setattr(icl, "run", fake_run)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
    argv = ["--out", str(tmp_path), "--only", "icl", "--tasks", "antonym", "--no-png", "--icl-ks", "0", "5"]
    assert cli.main(argv) == 0 and calls == [(0, ("antonym",))]
    assert cli.main(argv + ["--seeds", "0", "1"]) == 0
    assert calls == [(0, ("antonym",)), (1, ("antonym",))]  # seed 0 came from the single-seed tables


def test_seed_and_seeds_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--seed", "1", "--seeds", "0", "1"])
    assert "give one of them" in capsys.readouterr().err


def test_over_runs_averages_within_a_run_then_takes_the_sd_over_runs():
    rows = [{"task": t, "run_seed": s, "acc": a} for s, vals in ((0, (0.2, 0.4)), (1, (0.6, 0.8)))
            for t, a in zip("ab", vals)]
    got = over_runs(rows, lambda r: 0, "acc")[0]
    assert got.n == 2 and got.mean == pytest.approx(0.5) and got.sd == pytest.approx(0.28284271, rel=1e-6)
    per_task = over_runs(rows, lambda r: r["task"], "acc")
    assert per_task["a"].mean == pytest.approx(0.4) and per_task["b"].sd == pytest.approx(0.28284271, rel=1e-6)
    assert error_bars([per_task["a"]])["array"] == [pytest.approx(0.28284271, rel=1e-6)]
    assert error_bars([over_runs([{"x": 1.0}], lambda r: 0, "x")[0]]) is None  # one run: no bars


def test_runs_of_disjoint_task_subsets_in_one_directory_are_gathered_without_recomputing(tmp_path, monkeypatch):
    """Parallel processes each computing some tasks into one --out; a run over all tasks then computes nothing."""
    calls = []
    icl, fake_run = _fake_icl(calls)
    monkeypatch.setattr(icl, "run", fake_run)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
    base = ["--out", str(tmp_path), "--only", "icl", "--no-png", "--icl-ks", "0", "5"]
    assert cli.main(base + ["--tasks", "antonym"]) == 0
    assert cli.main(base + ["--tasks", "nli"]) == 0
    cache = tmp_path / ".tasks" / "icl_accuracy" / "nli.json"
    cache.write_text(json.dumps({**json.loads(cache.read_text()), "device": "gpu-x", "date": "2099-01-01"}))
    assert cli.main(base + ["--tasks", "antonym", "nli"]) == 0
    assert calls == [(0, ("antonym",)), (0, ("nli",))]
    meta = json.loads((tmp_path / "icl_accuracy.json").read_text())["meta"]
    assert meta["device"] == "cpu; gpu-x" and meta["date"] == "2099-01-01"  # the tasks' own provenance
    rows = json.loads((tmp_path / "icl_accuracy.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["antonym", "antonym", "nli", "nli"]
    assert cli.main(base + ["--tasks", "antonym", "nli", "--icl-ks", "0", "1"]) == 0  # other settings: recomputed
    assert calls[2:] == [(0, ("antonym",)), (0, ("nli",))]


def test_a_run_naming_no_seed_redraws_saved_multi_seed_numbers_and_a_named_seed_does_not(tmp_path, monkeypatch):
    calls = []
    icl, fake_run = _fake_icl(calls)
    monkeypatch.setattr(icl, "run", fake_run)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
    argv = ["--out", str(tmp_path), "--only", "icl", "--tasks", "antonym", "--no-png", "--icl-ks", "0", "5"]
    assert cli.main(argv + ["--seeds", "0", "1"]) == 0 and len(calls) == 2
    assert cli.main(argv) == 0 and len(calls) == 2  # redrawn with the saved seeds
    assert json.loads((tmp_path / "icl_accuracy.json").read_text())["meta"]["settings"]["seeds"] == [0, 1]
    assert cli.main(argv + ["--icl-seed", "1"]) == 0  # a named seed: that single run, computed into <out>
    assert calls[2:] == [(1, ("antonym",))]
    assert json.loads((tmp_path / "icl_accuracy.json").read_text())["meta"]["settings"]["seed"] == 1
