"""Task files: non-string values, duplicates, malformed JSON, and k-shot demonstration counts (issue 13)."""

import json
import re
import warnings

import pytest

import tvmech as tv
from tvmech.data.tasks import parse_records, read_records


def write(tmp_path, name, records):
    path = tmp_path / name
    text = "\n".join(json.dumps(r) for r in records) if name.endswith(".jsonl") else json.dumps(records)
    path.write_text(text)
    return path


# 1. non-string inputs and outputs


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("field, value, shown", [
    ("output", 1, "1 (int)"), ("output", None, "null (NoneType)"), ("output", True, "true (bool)"),
    ("output", {"x": 1}, '{"x": 1} (dict)'), ("output", [[1, 2]], "[1, 2] (list)"),
    ("input", 1.5, "1.5 (float)"), ("input", ["a"], '["a"] (list)'),
])
def test_non_string_values_are_an_error_naming_the_record(tmp_path, suffix, field, value, shown):
    bad = {"input": "b", "output": "c", field: value}
    path = write(tmp_path, "t" + suffix, [{"input": "a", "output": "x"}, bad])
    line = " (line 2)" if suffix == ".jsonl" else ""
    name = "output[0]" if value == [[1, 2]] else field
    with pytest.raises(ValueError, match=re.escape(f"{path}: record 2{line}: field {name!r} is {shown}")) as info:
        tv.load_task(path)
    assert "expected a string" in str(info.value)
    assert ("coerce=True to convert" in str(info.value)) == isinstance(value, (int, float))


def test_coerce_converts_numbers_and_booleans_with_str(tmp_path):
    path = write(tmp_path, "t.json", [{"input": 1, "output": True}, {"input": 2.0, "output": [3, "x"]},
                                      {"input": "a", "output": False}])
    task = tv.load_task(path, coerce=True)
    assert [(e.input, e.output) for e in task.examples] == [("1", "True"), ("2.0", "3"), ("a", "False")]
    assert read_records(path, coerce=True) == task.examples


@pytest.mark.parametrize("record, message", [
    ({"input": "a", "output": None}, r"field 'output' is null \(NoneType\)"),
    ({"input": {"x": 1}, "output": "b"}, r"field 'input' is \{\"x\": 1\} \(dict\)"),
    ({"input": "a", "output": [[1, 2]]}, r"field 'output\[0\]' is \[1, 2\] \(list\)"),
    ({"input": [1], "output": "b"}, r"field 'input' is \[1\] \(list\)"),
    ({"input": "a", "output": []}, "field 'output' is an empty list"),
])
def test_coerce_still_refuses_null_objects_and_nested_lists(tmp_path, record, message):
    path = write(tmp_path, "t.jsonl", [record])
    with pytest.raises(ValueError, match=r"record 1 \(line 1\): " + message) as info:
        tv.load_task(path, coerce=True)
    assert "coerce=True to convert" not in str(info.value)


def test_list_of_string_outputs_takes_the_first():
    assert parse_records([{"input": "a", "output": ["b", 1]}], "x") == (tv.Example("a", "b"),)


# 2. duplicates and disjoint splits


def test_exact_duplicates_dropped_with_one_warning(tmp_path):
    recs = [{"input": "a", "output": "b"}, {"input": "a", "output": "b"}, {"input": "c", "output": "d"},
            {"input": "a", "output": "b"}, {"input": "c", "output": "d"}, {"input": "a", "output": "e"}]
    path = write(tmp_path, "t.json", recs)
    with pytest.warns(UserWarning) as caught:
        task = tv.load_task(path)
    assert len(caught) == 1
    assert re.search(r"t\.json: dropped 3 duplicate examples .*; 3 remain", str(caught[0].message))
    assert [(e.input, e.output) for e in task.examples] == [("a", "b"), ("c", "d"), ("a", "e")]


