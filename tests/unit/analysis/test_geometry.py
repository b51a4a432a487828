import math

import plotly.graph_objects as go
import pytest
import torch

import tvmech as tv
from tvmech.analysis.vector_geometry import add_task_vectors, cosine_matrix
from tvmech.experiments.composition import COMPOSITIONS, composition_experiment, composition_task, headroom
from tvmech.experiments.geometry import transfer_matrix
from tvmech.interventions.task_vector import TaskVector
from tvmech.plots import geometry_plots as gp

WORDS = [w.input for w in tv.builtin_task("capitalize").examples[:30]]


def _tv(v, layers=(1,), positions=(-1,), **kw):
    v = torch.as_tensor(v, dtype=torch.float32)
    return TaskVector(v.reshape(len(layers), len(positions), -1), tuple(layers), tuple(positions), **kw)


def test_cosine_matrix_of_known_vectors():
    e1, e2 = torch.eye(4)[0], torch.eye(4)[1]
    names, c = cosine_matrix({"a": _tv(e1), "b": _tv(3 * e1), "c": _tv(e2), "d": _tv(-2 * e1), "e": _tv(e1 + e2)})
    assert names == ["a", "b", "c", "d", "e"] and c.shape == (5, 5)
    assert torch.allclose(c, c.T) and torch.allclose(c.diagonal(), torch.ones(5))
    assert c[0, 1] == pytest.approx(1) and c[0, 2] == pytest.approx(0) and c[0, 3] == pytest.approx(-1)
    assert c[0, 4] == pytest.approx(1 / math.sqrt(2), abs=1e-6) and c[2, 4] == pytest.approx(1 / math.sqrt(2), abs=1e-6)


def test_cosine_matrix_flattens_all_sites_and_flags_zero_vectors():
    a = torch.randn(2, 3, 8)
    _, c = cosine_matrix({"a": _tv(a, (0, 2), (-3, -2, -1)), "b": _tv(a.flip(0), (0, 2), (-3, -2, -1))})
    expect = torch.nn.functional.cosine_similarity(a.reshape(-1), a.flip(0).reshape(-1), dim=0)
    assert c[0, 1] == pytest.approx(float(expect), abs=1e-6)
    _, z = cosine_matrix({"a": _tv(torch.ones(4)), "zero": _tv(torch.zeros(4))})
    assert z[0, 0] == 1 and math.isnan(z[0, 1]) and math.isnan(z[1, 1])
    with pytest.raises(ValueError, match="same shape"):
        cosine_matrix({"a": _tv(torch.ones(4)), "b": _tv(torch.ones(8))})


def test_add_task_vectors_sums_with_weights_and_rejects_mismatches():
    a, b = torch.randn(2, 1, 8), torch.randn(2, 1, 8)
    va, vb = _tv(a, (3, 5), task="english_french"), _tv(b, (3, 5), task="masculine_feminine")
    s = add_task_vectors(va, vb)
    assert torch.allclose(s.vectors, a + b) and s.layers == (3, 5) and s.task == "english_french+masculine_feminine"
    assert torch.allclose(add_task_vectors(va, vb, weights=(0.5, -2.0)).vectors, 0.5 * a - 2 * b)
    with pytest.raises(ValueError, match="different layers"):
        add_task_vectors(va, _tv(b, (3, 6)))
    with pytest.raises(ValueError, match="different positions"):
        add_task_vectors(_tv(torch.randn(1, 2, 8), (3,), (-2, -1)), _tv(torch.randn(1, 2, 8), (3,), (-3, -1)))
    with pytest.raises(ValueError, match="additive"):
        add_task_vectors(va, _tv(b, (3, 5), mode="replace"))


def _push(tiny, char: str, layer: int = 2, scale: float = 400.0) -> TaskVector:
    """A vector that makes the tiny model predict ``char``: its unembedding direction, scaled up."""
    ad = tv.adapt(tiny)
    (tok,) = ad.tokenizer(char, add_special_tokens=False)["input_ids"]
    w = ad.W_U[:, tok].detach().float()
    return TaskVector.for_model(tiny, (scale * w / w.norm())[None, None], (layer,), task=char)


