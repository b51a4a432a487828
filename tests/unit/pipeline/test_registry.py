"""The registry of steps: what each step declares is consistent (tables from its experiment, figures drawing its
own tables, reads of earlier steps, preset values that are config fields), a new step needs nothing but its own
module to appear in the command line, --list and the gallery, and the former command names still work."""

import dataclasses
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tvmech.experiments.common import ALL_TASKS, ExperimentConfig, RecordsResult, option
from tvmech.pipeline import cli, registry
from tvmech.pipeline.presets import PRESETS
from tvmech.pipeline.registry import TASK, Figure, Step
from tvmech.pipeline.steps import STEPS
from tvmech.plots.spread import mean_text

ROOT = Path(__file__).resolve().parents[3]


def _empty_result(step: Step):
    """The step's Result with its config and empty records."""
    cls = step.experiment.Result
    return cls(step.config(), *([] for _ in dataclasses.fields(cls)[1:]))


@pytest.mark.parametrize("name", [n for n, s in STEPS.items() if TASK not in s.tables[0]])
def test_a_steps_tables_are_those_its_experiment_writes(name):
    step = STEPS[name]
    assert tuple(_empty_result(step).tables()) == step.tables


def test_figures_draw_their_own_steps_tables_and_reads_come_from_earlier_steps():
    seen: set[str] = set()
    names = [f.name for s in STEPS.values() for f in s.figures]
    assert len(names) == len(set(names))
    for step in STEPS.values():
        assert all(f.table in step.tables for f in step.figures), step.name
        assert all(f.caption for f in step.figures), step.name
        for table in step.reads:
            assert table in seen and registry.owner(table).order < step.order, (step.name, table)
        seen.update(step.tables)
    assert [s.order for s in STEPS.values()] == sorted(s.order for s in STEPS.values())


def test_preset_values_are_config_fields_and_every_step_has_a_cost_per_preset():
    for step in STEPS.values():
        names = {f.name for f in dataclasses.fields(step.config)}
        assert set(step.quick) <= names, step.name
        assert set(step.seeds) <= set(PRESETS) and set(step.cost) == set(PRESETS), step.name
        step.config(**step.quick)  # valid values


def test_the_command_line_wins_over_the_preset_a_steps_own_flag_over_the_common_one(tmp_path):
    args = cli.parse_args(["--out", str(tmp_path), "--tasks", "nli"])
    assert args.configs["sweep"].tasks == args.configs["icl"].tasks == ("nli",)  # beats the quick sweep's antonym
    assert args.configs["sweep"].layer_count == 3  # the preset's value where nothing is given
    args = cli.parse_args(["--out", str(tmp_path), "--tasks", "nli", "--sweep-tasks", "capitalize"])
    assert args.configs["sweep"].tasks == ("capitalize",) and args.configs["icl"].tasks == ("nli",)


def test_a_figure_per_task_is_found_by_its_file_name():
    fig = registry.figure("synthetic_linear_tv_prompting")
    assert fig is not None and fig.caption == "Synthetic ICL: linear tv prompting."
    assert fig.table == "synthetic_linear_tv_prompting"
    assert registry.figure("layer_sweep_by_task").table == "layer_sweep" and registry.figure("nothing") is None


@dataclass(frozen=True)
class ToyConfig(ExperimentConfig):
    """A new experiment."""

    PREFIX = "toy"

    tasks: tuple[str, ...] = option(("antonym",), "tasks", choices=ALL_TASKS)
    scale: float = option(1.0, "the toy's scale")
    seed: int = option(0, "seed")


class ToyResult(RecordsResult[ToyConfig]):
    TABLE = "toy_scores"


def _toy_run(model, config: ToyConfig) -> ToyResult:
    return ToyResult(config, [{"task": t, "accuracy": config.scale / 2} for t in config.tasks])


def test_a_new_step_is_one_registration(tmp_path, monkeypatch, capsys):
    """A step module's Step is all the command line, --list, the scheduler and the gallery need."""
    import plotly.graph_objects as go

    toy = SimpleNamespace(__name__="toy_experiment", Config=ToyConfig, Result=ToyResult, run=_toy_run)
    step = Step("toy", toy, order=1000, figures=(Figure(
        "toy_scores", lambda d: go.Figure(go.Bar(y=[r["accuracy"] for r in d.rows])), "toy_scores",
        "A toy figure.", lambda rows: f"mean {mean_text(rows)}"),), cost={"quick": "1 s", "paper": "?"})
    monkeypatch.setitem(registry._STEPS, "toy", step)
    monkeypatch.setitem(STEPS, "toy", step)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
    assert cli.main(["--list"]) == 0 and "\ntoy " in capsys.readouterr().out
    argv = ["--out", str(tmp_path), "--only", "toy", "--toy-scale", "0.5", "--tasks", "antonym", "nli", "--no-png"]
    assert cli.main(argv) == 0
    rows = json.loads((tmp_path / "toy_scores.json").read_text())["rows"]
    assert rows == [{"task": "antonym", "accuracy": 0.25}, {"task": "nli", "accuracy": 0.25}]
    assert (tmp_path / ".tasks" / "toy_scores" / "nli.json").is_file()  # computed task by task
    page = (tmp_path / "index.html").read_text()
    assert "A toy figure." in page and "mean 0.25" in page


@pytest.mark.parametrize("argv", [["-m", "tvmech.figures", "--list"], ["-m", "tvmech.figures.readme", "--check"]])
def test_the_former_command_names_still_work(argv):
    new = [a.replace("tvmech.figures", "tvmech.pipeline") for a in argv]
    old, now = (subprocess.run([sys.executable, *a], cwd=ROOT, capture_output=True, text=True, timeout=300)
                for a in (argv, new))
    assert old.returncode == now.returncode == 0, old.stderr[-2000:]
    assert old.stdout == now.stdout
