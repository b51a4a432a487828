import json
from dataclasses import replace

import plotly.graph_objects as go
import pytest

from tvmech.pipeline import cli
from tvmech.pipeline.store import ResultStore
from tvmech.plots import behaviour_plots as plots

PAPER = ["--preset", "paper"]  # the committed settings (the default preset is quick)

ROWS = [{"task": t, "k": k, "accuracy": a, "n": 10, "scoring": "first_token"}
        for t, base in (("a", 0.1), ("b", 0.3)) for k, a in zip((0, 1, 5), (base, base + 0.2, base + 0.4))]


def test_icl_figure_has_one_line_per_task_plus_mean():
    fig = plots.icl_accuracy_figure(ROWS, "m")
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["a", "b", "mean"]
    assert list(fig.data[-1].y) == pytest.approx([0.2, 0.4, 0.6])


def test_save_figure_writes_html_data_and_table(tmp_path):
    paths = ResultStore(tmp_path).save_figure(plots.icl_accuracy_figure(ROWS), "icl", ROWS, {"x": 1}, png=False)
    assert paths["html"].read_text().count("plotly") > 0
    assert json.loads(paths["json"].read_text())["rows"] == ROWS
    assert paths["csv"].read_text().splitlines()[0] == "task,k,accuracy,n,scoring"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_figures_script_redraws_from_saved_numbers_without_a_model(tmp_path, monkeypatch):
    settings = {"tasks": ["antonym"], "ks": [0, 1, 2, 5, 10], "n_test": 3, "seed": 0,
                "model": "SmolLM2-135M-Instruct"}
    saved = {"meta": {"settings": settings, "device": "gpu-x"}, "rows": ROWS}
    (tmp_path / "icl_accuracy.json").write_text(json.dumps(saved))

    def no_model(*a, **k):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr(cli, "load_model", no_model)
    argv = [*PAPER, "--out", str(tmp_path), "--only", "icl", "--tasks", "antonym", "--n-test", "3", "--no-png"]
    assert cli.main(argv) == 0
    assert (tmp_path / "icl_accuracy.html").is_file()
    assert json.loads((tmp_path / "icl_accuracy.json").read_text())["meta"]["device"] == "gpu-x"  # provenance kept
    with pytest.raises(AssertionError, match="should not be loaded"):
        cli.main(argv + ["--force"])


@pytest.mark.slow
def test_figures_script_end_to_end(tmp_path):
    argv = [*PAPER, "--out", str(tmp_path), "--only", "icl", "--tasks", "capitalize", "--n-test", "4", "--no-png"]
    assert cli.main(argv) == 0
    rows = json.loads((tmp_path / "icl_accuracy.json").read_text())["rows"]
    assert [r["k"] for r in rows] == [0, 1, 2, 5, 10] and all(r["n"] == 4 for r in rows)


def test_per_task_steps_resume_after_an_interruption(tmp_path, monkeypatch):
    """A step computed task by task keeps each finished task in <out>/.tasks/<table>/<task>.json and resumes
    there."""
    from tvmech.experiments import icl

    calls = []

    def fake_run(model, config, **kw):
        calls.append(config.tasks)
        if config.tasks == ("nli",) and len(calls) == 2:
            raise KeyboardInterrupt
        return icl.Result(config, [{"task": config.tasks[0], "k": 0, "accuracy": 0.5, "n": 1, "scoring": "x"}])

    monkeypatch.setattr(icl, "run", fake_run)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
    argv = [*PAPER, "--out", str(tmp_path), "--only", "icl", "--tasks", "antonym", "nli", "--no-png"]
    assert cli.main(argv) == 130  # Ctrl-C: one line, not a traceback (tests/unit/pipeline/test_disk_full.py)
    assert [p.name for p in (tmp_path / ".tasks" / "icl_accuracy").iterdir()] == ["antonym.json"]
    assert cli.main(argv) == 0
    assert calls == [("antonym",), ("nli",), ("nli",)]
    assert [r["task"] for r in json.loads((tmp_path / "icl_accuracy.json").read_text())["rows"]] == ["antonym", "nli"]
    assert sorted(p.name for p in (tmp_path / ".tasks" / "icl_accuracy").iterdir()) == ["antonym.json", "nli.json"]


def test_draw_gives_the_figures_of_an_experiment_result():
    from tvmech.experiments import icl, linear_map
    from tvmech.pipeline.registry import draw

    figs = draw(icl.Result(icl.Config(tasks=("antonym",)), ROWS), "m")
    assert list(figs) == ["icl_accuracy"] and isinstance(figs["icl_accuracy"], go.Figure)
    with pytest.raises(TypeError, match="Result of one of"):
        draw(linear_map.Config())


def test_a_step_split_by_layer_caches_each_task_layer_pair_and_reuses_them_for_other_layer_sets(tmp_path):
    """The linear step's jobs are its (task, layer) pairs: each computed alone and cached as <task>_L<layer>,
    the rows in task-then-layer order as one run gives them; the cache key leaves out the layers, so a run over
    other layers computes only the pairs it lacks."""
    from types import SimpleNamespace

    from tvmech.experiments import linear_map
    from tvmech.pipeline import scheduler
    from tvmech.pipeline.registry import Session
    from tvmech.pipeline.steps import STEPS

    calls = []

    def fake_run(model, config, **kw):
        calls.append((config.tasks, config.layers))
        return linear_map.Result(config, [{"task": t, "layer": l} for t in config.tasks for l in config.layers])

    step = replace(STEPS["linear"], experiment=SimpleNamespace(run=fake_run, Result=linear_map.Result,
                                                               Config=linear_map.Config))
    session = Session(ResultStore(tmp_path), lambda: None, "tiny", "cpu")
    cfg = linear_map.Config(tasks=("antonym", "nli"), layers=(1, 3))
    tables = scheduler.compute(step, cfg, session).tables
    assert calls == [(("antonym",), (1,)), (("antonym",), (3,)), (("nli",), (1,)), (("nli",), (3,))]
    assert tables["linear_map"] == fake_run(None, cfg).rows()
    assert sorted(p.name for p in (tmp_path / ".tasks" / "linear_map").iterdir()) == [
        "antonym_L1.json", "antonym_L3.json", "nli_L1.json", "nli_L3.json"]
    calls.clear()
    wider = replace(cfg, layers=(1, 2, 3))
    tables = scheduler.compute(step, wider, session).tables
    assert calls == [(("antonym",), (2,)), (("nli",), (2,))]
    assert [(r["task"], r["layer"]) for r in tables["linear_map"]] == [(t, l) for t in ("antonym", "nli")
                                                                        for l in (1, 2, 3)]