def test_transfer_matrix_matches_direct_evaluation(tiny):
    # A: half the labels start with "x"; B (its own template): every label starts with "z".
    a = tv.Task("A", tuple(tv.Example(w, ("x" if i % 2 else "q") + w) for i, w in enumerate(WORDS)),
                tv.Template(answer="{output}"))
    b = tv.Task("B", tuple(tv.Example(w, "z" + w) for w in WORDS), tv.Template("In: {input}\nOut:", answer="{output}"))
    vectors, tasks = {"A": _push(tiny, "x"), "B": _push(tiny, "z")}, {"A": a, "B": b}
    rows = transfer_matrix(tiny, vectors, tasks, n_test=8, seed=3)
    assert [(r["train_task"], r["test_task"]) for r in rows] == [("A", "A"), ("B", "A"), ("A", "B"), ("B", "B")]
    acc = {(r["train_task"], r["test_task"]): r["accuracy"] for r in rows}
    assert all(r["n"] == 8 for r in rows)
    for name in ("A", "B"):
        test = tasks[name].splits(3).test[:8]
        direct = tv.evaluate(tiny, tasks[name], test, intervention=vectors[name]).accuracy
        assert acc[(name, name)] == direct
    share_x = sum(e.output.startswith("x") for e in a.splits(3).test[:8]) / 8
    assert acc[("A", "A")] == share_x and 0 < share_x < 1  # the seeded test split is the one used
    assert acc[("B", "B")] == 1 and acc[("A", "B")] == 0 and acc[("B", "A")] == 0


@pytest.mark.parametrize("name,facts", [
    ("singular_plural_capitalize", {"bell": "Bells", "daisy": "Daisies", "wrench": "Wrenches"}),
    ("present_past_capitalize", {"jog": "Jogged", "tidy": "Tidied", "chase": "Chased"}),
    ("english_french_feminine", {"king": "reine", "brother": "sœur", "father": "mère"})])
def test_composition_tasks_load(name, facts):
    task = composition_task(name)
    inputs = [e.input for e in task.examples]
    assert task.name == name and len(inputs) >= 40 and len(set(inputs)) == len(inputs)
    assert task.template == tv.Template() and task.scoring == "first_token"
    pairs = {e.input: e.output for e in task.examples}
    assert all(pairs[k] == v for k, v in facts.items())
    assert all(" " not in e.input and " " not in e.output for e in task.examples)
    assert len(task.splits(0, (0.3, 0.1, 0.6)).test) >= 25
    first, second = COMPOSITIONS[name].parts
    if second == "capitalize":  # the first part's answer, capitalized; inputs the first part's data does not have
        assert all(o[0].isupper() and o[1:].islower() for o in pairs.values())
        assert not set(inputs) & {e.input for e in tv.builtin_task(first).examples}
    with pytest.raises(ValueError, match="composition 'x' is not valid; choose one of"):
        composition_task("x")


def test_composition_experiment_runs_every_method(tiny):
    task = tv.Task("comp", tuple(tv.Example(w, "z" + w) for w in WORDS), tv.Template(answer="{output}"))
    zero = TaskVector.for_model(tiny, torch.zeros(1, 1, 64), (2,))
    part = tv.Task("part", tuple(tv.Example(w, "z" + w) for w in WORDS), tv.Template(answer="{output}"))
    rows = composition_experiment(tiny, _push(tiny, "z"), zero, task, parts=("zed", "none"), part_tasks=(part,),
                                  n_test=6, k=2, scoring="first_token")
    composed = [r for r in rows if r["role"] == "composed" and r["scoring"] == "first_token"]
    assert [r["method"] for r in composed] == ["zero_shot", "zed LTV", "none LTV", "sum of both", "icl_2shot"]
    acc = {r["method"]: r["accuracy"] for r in composed}
    assert acc["zed LTV"] == 1 and acc["sum of both"] == 1 and all(r["n"] == 6 for r in rows)
    assert acc["none LTV"] == acc["zero_shot"]  # a zero vector changes nothing
    exact = {r["method"]: r["accuracy"] for r in rows if r["role"] == "composed" and r["scoring"] == "exact_match"}
    assert exact["zed LTV"] == 0  # "z" alone is not "zword"
    assert [(r["task"], r["method"]) for r in rows if r["role"] == "part" and r["scoring"] == "first_token"] == [
        ("part", "zero_shot"), ("part", "icl_2shot"), ("part", "zed LTV")]
    assert next(r for r in rows if r["role"] == "part" and r["method"] == "zed LTV")["accuracy"] == 1
    room = headroom(rows)
    assert room["scoring"] == "first_token" and room["composed"]["vectors"]["zed LTV"] == 1
    assert room["parts"]["part"]["ltv"] == 1 and room["composed"]["gain"] == acc["icl_2shot"] - acc["zero_shot"]


