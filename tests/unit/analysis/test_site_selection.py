"""select_site: its dev table equals per-candidate evaluation, and the choice follows the dev split, not the test."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.site_selection import select_site
from tvmech.data.tasks import Example


def _task(outputs: str) -> tv.Task:
    # no space before the answer: with the character tokenizer the label's first token is the letter itself
    return tv.Task("planted", tuple(Example(f"w{i}", o) for i, o in enumerate(outputs)), tv.Template(answer="{output}"))


def _towards(ad, text: str, scale: float = 60.0) -> torch.Tensor:
    tok = ad.tokenizer(text, add_special_tokens=False)["input_ids"][0]
    return scale * ad.W_U[:, tok].detach().float() / ad.W_U[:, tok].norm()


def test_the_dev_table_equals_evaluation_of_each_candidate(tiny):
    task = tv.builtin_task("capitalize")
    dev = list(task.examples[:12])
    g = torch.Generator().manual_seed(0)
    vecs = {0: torch.randn(64, generator=g), 2: torch.randn(64, generator=g)}
    choice = select_site(tiny, task, vecs, dev, alphas=(0.5, 4.0), max_rows=30)  # several passes per layer
    assert [(r["layer"], r["alpha"]) for r in choice.table] == [(0, 0.5), (0, 4.0), (2, 0.5), (2, 4.0)]
    for r in choice.table:
        vec = tv.TaskVector.for_model(tiny, (r["alpha"] * vecs[r["layer"]])[None, None], (r["layer"],))
        assert r["accuracy"] == pytest.approx(tv.evaluate(tiny, task, dev, intervention=vec).accuracy)
    assert choice.accuracy == max(r["accuracy"] for r in choice.table) and choice.n_dev == 12


def test_the_choice_follows_the_dev_split_not_the_test(tiny):
    ad = tv.adapt(tiny)
    # the last layer's vector pushes towards "a", layer 1's towards "b"; dev labels are "a", test labels "b"
    vecs = {1: _towards(ad, "b"), 2: _towards(ad, "a")}
    dev, test = _task("aaaaaaaa"), _task("bbbbbbbb")
    on_dev = select_site(tiny, dev, vecs, dev.examples)
    on_test = select_site(tiny, test, vecs, test.examples)
    assert on_dev.layer == 2 and on_dev.accuracy == 1.0
    assert on_test.layer != on_dev.layer  # the planted case: a test-chosen site would differ


def test_dev_must_be_disjoint_and_inputs_valid(tiny):
    task = tv.builtin_task("capitalize")
    v = {0: torch.zeros(64)}
    with pytest.raises(ValueError, match="dev input"):
        select_site(tiny, task, v, task.examples[:5], disjoint_from=task.examples[4:9])
    with pytest.raises(ValueError, match="alpha"):
        select_site(tiny, task, v, task.examples[:5], alphas=(0.0,))
    with pytest.raises(ValueError, match="at least one layer"):
        select_site(tiny, task, {}, task.examples[:5])
