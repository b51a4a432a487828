import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import last_logprobs
from tvmech.data.prompts import encode, label_ids


def test_zero_and_k_shot_prompts():
    task = tv.builtin_task("antonym")
    sp = task.splits(0)
    zero = tv.make_prompts(task, sp.test[:3], 0)
    assert [p.text for p in zero] == [f"Q: {e.input}\nA:" for e in sp.test[:3]]
    five = tv.make_prompts(task, sp.test[:3], 5, sp.train, seed=1)
    for p, q in zip(five, sp.test[:3]):
        blocks = p.text.split("\n\n")
        assert len(blocks) == 6 and blocks[-1] == f"Q: {q.input}\nA:"
        assert all("\nA: " in b for b in blocks[:5]) and f"Q: {q.input}\n" not in blocks[:5]
    assert five == tv.make_prompts(task, sp.test[:3], 5, sp.train, seed=1)


def test_k_larger_than_demonstrations():
    task = tv.builtin_task("antonym")
    with pytest.raises(ValueError, match="k=10 demonstrations requested but only 3"):
        tv.make_prompts(task, task.examples[:1], 10, task.examples[1:4])


def test_label_tokenizing_to_nothing(tiny):
    task = tv.Task("t", (tv.Example("x", "y"),), template=tv.Template(answer="{output}"))
    with pytest.raises(ValueError, match="tokenizes to nothing"):
        label_ids(tiny.tokenizer, task, "")


def test_batch_targets_and_query_positions(tiny):
    task = tv.builtin_task("capitalize")
    prompts = tv.make_prompts(task, task.examples[:4], 2, task.examples[4:20])
    b = encode(tiny.tokenizer, task, prompts, with_labels=True)
    for i, p in enumerate(prompts):
        n = len(p.text)  # one token per character
        lab = f" {p.label}"
        assert int(b.query_pos[i]) == n - 1
        assert tiny.tokenizer.decode(b.tokens[i, : n + len(lab)]) .replace(" ", "") == (p.text + lab).replace(" ", "")
        assert b.label_mask[i].sum() == len(lab) and int(b.label_first[i]) == int(b.tokens[i, n])


def test_padded_batch_matches_single_prompts(tiny):
    task = tv.builtin_task("country_capital")
    prompts = tv.make_prompts(task, task.examples[:6], 2, task.examples[6:40], seed=3)
    lengths = {len(p.text) for p in prompts}
    assert len(lengths) > 1  # the batch really is padded
    together = last_logprobs(tiny, task, prompts)
    alone = torch.cat([last_logprobs(tiny, task, [p]) for p in prompts])
    assert torch.allclose(together, alone, atol=1e-5)
