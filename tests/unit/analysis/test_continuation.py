"""Generation accuracy: the greedy continuation starts with the label (leading whitespace ignored), scored on
batched generation that equals one prompt at a time, with the intervention at each prompt's query."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis.continuation import generation_accuracy, starts_with_label
from tvmech.data.tasks import Example, Task

QUERIES = ["cat", "dog", "sun", "tree", "moon", "fish"]


def test_the_rule():
    assert starts_with_label(" Paris, France", "Paris")
    assert starts_with_label("\n  Paris", " Paris ")
    assert starts_with_label("Parisian", "Paris")  # what follows the label is not read
    assert not starts_with_label(" Pari", "Paris")
    assert not starts_with_label(" paris", "Paris")
    assert not starts_with_label(" Paris", "   ")  # an empty label is never correct


def _greedy(model, task, n, intervention=None):
    prompts = tv.make_prompts(task, [Example(q, "?") for q in QUERIES], 0)
    return [g.text for g in tv.generate(model, [p.text for p in prompts], n, intervention=intervention,
                                        batch_size=1)]


def test_accuracy_scores_what_the_model_writes(tiny):
    """Labels made from the tiny model's own greedy continuations score 1 (half of them: 1/2), others 0."""
    plain = Task("probe", tuple(Example(q, "?") for q in QUERIES))
    texts = _greedy(tiny, plain, 4)
    own = [t.strip()[:2] or "?" for t in texts]
    assert all(own), texts
    task = Task("own", tuple(Example(q, o) for q, o in zip(QUERIES, own)))
    res = generation_accuracy(tiny, task, task.examples, max_new_tokens=4)
    assert res.scoring == "generation" and res.n == len(QUERIES) and res.predictions == texts
    assert res.correct == [starts_with_label(t, o) for t, o in zip(texts, own)] and res.accuracy == 1.0
    half = Task("half", tuple(Example(q, o if i % 2 else o + "\u00e9") for i, (q, o) in enumerate(zip(QUERIES, own))))
    acc = generation_accuracy(tiny, half, half.examples, max_new_tokens=4).accuracy
    assert acc == pytest.approx(sum(starts_with_label(t, e.output) for t, e in zip(texts, half.examples)) / 6)
    assert 0 < acc < 1


def test_accuracy_carries_the_intervention(tiny):
    ad = tv.adapt(tiny)
    inj = tv.Injection.single(torch.randn(ad.d_model, generator=torch.Generator().manual_seed(0)) * 3, 1)
    plain = Task("probe", tuple(Example(q, "?") for q in QUERIES))
    steered = _greedy(tiny, plain, 3, inj)
    assert steered != _greedy(tiny, plain, 3)
    task = Task("steered", tuple(Example(q, t.strip()[:1] or "?") for q, t in zip(QUERIES, steered)))
    res = generation_accuracy(tiny, task, task.examples, intervention=inj, max_new_tokens=3)
    assert res.predictions == steered
    assert res.correct == [starts_with_label(t, e.output) for t, e in zip(steered, task.examples)]


def test_default_length_and_checks(tiny, monkeypatch):
    from tvmech.analysis import continuation

    asked = []

    def spy(*args, **kw):
        asked.append(args[2])
        return tv.generate(*args, **kw)

    monkeypatch.setattr(continuation, "generate", spy)
    task = Task("t", tuple(Example(q, "abc") for q in QUERIES))  # label " abc": 4 characters, 4 tokens
    generation_accuracy(tiny, task, task.examples[:2])
    assert asked == [5]  # the longest label's tokens, plus one
    with pytest.raises(ValueError, match="nothing to score"):
        generation_accuracy(tiny, task, [])
    with pytest.raises(ValueError, match="beyond the model's context of 512 tokens"):
        generation_accuracy(tiny, task, task.examples[:1], max_new_tokens=600)


def test_role_positions_are_placed_per_prompt(tiny):
    """A vector at each prompt's ``input_first`` token (as evaluate places it): batched, equal to one at a time."""
    from tvmech.data.prompts import prompt_roles

    ad = tv.adapt(tiny)
    inj = tv.Injection(torch.randn(1, 1, ad.d_model, generator=torch.Generator().manual_seed(3)) * 30, (0,),
                       ("input_first",))
    task = Task("t", tuple(Example(q, q.upper()) for q in QUERIES))
    prompts = tv.make_prompts(task, task.examples, 2, task.examples, seed=1)
    roles = [prompt_roles(ad.tokenizer, p, ad.tokenizer(p.text)["input_ids"]) for p in prompts]
    alone = [tv.generate(tiny, p.text, 3, intervention=inj, roles=[r])[0].text for p, r in zip(prompts, roles)]
    res = generation_accuracy(tiny, task, task.examples, 2, task.examples, seed=1, intervention=inj, max_new_tokens=3)
    assert res.predictions == alone
    assert alone != [g.text for g in tv.generate(tiny, [p.text for p in prompts], 3)]
    with pytest.raises(ValueError, match="has no role positions"):
        tv.generate(tiny, prompts[0].text, 3, intervention=inj)
