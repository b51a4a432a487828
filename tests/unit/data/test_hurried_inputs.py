"""Hurried inputs (issue 28): task files with a byte-order mark and CRLF line ends, a missing key named with a
1-based record number, a file of a few labels, too few examples to split, strings where examples or prompts
are expected, a task vector given with another layer, and ``Splits`` unpacking."""

import json
import re
import warnings

import pytest
import torch

import tvmech as tv
from tvmech.core.checks import ArgumentTypeError
from tvmech.data.tasks import label_set_of, parse_records

RECORDS = [{"input": f"w{i}", "output": "yes" if i % 2 else "no"} for i in range(12)]
WORDS = tv.Task("words", tuple(tv.Example(f"w{i}", f"o{i}") for i in range(20)))


def _write(path, records, *, bom=False, crlf=False):
    text = ("\n".join(json.dumps(r) for r in records) if path.suffix == ".jsonl" else json.dumps(records, indent=1))
    text = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((("\ufeff" if bom else "") + text + ("\r\n" if crlf else "\n")).encode("utf-8"))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("bom, crlf", [(True, True), (True, False), (False, True)])
def test_bom_and_crlf_files_load_like_plain_ones(tmp_path, suffix, bom, crlf):
    plain = tv.load_task(_write(tmp_path / f"plain{suffix}", RECORDS), scoring="label_set")
    odd = tv.load_task(_write(tmp_path / f"odd{suffix}", RECORDS, bom=bom, crlf=crlf), scoring="label_set")
    assert odd.examples == plain.examples and odd.examples[0] == tv.Example("w0", "no")
    assert all("\r" not in e.input + e.output and "\ufeff" not in e.input for e in odd.examples)


@pytest.mark.parametrize("suffix, line", [(".jsonl", " (line 8)"), (".json", "")])
def test_a_missing_key_is_named_with_the_records_1_based_number(tmp_path, suffix, line):
    bad = RECORDS[:7] + [{"input": "x", "note": 1}] + RECORDS[7:]
    path = _write(tmp_path / f"t{suffix}", bad)
    with pytest.raises(ValueError) as info:
        tv.load_task(path)
    assert str(info.value) == (f"{path}: record 8{line} has no 'output' key (its keys: 'input', 'note'): "
                               '{"input": "x", "note": 1}')
    with pytest.raises(ValueError, match=r"record 1 has no 'input' or 'output' key \(its keys: none\)"):
        parse_records([{}], "x")
    with pytest.raises(ValueError, match=r"record 2 is a JSON string \(\"a\"\), not an object with 'input'"):
        parse_records([{"input": "a", "output": "b"}, "a"], "x")


def test_a_few_labels_suggest_label_set_scoring_once(tmp_path):
    path = _write(tmp_path / "labels.jsonl", RECORDS)
    with pytest.warns(UserWarning) as caught:
        task = tv.load_task(path)
    messages = [str(w.message) for w in caught if "distinct outputs" in str(w.message)]
    assert len(messages) == 1 and task.scoring == "first_token"  # suggested, not chosen
    assert f"load_task({str(path)!r}, scoring='label_set')" in messages[0] and "['no', 'yes']" in messages[0]
    labelled = tv.load_task(path, scoring="label_set")  # the labels are the distinct outputs, in order
    assert labelled.labels == ("no", "yes") and labelled.scoring == "label_set"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tv.load_task(path, scoring="first_token")  # an explicit scoring silences it
        tv.load_task(_write(tmp_path / "words.json", [{"input": e.input, "output": e.output} for e in WORDS.examples]))


def test_label_set_of_needs_few_repeated_outputs():
    ex = [tv.Example(f"w{i}", "ab"[i % 2]) for i in range(4)]
    assert label_set_of(ex) == ("a", "b")
    assert label_set_of(ex[:3]) is None  # two labels need four examples
    assert label_set_of(WORDS.examples) is None  # a word task: every output distinct
    many = [tv.Example(f"w{i}", f"l{i % 11}") for i in range(44)]
    assert label_set_of(many) is None  # eleven outputs: more than MAX_LABELS


