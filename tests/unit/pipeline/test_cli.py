"""The command line of ``python -m tvmech.pipeline``: generated from the experiments' configs, defaults
derived from the model, clear errors, and the redraw of every committed figure without a model."""

import dataclasses
import glob
import json
import shutil
from pathlib import Path

import pytest

from tvmech.experiments import geometry, layer_sweep, synthetic
from tvmech.pipeline import cli
from tvmech.pipeline.registry import TASK
from tvmech.pipeline.steps import STEPS

CONFIGS = {name: step.config for name, step in STEPS.items()}

PAPER = ["--preset", "paper"]  # the committed settings (the default preset is quick)

FIGURES = Path(__file__).resolve().parents[3] / "figures"


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    return " ".join(capsys.readouterr().out.split())


def test_every_config_field_is_a_flag_with_its_default_and_help(capsys):
    text = _help(capsys)
    first: dict[str, str] = {}
    for step, cls in CONFIGS.items():
        for f in dataclasses.fields(cls):
            flag = cli.flag_of(cls, f)
            assert flag + " " in text, (step, f.name)
            if flag in cli.COMMON:
                continue
            shown = cli.field_spec(cls, f)["help"].replace("%%", "%").rsplit(" (default:", 1)[1]
            assert " ".join(f"(default:{shown}".split()) in text, (step, f.name)
            if flag in first:  # a shared flag: documented by its first experiment, naming the others
                assert f"[also {step}]" in text, (step, f.name)
            else:
                first[flag] = step
                assert " ".join(f.metadata["help"].split()) in text, (step, f.name)
    assert "--sweep-layers" in text and "(default: derived from the model)" in text
    assert "range(0, 30" not in text


def test_no_flag_restates_a_default():
    args = cli.parse_args(PAPER)
    for step, cls in CONFIGS.items():
        assert args.configs[step] == cls(), step


def test_flags_set_the_configs():
    args = cli.parse_args([*PAPER, "--tasks", "antonym", "nli", "--lens-tasks", "sentiment", "--sweep-layers", "0", "4",
                           "--geometry-layer", "7", "--mech-layer", "3", "--ltv-steps", "9", "--n-test", "5",
                           "--key-frac", "0.2", "--map-noise", "0.1", "--mech-n-test", "none"])
    c = args.configs
    assert c["icl"].tasks == c["sweep"].tasks == c["key_heads"].tasks == ("antonym", "nli")
    assert c["lens"].tasks == ("sentiment",)  # an experiment's own flag wins over the common one
    assert c["sweep"].layers == (0, 4) and c["sweep"].ltv_steps == 9 and c["peft"].steps == 9
    assert c["geometry"].layer == c["composition"].layer == c["peft"].layer == 7  # one shared flag
    assert c["ov_circuits"].layer == c["key_heads"].layer == c["sinks"].layer == 3
    assert c["sinks"].frac == 0.2 and c["linear"].map_noise == (0.1,)
    assert c["icl"].n_test == 5 and c["ov_circuits"].n_test is None  # --mech-n-test none beats --n-test 5
    assert c["synthetic"] == synthetic.Config()


@pytest.mark.parametrize("argv, message", [
    (["--map-solver", "qr"], "invalid choice: 'qr'"),
    (["--tasks", "nope"], "invalid choice: 'nope'"),
    (["--sweep-layers", "x"], "invalid int value: 'x'"),
    (["--exact-every", "0"], "--exact-every 0 is not valid: it must be >= 1"),
    (["--key-frac", "2"], "--key-frac 2.0 is not valid"),
    (["--sink-threshold", "1.5"], "--sink-threshold 1.5 is not valid"),
    (["--mech-alphas", "0"], "--mech-alphas (0.0,) is not valid: give one or more scales > 0"),
    (["--mech-n-score", "0"], "--mech-n-score 0 / --n-random "),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--n-test", "0"], "--n-test 0 is not valid"),
    (["--icl-n-test", "0"], "--icl-n-test 0 is not valid"),
    (["--n-test", "-5"], "--n-test -5 is not valid"),
    (["--ltv-steps", "0"], "--ltv-steps 0 is not valid"),
    (["--sweep-layers", "-1"], "--sweep-layers: layer(s) [-1] are not valid"),
    (["--device", "tpu"], "--device 'tpu' is not a torch device"),
    (["--device", "cuda:99"], "--device cuda:99: this machine has"),
    (["--out", "/proc/no/such"], "--out /proc/no/such: cannot write there"),
])
def test_bad_flags_give_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        cli.parse_args(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_only_accepts_the_step_names(capsys):
    assert cli.parse_args(["--only", "icl", "synthetic"]).only == ["icl", "synthetic"]
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "sweeps"])
    err = capsys.readouterr().err
    assert "invalid choice: 'sweeps'" in err and all(s in err for s in STEPS)


