"""Issue 13: scoring refuses an empty query list (it used to return accuracy NaN), a bad batch size, and prompts
longer than the model's context (named by index, start of text, token length and context length)."""

import pytest

import tvmech as tv
from tvmech.analysis.evaluation import (
    check_context,
    evaluate_multi,
    evaluate_prompts,
    evaluate_prompts_multi,
    last_logprobs,
)
from tvmech.data.prompts import label_ids, make_prompts
from tvmech.data.tasks import Example

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:20], TASK.template)
EMPTY = r"task 'capitalize': nothing to score: the list of queries \(prompts\) is empty"


def test_empty_queries_are_refused(tiny):
    with pytest.raises(ValueError, match=EMPTY):
        tv.evaluate(tiny, SMALL, [])
    with pytest.raises(ValueError, match=EMPTY):
        evaluate_multi(tiny, SMALL, [], scorings=("first_token", "exact_match"))
    with pytest.raises(ValueError, match=EMPTY):
        evaluate_prompts(tiny, SMALL, [])
    with pytest.raises(ValueError, match=EMPTY):
        evaluate_prompts_multi(tiny, SMALL, (), ("first_token",))
    with pytest.raises(ValueError, match=EMPTY):
        last_logprobs(tiny, SMALL, [])


def test_bad_batch_size(tiny):
    with pytest.raises(TypeError, match=r"batch_size must be an integer, got 2\.5 \(float\)"):
        tv.evaluate(tiny, SMALL, SMALL.examples[:4], batch_size=2.5)
    with pytest.raises(ValueError, match=r"batch_size must be >= 1 \(an integer\), got 0"):
        tv.evaluate(tiny, SMALL, SMALL.examples[:4], batch_size=0)


def test_accuracy_of_a_non_empty_list_is_unchanged(tiny):
    res = tv.evaluate(tiny, SMALL, SMALL.examples[:6], batch_size=4)
    assert res.n == 6 and 0 <= res.accuracy <= 1


LONG = Example("z" * 600, "Z")  # one token per character with the tiny tokenizer: over 512 positions


def test_prompt_longer_than_the_context_is_refused(tiny):
    queries = [*SMALL.examples[:3], LONG]
    message = r"prompt 3 \('.*zzzz\.\.\.'\) is 6\d\d tokens long, longer than the model's context of 512 tokens"
    with pytest.raises(ValueError, match=message):
        tv.evaluate(tiny, SMALL, queries)
    with pytest.raises(ValueError, match=message):
        evaluate_multi(tiny, SMALL, queries, scorings=("exact_match",))
    with pytest.raises(ValueError, match=message):
        last_logprobs(tiny, SMALL, make_prompts(SMALL, queries, 0))


def test_demonstrations_count_and_labels_count_with_teacher_forcing(tiny):
    ad = tv.adapt(tiny)
    text = make_prompts(SMALL, [Example("a", "b" * 50)], 0)[0].text
    fits = Example("y" * (ad.n_ctx - len(text) + 1), "b" * 50)  # prompt of exactly n_ctx tokens
    prompts = make_prompts(SMALL, [fits], 0)
    check_context(tiny, SMALL, prompts)  # the prompt alone fits
    n_label = len(label_ids(ad.tokenizer, SMALL, "b" * 50))
    with pytest.raises(ValueError, match=rf"is {ad.n_ctx + n_label} tokens long, longer than the model's context"):
        check_context(tiny, SMALL, prompts, with_labels=True)  # exact match feeds the label tokens too
    short = [Example("w" * 200, "W")] * 3
    tv.evaluate(tiny, SMALL, short[:1])
    with pytest.raises(ValueError, match=r"prompt 0 .* longer than the model's context of 512 tokens"):
        tv.evaluate(tiny, SMALL, short[:1], k=2, demos=[Example(c * 200, c.upper()) for c in "vut"])