def test_headroom_of_saved_rows():
    methods = (("zero_shot", 0.0), ("english_french LTV", 0.06), ("sum of both", 0.0), ("icl_5shot", 0.0))
    old = [{"method": m, "accuracy": a, "n": 31, "k": 5 if m.startswith("icl") else 0,
            "task": "english_french_feminine", "scoring": "exact_match"} for m, a in methods]
    room = headroom(old)
    assert room["icl_headroom"] is False and room["composed"]["gain"] == 0 and room["parts"] == {}
    new = old + [{**r, "role": "part", "task": "english_french", "accuracy": a} for r, a in
                 ((old[0], 0.01), (old[3], 0.08), (old[1], 0.12))]
    new[3] = {**new[3], "accuracy": 0.5}
    room = headroom(new)
    assert room["icl_headroom"] is True and room["parts"]["english_french"] == pytest.approx(
        {"zero_shot": 0.01, "icl": 0.08, "ltv": 0.12, "gain": 0.07})


def test_figure_builders():
    names, c = cosine_matrix({n: _tv(torch.randn(6)) for n in "abc"})
    fig = gp.cosine_heatmap(names, c)
    assert isinstance(fig, go.Figure) and len(fig.data[0].z) == 3 and all(len(r) == 3 for r in fig.data[0].z)
    assert list(fig.data[0].x) == names and fig.data[0].text[1][1] == "1.00"
    with pytest.raises(ValueError, match="3x3"):
        gp.cosine_heatmap(names, c[:2])
    rows = [{"train_task": a, "test_task": b, "accuracy": 0.1 * i, "n": 5}
            for i, (a, b) in enumerate((a, b) for b in "xyz" for a in "xy")]
    t = gp.transfer_heatmap(rows)
    assert list(t.data[0].y) == ["x", "y"] and list(t.data[0].x) == ["x", "y", "z"]
    assert len(t.data[0].z) == 2 and all(len(r) == 3 for r in t.data[0].z)
    assert t.data[0].z[1][2] == pytest.approx(0.5) and t.data[0].text[1][2] == "0.50"
    comp = [{"method": m, "accuracy": a, "n": 30} for m, a in (("zero_shot", 0.0), ("sum of both", 0.4))]
    bars = gp.composition_bars(comp)
    assert list(bars.data[0].x) == ["zero_shot", "sum of both"] and list(bars.data[0].y) == [0.0, 0.4]
    comp = [{**r, "task": "c", "role": "composed", "scoring": s} for r in comp for s in ("exact_match", "first_token")]
    comp += [{"task": p, "role": "part", "method": m, "accuracy": 0.5, "n": 9, "scoring": "exact_match"}
             for p in ("p", "q") for m in ("zero_shot", "icl_5shot", f"{p} LTV")]
    bars = gp.composition_bars(comp)
    assert [tr.name for tr in bars.data] == ["exact_match", "first_token", "part: zero_shot", "part: icl_5shot",
                                             "part: own LTV"]
    assert list(bars.data[4].x) == ["p", "q"] and bars.layout.annotations[1].text == "each part on its own task"