def test_sweep_layers_default_to_every_third_layer_of_the_loaded_model(tmp_path, monkeypatch, tiny):
    """On a 3-layer model the sweep runs at layer 0 only, and the saved settings say so."""
    seen = []

    def fake_sweep(model, tasks, layers, **kw):
        seen.append(tuple(layers))
        return [{"task": t.name, "method": m, "layer": None, "accuracy": 0.5, "n": 1}
                for t in tasks for m in ("zero_shot", "icl_5shot")] + [
            {"task": t.name, "method": m, "layer": 0, "accuracy": 0.5, "n": 1} for t in tasks for m in
            ("ltv", "vanilla", "fv")]

    monkeypatch.setattr(layer_sweep, "layer_sweep", fake_sweep)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: tiny)
    argv = [*PAPER, "--out", str(tmp_path), "--only", "sweep", "--tasks", "capitalize", "--no-png", "--model", "tiny"]
    assert cli.main(argv) == 0
    assert seen == [(0,)]
    meta = json.loads((tmp_path / "layer_sweep.json").read_text())["meta"]
    assert meta["settings"]["layers"] == [0] and meta["settings"]["model"] == "tiny"
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: pytest.fail("the model should not be loaded"))
    assert cli.main(argv) == 0 and seen == [(0,)]  # redrawn: the derived layers are taken from the saved settings
    assert (tmp_path / "layer_sweep_by_task.html").is_file()


def test_a_saved_file_of_another_model_is_not_reused(tmp_path, monkeypatch):
    shutil.copy(FIGURES / "task_transfer.json", tmp_path)
    shutil.copy(FIGURES / "task_cosine.json", tmp_path)

    def no_model(*a, **k):
        raise AssertionError("loaded")

    monkeypatch.setattr(cli, "load_model", no_model)
    with pytest.raises(AssertionError, match="loaded"):
        cli.main([*PAPER, "--out", str(tmp_path), "--only", "geometry", "--no-png", "--model", "other"])
    with pytest.raises(AssertionError, match="loaded"):
        cli.main([*PAPER, "--out", str(tmp_path), "--only", "geometry", "--no-png", "--geometry-layer", "14"])
    assert geometry.Config(layer=15).adopt({}) is not None


# steps whose settings gained fields in issue 11 -> (a table of theirs, a field it must have to be current)
ISSUE_11 = {"key_heads": ("key_heads_layers", "score"), "sinks": ("attention_sinks", "score"),
            "linear": ("linear_map", "map_null")}
# steps whose accuracies are reported under several scorings -> (a table of theirs, the settings field)
SCORINGS = {"ov_circuits": ("ov_reconstruction", "scorings"), "key_heads": ("key_heads_layers", "scorings"),
            "linear": ("linear_map", "scorings")}
# steps whose settings changed in issue 24 -> (a table of theirs, a settings field the new numbers have)
ISSUE_24 = {"robustness": ("robustness", "methods"), "linear": ("linear_map", "map_random"),
            "key_heads": ("key_heads_layers", "exact"), "composition": ("composition", "task"),
            "ov_circuits": ("ov_reconstruction", "paths")}


