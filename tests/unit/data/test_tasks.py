import json

import pytest

import tvmech as tv
from tvmech.data.tasks import CLASSIFICATION_TASKS, WORD_TASKS


@pytest.mark.parametrize("name", list(tv.BUILTIN))
def test_builtin_task_sizes_and_uniqueness(name):
    task = tv.builtin_task(name)
    minimum = 150 if name in WORD_TASKS else 120
    assert len(task.examples) >= minimum
    inputs = [e.input for e in task.examples]
    assert len(set(inputs)) == len(inputs)
    if name in CLASSIFICATION_TASKS:
        assert task.scoring == "label_set" and set(e.output for e in task.examples) == set(task.labels)


def test_splits_are_seeded_disjoint_and_complete():
    task = tv.builtin_task("antonym")
    a, b, c = task.splits(0), task.splits(0), task.splits(1)
    assert a == b and a.test != c.test
    parts = [set(x.input for x in s) for s in (a.train, a.val, a.test)]
    assert sum(map(len, parts)) == len(task.examples) == len(set.union(*parts))
    assert len(a.test) > 0.3 * len(task.examples)


def test_load_json_and_jsonl(tmp_path):
    recs = [{"input": "a", "output": "b"}, {"input": "c", "output": ["d", "e"]}]
    (tmp_path / "t.json").write_text(json.dumps(recs))
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    for f in ("t.json", "t.jsonl"):
        task = tv.load_task(tmp_path / f)
        assert [(e.input, e.output) for e in task.examples] == [("a", "b"), ("c", "d")]


@pytest.mark.parametrize("content, message", [
    ("", "empty"), ("[]", "non-empty list"), ('[{"input": "x"}]', "record 1 has no 'output' key"),
    ('[{"input": "x", "output": " "}]', "empty input or output"),
])
def test_bad_task_files(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        tv.load_task(tmp_path / "bad.json")


def test_unknown_task_lists_valid_names():
    with pytest.raises(ValueError, match="country_capital"):
        tv.load_task("no_such_task")


def test_label_outside_label_set_is_rejected():
    with pytest.raises(ValueError, match="not in its label set"):
        tv.Task("t", (tv.Example("x", "maybe"),), labels=("yes", "no"), scoring="label_set")


def test_hf_task_offline_fails_fast(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="out of reach"):
        tv.load_task("hf:sst2")
    with pytest.raises(ValueError, match="hf:trec"):
        tv.load_task("hf:nope")
