"""The robustness table: its configurations (positions by role, every 2nd layer), the LTV, Vanilla TV and FV rows
with their sites, undefined roles, and the Vanilla TV at sites against the one-site Vanilla TV."""

import pytest
import torch

import tvmech as tv
from tvmech.data.prompts import batches, make_prompts
from tvmech.data.tasks import Example, Task, Template
from tvmech.experiments import robustness
from tvmech.experiments.robustness import configurations, mean_site_states, robustness_table, vanilla_at_sites
from tvmech.methods.learned import LTVConfig
from tvmech.methods.vanilla import vanilla_task_vector

TASK = tv.builtin_task("capitalize")
SMALL = Task("capitalize", TASK.examples[:40], TASK.template)
# the input starts a zero-shot prompt: no token before it
PAIRS = Task("pairs", tuple(Example(f"{a} and {b}", "same" if a == b else "other")
                            for a in ("red", "blue", "tall", "big", "odd") for b in ("red", "blue", "tall", "big")),
             Template("{input}\nRelation:"), labels=("same", "other"))
KW = dict(mid=1, k=2, config=LTVConfig(steps=2, batch_size=4), n_test=4, fv_prompts=2, progress=False)


def test_configurations_by_role_and_every_second_layer():
    confs = configurations(30, k=5)
    assert list(confs) == list(robustness.CONFIGURATIONS)
    assert confs["every2_query"].layers == tuple(range(0, 30, 2)) == confs["every2_last5"].layers
    assert confs["input_first"].positions == ("input_first",) and confs["input_first"].layers == (15,)
    assert confs["before_input"].positions == ("before_input",) and confs["query"].positions == ("query",)
    assert confs["last5"].positions == (-5, -4, -3, -2, -1)
    assert confs["kshot_query"].k == 5 and all(c.k == 0 for n, c in confs.items() if n != "kshot_query")
    assert confs["input_first"].name == "layer 15, input's first token"
    assert configurations(3)["query"].layers == (1,) and configurations(3)["every2_query"].layers == (0, 2)


def test_every_configuration_and_method_trains_and_evaluates(tiny):
    rows = robustness_table(tiny, [SMALL], **KW)
    confs = configurations(3, mid=1, k=2)
    want = [(c.name, m) for c in confs.values() for m in (("ltv", "vanilla", "fv") if c.k == 0 else ("ltv",))]
    assert [(r["configuration"], r["method"]) for r in rows] == want
    for r in rows:
        c = next(c for c in confs.values() if c.name == r["configuration"])
        assert r["layers"] == list(c.layers) and r["positions"] == list(c.positions) and r["k"] == c.k
        assert 0 <= r["accuracy"] <= 1 and r["n"] == 4 and r["norm"] > 0
        assert r["n_sites"] == len(c.layers) * len(c.positions)
        assert r["n_vectors"] == (1 if r["method"] == "fv" else r["n_sites"])
        assert r["prompts"] == {"ltv": len(SMALL.splits(0).train), "vanilla": 2 * 20, "fv": 4}[r["method"]]


def test_an_undefined_role_gives_a_row_without_accuracy(tiny):
    rows = robustness_table(tiny, [PAIRS], names=["before_input", "input_first"], methods=("ltv", "vanilla"), **KW)
    before = [r for r in rows if r["positions"] == ["before_input"]]
    assert len(before) == 2 and all(r["accuracy"] is None and "before_input is undefined" in r["undefined"]
                                    for r in before)
    first = [r for r in rows if r["positions"] == ["input_first"]]
    assert len(first) == 2 and all(r["accuracy"] is not None and "undefined" not in r for r in first)


def test_subsets_and_bad_names(tiny):
    rows = robustness_table(tiny, [SMALL], names=["kshot_query"], methods=("ltv", "fv"), **KW)
    assert [(r["configuration"], r["method"]) for r in rows] == [("layer 1, query, on a 2-shot prompt", "ltv")]
    with pytest.raises(ValueError, match="every3_query.*valid"):
        robustness_table(tiny, [SMALL], names=["every3_query"], **KW)
    with pytest.raises(ValueError, match=r"unknown robustness method\(s\) \['lora'\]"):
        robustness_table(tiny, [SMALL], methods=("lora",), **KW)
    with pytest.raises(ValueError, match="configurations"):
        robustness.Config(configurations=("every3_query",))


def test_vanilla_at_sites_is_the_vanilla_tv_at_one_site_and_reads_each_prompt_s_role(tiny):
    sp = SMALL.splits(0)
    queries = list(sp.train)[:6]
    one = vanilla_at_sites(tiny, SMALL, (1,), ("query",), queries, sp.train, k=2, seed=0)
    ref = vanilla_task_vector(tiny, SMALL, 1, queries, sp.train, k=2, n=6, seed=0).vectors
    torch.testing.assert_close(one, ref, rtol=1e-5, atol=1e-5)
    ad = tv.adapt(tiny)
    prompts = make_prompts(SMALL, queries, 2, sp.train, seed=0)
    got = mean_site_states(tiny, SMALL, prompts, (2, 0), ("input_first", -2))
    want = torch.zeros_like(got)
    with torch.no_grad():
        for _, b in batches(ad.tokenizer, SMALL, prompts, 1):
            for i, layer in enumerate((2, 0)):
                h = ad.residual(b.tokens, layer)[0]
                want[i, 0] += h[int(b.roles["input_first"][0])] / len(prompts)
                want[i, 1] += h[int(b.query_pos[0]) - 1] / len(prompts)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