def test_too_few_examples_warn_with_the_counts_and_training_without_train_is_refused(tiny):
    three = tv.Task("three", tuple(tv.Example(f"w{i}", f"o{i}") for i in range(3)))
    with pytest.warns(UserWarning) as caught:
        train, val, test = three.splits(0)
    assert (len(train), len(val), len(test)) == (2, 0, 1)
    assert [str(w.message) for w in caught] == [
        "task 'three': its 3 distinct inputs split into train 2, val 0, test 1 (fractions (0.5, 0.15, 0.35)): val "
        "is empty; at least 4 distinct inputs are needed for every split to hold one"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [len(s) for s in WORDS.splits(0)] == [10, 3, 7]
        assert len(three.splits(0, (0.7, 0.0, 0.3)).val) == 0  # an empty split asked for is no surprise
    one = tv.Task("one", (tv.Example("a", "b"),))
    with pytest.warns(UserWarning, match="train 0, val 0, test 1"), \
            pytest.raises(ValueError, match=r"task 'one': the training split is empty \(the task has 1 example\)"):
        tv.learn_task_vector(tiny, one, layers=(1,), config=tv.LTVConfig(steps=1), progress=False)


@pytest.mark.parametrize("call, message", [
    (lambda m: tv.evaluate(m, WORDS, "Lionel Messi", 0),
     "queries must be a list of Example objects, got the string 'Lionel Messi': build them with Example(input, "
     "output) (tvmech.Example), or take them from a task: task.examples, task.splits(seed).train / .test "
     "(tvmech.load_task reads a task from a file)"),
    (lambda m: tv.evaluate(m, WORDS, ["Lionel Messi"], 0),
     "queries[0] is 'Lionel Messi' (str), not an Example: build them with Example(input, output)"),
    (lambda m: tv.evaluate(m, WORDS, WORDS.examples[0], 0),
     "queries must be a list of Example objects, got a single Example: wrap it in a list, "
     "[Example(input='w0', output='o0')]"),
    (lambda m: tv.make_prompts(WORDS, WORDS.examples[:2], 1, "w3"), "demos must be a list of Example objects"),
    (lambda m: tv.evaluate_prompts(m, WORDS, "Q: w1\nA:"),
     "prompts must be a list of Prompt objects, got the string 'Q: w1\\nA:': build them from examples with "
     "make_prompts(task, examples, k) (tvmech.make_prompts)"),
    (lambda m: tv.evaluate_prompts(m, WORDS, list(WORDS.examples[:2])), "prompts[0] is Example(input='w0'"),
    (lambda m: tv.taylor_scores(m, tv.vanilla_task_vector(m, WORDS, layer=1, n=2), WORDS, "Q: w1\nA:"),
     "prompts must be a list of Prompt objects, got the string"),
    (lambda m: tv.learn_task_vector(m, WORDS, train="w1", layers=(1,)), "train must be a list of Example objects"),
    (lambda m: tv.Task("t", ("a", "b")), "task 't': examples[0] is 'a' (str), not an Example"),
])
def test_strings_where_examples_or_prompts_are_expected_say_how_to_build_them(tiny, call, message):
    with pytest.raises(ArgumentTypeError) as info:
        call(tiny)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, TypeError)


def test_a_task_vector_with_a_disagreeing_layer_is_refused(tiny):
    ad = tv.adapt(tiny)
    vec = tv.vanilla_task_vector(tiny, WORDS, layer=1, n=4, k=2)
    batch = tv.encode(ad.tokenizer, WORDS, tv.make_prompts(WORDS, WORDS.examples[:3], 0))
    config = tv.MapConfig(n_samples=8, n_heldout=4, solver="ridge")
    with pytest.raises(ValueError, match=re.escape("theta is a task vector of layer 1 but layer=2 was given: omit "
                                                   "layer (the vector's is used) or pass a vector made at layer 2")):
        tv.fit_tv_map(tiny, batch, vec, layer=2, config=config)
    from_vec = tv.fit_tv_map(tiny, batch, vec, config=config)  # its own layer
    from_tensor = tv.fit_tv_map(tiny, batch, vec.vectors[0, 0], 1, config)
    assert from_vec.layer == 1 and torch.allclose(from_vec.W, from_tensor.W)
    with pytest.raises(ValueError, match="layer 1 but layer=0"):
        tv.exact_jacobian(tiny, batch, vec, 0)
    with pytest.raises(ValueError, match="theta is a tensor, which does not say where it goes"):
        tv.fit_tv_map(tiny, batch, vec.vectors[0, 0])
    from tvmech.analysis.lens import query_states
    from tvmech.analysis.ov import head_ov_image

    assert torch.allclose(query_states(tiny, batch.tokens, batch.query_pos, vec),
                          query_states(tiny, batch.tokens, batch.query_pos, vec.vectors[0, 0], 1))
    with pytest.raises(ValueError, match="vector is a task vector of layer 1 but layer=2"):
        query_states(tiny, batch.tokens, batch.query_pos, vec, 2)
    assert torch.equal(head_ov_image(tiny, vec, None, 0), head_ov_image(tiny, vec.vectors[0, 0], 1, 0))
    two = tv.TaskVector(torch.zeros(2, 1, ad.d_model), (0, 1))
    with pytest.raises(ValueError, match=r"layers \(0, 1\) and positions \(-1,\); expected one layer"):
        tv.fit_tv_map(tiny, batch, two, config=config)


def _sweep_cases():
    from tvmech.analysis.attention_stats import attention_stats
    from tvmech.analysis.head_attribution import ablated_accuracy, ablation_effects
    from tvmech.analysis.lens import lens_metrics
    from tvmech.analysis.tv_map import fit_prompts
    from tvmech.methods.function_vectors import mean_head_z
    from tvmech.methods.vanilla import mean_query_state

    vec = lambda m: tv.vanilla_task_vector(m, WORDS, layer=1, n=2)  # noqa: E731
    s = "Q: w1\nA:"
    return [
        ("prompts", lambda m: attention_stats(m, WORDS, s, vec(m))), ("prompts", lambda m: lens_metrics(m, WORDS, s)),
        ("prompts", lambda m: mean_query_state(m, WORDS, s, 1)), ("prompts", lambda m: mean_head_z(m, WORDS, s)),
        ("prompts", lambda m: ablation_effects(m, vec(m), WORDS, s, [(1, 0)])),
        ("queries", lambda m: ablated_accuracy(m, vec(m), WORDS, "w1", [(1, 0)])),
        ("queries", lambda m: tv.vanilla_task_vector(m, WORDS, layer=1, queries="w1")),
        ("train", lambda m: tv.train_peft(m, WORDS, "lora_rank1", layer=1, train="w1", steps=1)),
        ("queries", lambda m: fit_prompts(m, WORDS, "w1")), ("prompts", lambda m: tv.encode(m.tokenizer, WORDS, s)),
    ]


@pytest.mark.parametrize("i", range(10))
def test_every_function_taking_examples_or_prompts_names_the_argument(tiny, i):
    what, call = _sweep_cases()[i]
    with pytest.raises(ArgumentTypeError, match=f"^{what} must be a list of (Example|Prompt) objects, got the string"):
        call(tiny)
