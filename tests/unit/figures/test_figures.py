import json

import plotly.graph_objects as go
import pytest

from tvmech.figures import cache, plots, run
from tvmech.figures.export import save_figure

ROWS = [{"task": t, "k": k, "accuracy": a, "n": 10, "scoring": "first_token"}
        for t, base in (("a", 0.1), ("b", 0.3)) for k, a in zip((0, 1, 5), (base, base + 0.2, base + 0.4))]


def test_icl_figure_has_one_line_per_task_plus_mean():
    fig = plots.icl_accuracy_figure(ROWS, "m")
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["a", "b", "mean"]
    assert list(fig.data[-1].y) == pytest.approx([0.2, 0.4, 0.6])


def test_save_figure_writes_html_data_and_table(tmp_path):
    paths = save_figure(plots.icl_accuracy_figure(ROWS), tmp_path, "icl", ROWS, {"x": 1}, png=False)
    assert paths["html"].read_text().count("plotly") > 0
    assert json.loads(paths["json"].read_text())["rows"] == ROWS
    assert paths["csv"].read_text().splitlines()[0] == "task,k,accuracy,n,scoring"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_figures_script_redraws_from_saved_numbers_without_a_model(tmp_path, monkeypatch):
    settings = {"tasks": ["antonym"], "ks": [0, 1, 2, 5, 10], "n_test": 3, "seed": 0, "model": "SmolLM2-135M-Instruct"}
    (tmp_path / "icl_accuracy.json").write_text(json.dumps({"meta": {"settings": settings, "device": "gpu-x"}, "rows": ROWS}))

    def no_model(*a, **k):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr(run, "load_model", no_model)
    assert run.main(["--out", str(tmp_path), "--only", "icl", "--tasks", "antonym", "--n-test", "3", "--no-png"]) == 0
    assert (tmp_path / "icl_accuracy.html").is_file()
    assert json.loads((tmp_path / "icl_accuracy.json").read_text())["meta"]["device"] == "gpu-x"  # provenance kept
    with pytest.raises(AssertionError, match="should not be loaded"):
        run.main(["--out", str(tmp_path), "--only", "icl", "--tasks", "antonym", "--n-test", "3", "--no-png", "--force"])


@pytest.mark.slow
def test_figures_script_end_to_end(tmp_path):
    assert run.main(["--out", str(tmp_path), "--only", "icl", "--tasks", "capitalize", "--n-test", "4", "--no-png"]) == 0
    rows = json.loads((tmp_path / "icl_accuracy.json").read_text())["rows"]
    assert [r["k"] for r in rows] == [0, 1, 2, 5, 10] and all(r["n"] == 4 for r in rows)


def test_per_task_rows_resume_after_an_interruption(tmp_path):
    calls = []

    def compute(task):
        calls.append(task)
        if task == "c" and len(calls) == 3:
            raise KeyboardInterrupt
        return [{"task": task, "value": len(calls)}]

    with pytest.raises(KeyboardInterrupt):
        cache.per_task_rows(tmp_path / "x.json", {"tasks": ["a", "b", "c"], "s": 1}, ["a", "b", "c"], compute)
    rows = cache.per_task_rows(tmp_path / "x.json", {"tasks": ["a", "b", "c"], "s": 1}, ["a", "b", "c"], compute)
    assert calls == ["a", "b", "c", "c"] and [r["task"] for r in rows] == ["a", "b", "c"]
    assert not (tmp_path / "x.partial.json").exists()
