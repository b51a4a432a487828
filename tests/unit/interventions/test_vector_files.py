"""Saved task vectors cannot say something other than what they hold (issue 13): every edit, swap,
truncation or bad value below is refused with a message naming it."""

import json

import pytest
import torch
from safetensors.torch import save_file

from tvmech.analysis.evaluation import evaluate
from tvmech.core.adapter import adapt
from tvmech.core.models import wrap
from tvmech.data.tasks import builtin_task
from tvmech.interventions.injection import Injection
from tvmech.interventions.task_vector import TaskVector


@pytest.fixture
def saved(tiny, tmp_path):
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,), task="t", method="ltv")
    vec.save(tmp_path / "v")
    return tmp_path / "v"


def _edit(base, **changes):
    path = base.with_name(base.name + ".json")
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("field, value", [("layers", [0]), ("layers", [1, 2]), ("positions", [-1, -2, -3]),
                                          ("point", "resid_post"), ("mode", "replace")])
def test_a_json_edited_away_from_the_tensor_file_is_refused(tiny, saved, field, value):
    _edit(saved, **{field: value})
    with pytest.raises(ValueError, match=f"disagree on '{field}'"):
        TaskVector.load(saved, tiny)


def test_a_swapped_safetensors_file_is_refused_by_the_checksum(tiny, saved, tmp_path):
    other = TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,))
    other.save(tmp_path / "w")
    (tmp_path / "v.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes())
    with pytest.raises(ValueError, match="does not match the checksum"):
        TaskVector.load(saved, tiny)


def test_a_missing_fingerprint_needs_strict_false(tiny, saved):
    _edit(saved, fingerprint=None)
    with pytest.raises(ValueError, match="no fingerprint.*strict=False"):
        TaskVector.load(saved, tiny)
    assert TaskVector.load(saved, tiny, strict=False).fingerprint == ""


def test_the_fingerprint_follows_the_weights_not_the_name(tiny, make_tokenizer, make_tiny_hf):
    tok = make_tokenizer()
    same = wrap(make_tiny_hf(vocab=len(tok)), tok, "renamed/path/to/tiny")
    other = wrap(make_tiny_hf(vocab=len(tok), seed=1), tok, "tiny-llama")
    fp = adapt(tiny).fingerprint()
    assert adapt(same).fingerprint() == fp and adapt(other).fingerprint() != fp
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,))
    vec.check_model(same)
    with pytest.raises(ValueError, match="other weights or another architecture"):
        vec.check_model(other)
    # a task vector is an intervention: attaching it (evaluation, apply, hooks) checks the model first
    task = builtin_task("capitalize")
    assert evaluate(same, task, task.examples[:2], intervention=vec).n == 2
    for attach in (lambda: evaluate(other, task, task.examples[:2], intervention=vec), lambda: vec.hooks(other),
                   lambda: vec.apply(other).__enter__()):
        with pytest.raises(ValueError, match="other weights or another architecture"):
            attach()


def test_corrupt_truncated_and_misnamed_tensor_files_name_the_file(tiny, saved, tmp_path):
    st = tmp_path / "v.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"v\.safetensors is not a readable safetensors file"):
        TaskVector.load(saved, tiny)
    st.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"v\.safetensors is not a readable safetensors file"):
        TaskVector.load(saved, tiny)
    save_file({"vector": torch.zeros(1, 1, 64)}, str(st))
    with pytest.raises(ValueError, match=r"holds the tensor\(s\) \['vector'\]; expected exactly one, named 'vectors'"):
        TaskVector.load(saved, tiny)
    save_file({"vectors": torch.zeros(1, 1, 64), "extra": torch.zeros(1)}, str(st))
    with pytest.raises(ValueError, match="expected exactly one"):
        TaskVector.load(saved, tiny)


def test_bad_json_and_unknown_or_missing_fields_are_named(tiny, saved, tmp_path):
    _edit(saved, layer=[1])
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['layer'\]; valid fields: layers"):
        TaskVector.load(saved, tiny)
    _edit(saved, layer=None, layers=None)
    with pytest.raises(ValueError, match="'layers' is missing"):
        TaskVector.load(saved, tiny)
    (tmp_path / "v.json").write_text('{"format": "tvmech.TaskVector/2",\n "layers": [1],,\n}')
    with pytest.raises(ValueError, match=r"v\.json is not valid JSON: .* at line 2"):
        TaskVector.load(saved, tiny)
    (tmp_path / "v.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*v\.json"):
        TaskVector.load(saved, tiny)


@pytest.mark.parametrize("name", ["run_lr3e-4.seed0", "a.b.c"])
def test_names_with_dots_keep_every_dot(tiny, tmp_path, name):
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,))
    vec.save(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.json", f"{name}.safetensors"]
    for given in (name, f"{name}.json", f"{name}.safetensors"):
        assert torch.equal(TaskVector.load(tmp_path / given, tiny).vectors, vec.vectors)


@pytest.mark.parametrize("bad, error, match", [
    (torch.full((1, 1, 64), float("nan")), ValueError, "64 non-finite"),
    (torch.tensor([[[float("inf")] + [0.0] * 63]]), ValueError, "hold 1 non-finite"),
    (torch.ones(1, 1, 64, dtype=torch.int64), TypeError, "floating point.*int64"),
    (torch.ones(1, 1, 64, dtype=torch.bool), TypeError, "floating point.*bool")])
def test_non_finite_and_integer_vectors_are_refused_when_made_and_when_saved(tiny, tmp_path, bad, error, match):
    with pytest.raises(error, match=match):
        TaskVector(bad, (1,))
    with pytest.raises(error, match=match):
        Injection(bad, (1,))
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,))
    vec.vectors = bad  # changed after it was made
    with pytest.raises(error, match=match):
        vec.save(tmp_path / "v")
    assert not list(tmp_path.iterdir())


def test_a_tensor_shape_that_does_not_fit_the_sites_is_refused(tiny):
    with pytest.raises(ValueError, match="do not fit 2 layers x 1 positions"):
        TaskVector(torch.randn(3, 1, 64), (0, 1))
    with pytest.raises(ValueError, match="do not have d_model 32"):
        TaskVector(torch.randn(1, 1, 64), (1,), d_model=32)


def test_the_older_format_loads_only_with_strict_false_and_upgrades_on_save(tiny, saved, tmp_path):
    _edit(saved, format="tvmech.TaskVector/1", checksum=None, shape=None)
    save_file({"vectors": TaskVector.load(saved.with_name("v.safetensors"), strict=False).vectors}, str(
        tmp_path / "v.safetensors"))  # a /1 tensor file: no header
    with pytest.raises(ValueError, match="older format.*strict=False"):
        TaskVector.load(saved, tiny)
    old = TaskVector.load(saved, tiny, strict=False)
    old.save(saved, overwrite=True)
    assert json.loads((tmp_path / "v.json").read_text())["format"] == "tvmech.TaskVector/2"
    assert torch.equal(TaskVector.load(saved, tiny).vectors, old.vectors)