def test_task_built_directly_drops_duplicates_too():
    ex = tv.Example("a", "b")
    with pytest.warns(UserWarning, match="task 't': dropped 1 duplicate example "):
        task = tv.Task("t", (ex, ex, tv.Example("c", "d")))
    assert task.examples == (ex, tv.Example("c", "d"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tv.Task("t", (ex, tv.Example("a", "z")))  # same input, another output: kept, no warning


@pytest.mark.parametrize("seed", range(6))
def test_same_input_with_two_outputs_stays_in_one_split(seed):
    examples = [tv.Example(f"w{i}", f"o{i}") for i in range(40)]
    examples += [tv.Example(f"w{i}", f"alt{i}") for i in range(0, 40, 3)]  # 14 inputs with a second output
    task = tv.Task("t", tuple(examples))
    sp = task.splits(seed)
    parts = [[e.input for e in s] for s in (sp.train, sp.val, sp.test)]
    sets = [set(p) for p in parts]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(map(len, parts)) == len(examples)  # every example lands somewhere
    assert [len(s) for s in sets] == [20, 6, 14]  # fractions count distinct inputs: 0.5, 0.15, 0.35 of 40
    for s in (sp.train, sp.val, sp.test):  # both outputs of a repeated input are in the same split
        for i in range(0, 40, 3):
            assert (tv.Example(f"w{i}", f"o{i}") in s) == (tv.Example(f"w{i}", f"alt{i}") in s)


def test_splits_of_distinct_inputs_are_a_plain_seeded_shuffle():
    import random

    task = tv.builtin_task("antonym")
    order = list(task.examples)
    random.Random(7).shuffle(order)
    n, sp = len(order), task.splits(7)
    assert sp.train == tuple(order[: round(0.5 * n)]) and sp.test == tuple(order[round(0.5 * n) + round(0.15 * n):])


# 3. malformed JSON


def test_malformed_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"input": "a", "output": "b"},\n  {"input": "c" "output": "d"}\n]')
    with pytest.raises(ValueError, match=re.escape(f"{path}: line 3, column 17: invalid JSON")) as info:
        tv.load_task(path)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_malformed_jsonl_reports_the_right_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n\n{"input": "c", "output": "d",}\n')
    with pytest.raises(ValueError, match=re.escape(f"{path}: line 3, column 30: invalid JSON")) as info:
        tv.load_task(path)
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_jsonl_records_report_their_file_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"input": "a", "output": "b"}\n\n\n{"input": "c", "output": 5}\n')
    with pytest.raises(ValueError, match=r"record 2 \(line 4\): field 'output' is 5"):
        tv.load_task(path)


def test_jsonl_line_separator_inside_a_string_is_not_a_line_break(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"input": "a\u2028b", "output": "c"}\n{"input": "d", "output": "e"}\n', encoding="utf-8")
    assert [e.input for e in tv.load_task(path).examples] == ["a\u2028b", "d"]


# 4. k-shot demonstration counts


def examples(*inputs):
    return tuple(tv.Example(x, x.upper()) for x in inputs)


def test_exactly_k_demonstrations_are_enough():
    task = tv.Task("t", examples("q", "a", "b", "c"))
    (p,) = tv.make_prompts(task, examples("q"), 3, examples("a", "b", "c"))
    assert p.text.count("\nA: ") == 3 and p.text.endswith("Q: q\nA:")


def test_query_among_demos_is_not_counted():
    task = tv.Task("t", examples("q", "a", "b", "c"))
    with pytest.raises(ValueError, match=r"k=3 demonstrations requested but only 2 distinct demonstrations are "
                                         r"available for task 't' \(query 'q' is excluded"):
        tv.make_prompts(task, examples("q"), 3, examples("q", "a", "b"))
    assert len(tv.make_prompts(task, examples("q"), 3, examples("q", "a", "b", "c"))) == 1


def test_duplicate_demo_inputs_count_once_and_never_repeat():
    task = tv.Task("t", examples("q", "a", "b"))
    demos = (tv.Example("a", "1"), tv.Example("a", "2"), tv.Example("b", "3"), tv.Example("b", "3"))
    with pytest.raises(ValueError, match="k=3 demonstrations requested but only 2 distinct demonstrations"):
        tv.make_prompts(task, examples("q"), 3, demos)
    for seed in range(5):
        (p,) = tv.make_prompts(task, examples("q"), 2, demos, seed=seed)
        blocks = p.text.split("\n\n")[:2]
        assert sorted(blocks) == ["Q: a\nA: 1", "Q: b\nA: 3"]  # the first example of each input
