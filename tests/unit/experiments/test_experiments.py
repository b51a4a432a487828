"""The experiment modules: configs whose defaults follow the model, settings equal to the committed
figures' settings, run() on a tiny model, the LTV store."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from tvmech.experiments import (
    composition,
    geometry,
    icl,
    key_heads,
    layer_sweep,
    linear_map,
    logit_lens,
    ov_reconstruction,
    peft,
    robustness,
    sinks,
    synthetic,
    vectors,
)
from tvmech.methods.learned import LTVConfig
from tvmech.pipeline.registry import TASK
from tvmech.pipeline.steps import STEPS

FIGURES = Path(__file__).resolve().parents[3] / "figures"
# experiment module -> the committed JSON files whose settings its default config must reproduce (its step's tables)
SAVED = {step.experiment: step.tables for step in STEPS.values() if TASK not in step.tables[0]}
MODULES = list(SAVED)
# experiments whose defaults changed in issue 11 -> a settings field that committed numbers of issue 11 have
ISSUE_11 = {key_heads: "score", sinks: "score", linear_map: "map_null"}
# experiments whose defaults changed in issue 24 -> a settings field that committed numbers of issue 24 have
ISSUE_24 = {ov_reconstruction: "paths", key_heads: "paths", robustness: "methods",
            linear_map: "map_random", composition: "task"}
# experiments that report every accuracy under several scorings (field ``scorings``, not optional in the settings)
SCORINGS = (ov_reconstruction, key_heads, linear_map)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_default_settings_on_the_default_model_equal_the_committed_ones(module):
    names = [n for n in SAVED[module] if (FIGURES / f"{n}.json").is_file()]
    if not names:
        pytest.skip("figures not computed")
    mine = {**module.Config().resolve(30).settings(), "model": "SmolLM2-135M-Instruct"}
    for name in names:
        saved = json.loads((FIGURES / f"{name}.json").read_text())["meta"]["settings"]
        if module in ISSUE_11 and ISSUE_11[module] not in saved:
            pytest.skip(f"figures/{name}.json predates issue 11 (its defaults changed): recompute it")
        if module in ISSUE_24 and ISSUE_24[module] not in saved:
            pytest.skip(f"figures/{name}.json predates issue 24 (its defaults changed): recompute it")
        if module in SCORINGS and "scorings" not in saved:
            pytest.skip(f"figures/{name}.json predates the per-scoring accuracies: recompute it")
        if "seeds" in saved:  # gathered over several seeds (--seeds): the same settings without "seed"
            assert saved["seeds"] == [0, 1, 2], name
            assert saved == {**{k: v for k, v in mine.items() if k != "seed"}, "seeds": saved["seeds"]}, name
        else:
            assert saved == mine, name


def test_synthetic_settings_equal_the_committed_ones():
    path = FIGURES / "synthetic_offset_curves.json"
    if not path.is_file():
        pytest.skip("figures not computed")
    assert json.loads(path.read_text())["meta"]["settings"] == synthetic.Config().settings("offset")


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_config_field_is_documented(module):
    for f in fields(module.Config):
        assert f.metadata.get("help"), f"{module.__name__}.Config.{f.name} has no help"


def test_defaults_follow_the_model_depth():
    assert layer_sweep.Config().resolve(30).layers == (0, 3, 6, 9, 12, 15, 18, 21, 24, 27)
    assert layer_sweep.Config().resolve(3).layers == (0,)
    assert layer_sweep.Config().resolve(12).layers == (0, 3, 6, 9)
    assert linear_map.Config().resolve(30).layers == (3, 9, 15, 21, 27)
    assert linear_map.Config().resolve(3).layers == (0, 1, 2)
    for module, name in ((geometry, "layer"), (composition, "layer"), (peft, "layer"), (ov_reconstruction, "layer"),
                         (key_heads, "layer"), (sinks, "layer"), (logit_lens, "tv_layer")):
        assert getattr(module.Config().resolve(30), name) == 15
        assert getattr(module.Config().resolve(3), name) == 1
    assert geometry.Config(layer=4).resolve(3).layer == 4  # a given value is kept
    assert layer_sweep.Config(layers=(1, 2)).resolve(30).layers == (1, 2)
    assert robustness.configurations(3)["query"].layers == (1,)


def test_settings_need_a_resolved_config_and_bad_values_are_named():
    with pytest.raises(ValueError, match="resolve"):
        geometry.Config().settings()
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\].*valid"):
        icl.Config(tasks=("nope",))
    with pytest.raises(ValueError, match="mechanism exact_every 0"):
        key_heads.Config(exact_every=0)
    with pytest.raises(ValueError, match="threshold"):
        sinks.Config(threshold=2.0)
    with pytest.raises(ValueError, match="linear map_solver 'qr'.*lstsq"):
        linear_map.Config(map_solver="qr")
    with pytest.raises(ValueError, match="preset 'big'.*quick"):
        synthetic.Config(preset="big")


def test_icl_run_on_a_tiny_model(tiny):
    res = icl.run(tiny, icl.Config(tasks=("capitalize",), ks=(0, 1), n_test=3), progress=False)
    assert [(r["task"], r["k"], r["n"]) for r in res.rows()] == [("capitalize", 0, 3), ("capitalize", 1, 3)]
    assert res.tables() == {"icl_accuracy": res.rows()}


def test_layer_sweep_run_resolves_the_layers_from_a_three_layer_model(tiny):
    res = layer_sweep.run(tiny, layer_sweep.Config(tasks=("capitalize",), ltv_steps=1, n_test=2, k=1),
                          progress=False)
    assert res.config.layers == (0,)
    assert {(r["method"], r["layer"]) for r in res.rows()} == {("zero_shot", None), ("icl_1shot", None),
                                                               ("ltv", 0), ("vanilla", 0), ("fv", 0)}
    assert {r["scoring"] for r in res.rows()} == {"first_token"}  # a word task: its own scoring is the headline
    two = layer_sweep.run(tiny, layer_sweep.Config(tasks=("capitalize",), layers=(1,), ltv_steps=1, n_test=2, k=1,
                                                   scorings=("exact_match", "first_token")), progress=False)
    for method in ("zero_shot", "ltv"):
        acc = {r["scoring"]: r["accuracy"] for r in two.rows() if r["method"] == method}
        assert list(acc) == ["exact_match", "first_token"] and acc["exact_match"] <= acc["first_token"]
    with pytest.raises(ValueError, match="sweep scorings"):
        layer_sweep.Config(scorings=("argmax",))
    with pytest.raises(ValueError, match=r"layer\(s\) \[5\] out of range for a 3-layer model: valid layers are 0..2"):
        layer_sweep.run(tiny, layer_sweep.Config(tasks=("capitalize",), layers=(5,), ltv_steps=1, n_test=2),
                        progress=False)


def test_vector_store_saves_reuses_and_retrains_on_another_config(tiny, tmp_path, monkeypatch):
    store = vectors.VectorStore(tmp_path)
    cfg = LTVConfig(steps=1, batch_size=4)
    vec = store.get(tiny, ["capitalize"], 1, cfg)["capitalize"]
    assert (tmp_path / "capitalize_L1.safetensors").is_file() and (tmp_path / "capitalize_L1.json").is_file()

    def no_training(*a, **k):
        raise AssertionError("a saved vector should be reused")

    monkeypatch.setattr(vectors, "learn_task_vector", no_training)
    again = vectors.VectorStore(tmp_path).get(tiny, ["capitalize"], 1, cfg)["capitalize"]
    assert (again.vectors == vec.vectors).all()
    with pytest.raises(AssertionError, match="reused"):
        vectors.VectorStore(tmp_path).get(tiny, ["capitalize"], 1, LTVConfig(steps=2, batch_size=4))
    with pytest.raises(AssertionError, match="reused"):
        vectors.VectorStore(tmp_path, force=True).get(tiny, ["capitalize"], 1, cfg)