def stale_steps() -> set[str]:
    """Steps whose committed numbers predate issue 11, the per-scoring accuracies or issue 24 (their settings lack
    the fields): they need recomputing."""
    out = set()
    for step, (table, key) in [*ISSUE_11.items(), *SCORINGS.items(), *ISSUE_24.items()]:
        path = FIGURES / f"{table}.json"
        if path.is_file() and key not in json.loads(path.read_text())["meta"]["settings"]:
            out.add(step)
    return out


def test_every_committed_figure_redraws_without_a_model_and_keeps_its_numbers(tmp_path, monkeypatch):
    """Every step whose committed numbers are current redraws from them (steps that predate issue 11 are left
    out until they are recomputed)."""
    stale = stale_steps()
    tables = {t for name in stale for t in STEPS[name].tables}
    saved = sorted(p for p in glob.glob(str(FIGURES / "*.json")) if Path(p).stem not in tables)
    if not saved:
        pytest.skip("figures not computed")
    for p in saved:
        shutil.copy(p, tmp_path)

    def no_model(*a, **k):
        raise AssertionError("the model should not be loaded")

    monkeypatch.setattr(cli, "load_model", no_model)
    monkeypatch.setattr(synthetic, "train", no_model)
    before = {Path(p).name: json.loads(Path(p).read_text()) for p in saved}
    # steps added since the last GPU recompute (no committed table yet) are left out until it writes them
    uncomputed = {n for n, st in STEPS.items() if TASK not in st.tables[0]
                  and not any((FIGURES / f"{t}.json").is_file() for t in st.tables)}
    steps = [n for n in STEPS if n not in stale | uncomputed]
    assert cli.main([*PAPER, "--out", str(tmp_path), "--no-png", "--only", *steps]) == 0
    for name, data in before.items():
        assert json.loads((tmp_path / name).read_text()) == data, name
    drawn = {"sweep": "layer_sweep_by_task", "linear": "rotation_alignment", "geometry": "task_cosine",
             "key_heads": "key_heads_layers"}
    for step, name in drawn.items():
        if step not in stale:
            assert (tmp_path / f"{name}.html").is_file(), name


def test_geometry_on_a_three_layer_model_uses_its_middle_layer_and_keeps_the_vectors(tmp_path, monkeypatch, tiny):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: tiny)
    argv = [*PAPER, "--out", str(tmp_path), "--only", "geometry", "--tasks", "capitalize", "antonym",
            "--ltv-steps", "1", "--n-test", "2", "--no-png", "--model", "tiny"]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "vectors").iterdir()) == [
        "antonym_L1.json", "antonym_L1.safetensors", "capitalize_L1.json", "capitalize_L1.safetensors"]
    transfer = json.loads((tmp_path / "task_transfer.json").read_text())
    assert transfer["meta"]["settings"]["layer"] == 1 and len(transfer["rows"]) == 4
    cosine = json.loads((tmp_path / "task_cosine.json").read_text())["rows"]
    assert [r["cosine"] for r in cosine if r["task_a"] == r["task_b"]] == [1.0, 1.0]


def test_the_quick_preset_is_the_default_and_a_given_flag_wins(tmp_path):
    from tvmech.pipeline.presets import PRESETS, QUICK_TASKS

    args = cli.parse_args(["--out", str(tmp_path)])
    assert args.preset == "quick" and args.configs["icl"].tasks == QUICK_TASKS and args.configs["sweep"].ltv_steps == 30
    assert args.configs["sweep"].layer_count == 3 and args.configs["linear"].tasks == ("antonym",)
    assert cli.parse_args([]).out == PRESETS["quick"].out
    args = cli.parse_args(["--out", str(tmp_path), "--ltv-steps", "7", "--sweep-layer-count", "2"])
    assert args.configs["sweep"].ltv_steps == 7 and args.configs["sweep"].layer_count == 2
    assert cli.parse_args(PAPER).out == PRESETS["paper"].out


def test_list_prints_every_step_with_its_cost_per_preset(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{s} " in out for s in STEPS) and "--preset quick" in out and "--preset paper" in out
