"""load_tasks: a folder of task files in the layout of function_vectors' dataset_files/ (abstractive/, extractive/),
each file read with load_task's validation; files written for these tests in tests/data/task_folder/."""

import json
import shutil
from pathlib import Path

import pytest

import tvmech as tv

FOLDER = Path(__file__).resolve().parents[2] / "data" / "task_folder"


def test_a_folder_of_task_files_loads_as_tasks_keyed_by_name():
    with pytest.warns(UserWarning, match=r"skipped 1 JSON file\(s\).*generate/categories.json"):
        tasks = tv.load_tasks(FOLDER)
    files = sorted(FOLDER.glob("*/*.json"))
    task_files = [f for f in files if f.parent.name != "generate"]
    assert len(tasks) == len(task_files) >= 20
    assert list(tasks) == [f.stem for f in task_files]
    for f in task_files:
        task = tasks[f.stem]
        assert task.name == f.stem and task.description == f"{f.parent.name}/{f.name}"
        assert task.examples == tv.load_task(f).examples  # the same reader and validation
        records = json.loads(f.read_text())
        assert [(e.input, e.output) for e in task.examples] == [(r["input"], r["output"]) for r in records]
    assert {t.description.split("/")[0] for t in tasks.values()} == {"abstractive", "extractive"}
    assert tasks["first_of_three"].examples[0] == tv.Example("cat, stone, bread", "cat")


def test_overrides_apply_to_every_task_and_the_name_is_the_file_stem(tmp_path):
    shutil.copytree(FOLDER / "extractive", tmp_path / "extractive")
    (tmp_path / "top.jsonl").write_text('{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}\n')
    template = tv.Template(query="In: {input}\nOut:")
    tasks = tv.load_tasks(str(tmp_path), template=template)
    assert "top" in tasks and tasks["top"].description == "top.jsonl"
    assert all(t.template == template for t in tasks.values())
    with pytest.raises(ValueError, match="'name' cannot be overridden"):
        tv.load_tasks(tmp_path, name="x")


def test_a_bad_file_is_named_in_the_error(tmp_path):
    (tmp_path / "abstractive").mkdir()
    (tmp_path / "abstractive" / "good.json").write_text('[{"input": "a", "output": "b"}]')
    bad = tmp_path / "abstractive" / "bad.json"
    bad.write_text('[{"input": "a", "output": "b"}, {"input": "c"}]')
    with pytest.raises(ValueError, match=r"bad\.json.*record 2.*no 'output' key"):
        tv.load_tasks(tmp_path)
    bad.write_text('[{"input": "a", "output": "b"},')
    with pytest.raises(ValueError, match=r"bad\.json.*invalid JSON"):
        tv.load_tasks(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        tv.load_tasks(tmp_path / "missing")
    (tmp_path / "one.json").write_text('[{"input": "a", "output": "b"}]')
    with pytest.raises(FileNotFoundError, match="single task file loads with load_task"):
        tv.load_tasks(tmp_path / "one.json")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "one.json").write_text('[{"input": "c", "output": "d"}]')
    with pytest.raises(ValueError, match="two task files are named 'one'"):
        tv.load_tasks(tmp_path)
    empty = tmp_path / "empty"
    (empty / ".git").mkdir(parents=True)
    (empty / ".git" / "x.json").write_text('[{"input": "a", "output": "b"}]')  # hidden folders are not read
    (empty / "notes.txt").write_text("not a task")
    with pytest.raises(FileNotFoundError, match="holds no task file"):
        tv.load_tasks(empty)


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(FOLDER / "abstractive", tmp_path / "dataset_files" / "abstractive")
    assert len(tv.load_tasks("~/dataset_files")) == len(list((FOLDER / "abstractive").glob("*.json")))
