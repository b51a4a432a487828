"""README claims: the verdict rules, every claim on the committed JSON, verdicts that flip when the JSON crosses
a rule, and the agreement-with-the-paper table."""

import copy
import json
import math
import re
from pathlib import Path

import pytest

from tvmech.pipeline import readme
from tvmech.pipeline.claims import CLAIMS, estimate, exceeds, outside_null
from tvmech.pipeline.claims.core import VERDICTS, all_of, const, majority
from tvmech.pipeline.claims.paper import FILES, RESULTS

ROOT = Path(__file__).resolve().parents[3]
FIGURES = ROOT / "figures"
README_TEXT = (ROOT / "README.md").read_text(encoding="utf-8")
USED = re.findall(r"<!-- claim: ([A-Za-z0-9_.@/-]+) -->", README_TEXT)


def _load(name: str, folder: Path = FIGURES):
    """The claim's (tables, metas) as the README region loads them (``NAME@SUB``: ``folder/SUB``)."""
    base, _, sub = name.partition("@")
    return readme.load_json(folder / sub if sub else folder, CLAIMS[base].files, name, folder)


def _evaluate(name: str, tables, metas):
    return CLAIMS[name.partition("@")[0]](tables, metas)


def test_estimate_uses_seeds_then_binomial_then_nothing():
    seeds = [{"accuracy": a, "run_seed": s, "n": 10} for s, a in [(0, 0.2), (0, 0.4), (1, 0.6), (1, 0.8)]]
    e = estimate(seeds)
    assert (e.mean, e.basis, e.runs) == (pytest.approx(0.5), "seeds", 2)
    assert e.sd == pytest.approx(math.sqrt(2 * 0.2 ** 2))  # per-seed means 0.3 and 0.7
    one = estimate([{"accuracy": 0.5, "n": 100}, {"accuracy": 0.1, "n": 50}])
    q1, q2 = 51 / 102, 6 / 52  # Laplace: (x + 1) / (n + 2)
    assert one.basis == "binomial" and one.sd == pytest.approx(math.sqrt(q1 * (1 - q1) / 100 + q2 * (1 - q2) / 50) / 2)
    assert estimate([{"value": 0.5}], "value").sd is None
    assert math.isnan(estimate([], "accuracy").mean)


def test_exceeds_holds_only_beyond_two_pooled_sds_and_is_untested_without_a_spread():
    a = estimate([{"x": 0.50, "run_seed": 0}, {"x": 0.54, "run_seed": 1}], "x", False)  # sd 0.0283
    b = estimate([{"x": 0.40, "run_seed": 0}, {"x": 0.44, "run_seed": 1}], "x", False)
    threshold = 2 * math.sqrt((a.sd ** 2 + b.sd ** 2) / 2)
    assert exceeds(a, b).threshold == pytest.approx(threshold) and exceeds(a, b).verdict == "holds"  # 0.10 > 0.057
    near = estimate([{"x": 0.40 + 0.05, "run_seed": 0}, {"x": 0.44 + 0.05, "run_seed": 1}], "x", False)
    assert exceeds(near, b).verdict == "does not hold"  # 0.05 <= 0.057
    assert exceeds(b, a).verdict == "does not hold"  # the direction matters
    assert exceeds(a, const(0.45)).threshold == pytest.approx(2 * a.sd)  # a constant has no spread of its own
    assert exceeds(estimate([{"x": 1.0}], "x", False), b).verdict == "not tested"
    assert outside_null(97.6) == "holds" and outside_null(97.4) == "does not hold"
    assert outside_null(2.0, "below") == "holds" and outside_null(float("nan")) == "not tested"
    assert all_of(["holds", "holds"]) == "holds" and all_of(["holds", "does not hold"]) == "does not hold"
    assert all_of([]) == "not tested" and majority(["holds", "holds", "does not hold"]) == "holds"


def test_every_claim_in_readme_renders_on_the_committed_json():
    assert USED, "README has no claim regions"
    for name in USED:
        res = _evaluate(name, *_load(name))
        assert res.verdict in VERDICTS, name
        statement = CLAIMS[name.partition("@")[0]].statement
        assert res.sentence.startswith(f"**{statement}: {res.verdict}.** "), name
        assert "\n" not in res.sentence and "nan" not in res.sentence, name


def test_every_registered_claim_is_used_by_readme_or_the_paper_table():
    used = {n.partition("@")[0] for n in USED} | {name for r in RESULTS for key in ("smollm2", "gemma3")
                                                  for name, _, _ in getattr(r, key)}
    assert set(CLAIMS) <= used, sorted(set(CLAIMS) - used)


def _perturbed(name: str, stem: str, edit):
    tables, metas = _load(name)
    tables = copy.deepcopy(tables)
    tables[stem] = [edit(dict(r)) for r in tables[stem]]
    return _evaluate(name, tables, metas)


def test_ov_direct_flips_to_holds_when_its_accuracy_is_raised_past_the_rule():
    assert _evaluate("ov_direct", *_load("ov_direct")).verdict == "does not hold"

    def lift(r):
        if r["method"] == "ov_direct":
            r["accuracy"] = min(1.0, r["accuracy"] + 0.3)
        return r
    res = _perturbed("ov_direct", "ov_reconstruction", lift)
    assert res.verdict == "holds" and res.numbers["full"] > res.numbers["zero_full"] + 0.25


def test_mlp_path_does_not_hold_once_the_value_path_carries_as_much():
    assert _evaluate("mlp_path", *_load("mlp_path")).verdict == "holds"
    mlp = {(r["task"], r["scoring"], r["run_seed"]): r["accuracy"]
           for r in _load("mlp_path")[0]["ov_reconstruction"] if r["method"] == "path_mlp"}

    def swap(r):
        if r["method"] == "path_v":
            r["accuracy"] = mlp[(r["task"], r["scoring"], r["run_seed"])]
        return r
    assert _perturbed("mlp_path", "ov_reconstruction", swap).verdict == "does not hold"


def test_key_heads_verdict_flips_when_key_ablation_costs_what_random_costs():
    name = "key_heads_vs_random"
    assert _evaluate(name, *_load(name)).verdict == "holds"
    tables, metas = _load(name)
    rand = {}
    for r in tables["key_heads_ablation"]:
        if r["set"] == "random":
            rand.setdefault((r["task"], r["kind"], r["scoring"], r["run_seed"]), []).append(r["accuracy"])

    def same(r):
        if r["set"] == "key":
            v = rand[(r["task"], r["kind"], r["scoring"], r["run_seed"])]
            r["accuracy"] = sum(v) / len(v)
        return r
    assert _perturbed(name, "key_heads_ablation", same).verdict == "does not hold"


def test_wtheta_claim_fails_when_wtheta_is_at_zero_shot_and_alignment_holds_past_the_null():
    def flat(r):
        r["acc_reconstructed"] = r["acc_zero_shot"]
        return r
    assert _evaluate("wtheta_final@gemma3", *_load("wtheta_final@gemma3")).verdict == "holds"
    tables, metas = _load("wtheta_final@gemma3")
    tables = {"linear_map": [flat(dict(r)) for r in tables["linear_map"]]}
    assert _evaluate("wtheta_final", tables, metas).verdict == "does not hold"

    def far(r):
        r["rot_null_percentile"] = 99.0
        return r
    assert _evaluate("rotation_alignment", *_load("rotation_alignment")).verdict == "does not hold"
    assert _perturbed("rotation_alignment", "linear_map", far).verdict == "holds"


def test_transfer_lists_every_lifted_off_diagonal_pair_and_picks_up_a_new_one():
    res = _evaluate("transfer_specific", *_load("transfer_specific"))
    for pair, acc in [("singular_plural → masculine_feminine", "0.26"), ("present_past → masculine_feminine", "0.22"),
                      ("antonym → masculine_feminine", "0.19"), ("english_french → masculine_feminine", "0.16"),
                      ("masculine_feminine → antonym", "0.43")]:
        assert f"{pair} {acc}" in res.sentence
    assert ("capitalize", "country_capital") not in res.numbers["lifted"]

    def lift(r):
        if (r["train_task"], r["test_task"]) == ("capitalize", "country_capital"):
            r["accuracy"] = 0.5
        return r
    assert ("capitalize", "country_capital") in _perturbed("transfer_specific", "task_transfer", lift).numbers["lifted"]


def test_single_run_claims_use_the_binomial_sd(tmp_path):
    rows = [{"task": t, "k": k, "accuracy": a, "n": n, "scoring": "first_token"}
            for t, n in (("antonym", 100), ("capitalize", 100)) for k, a in ((0, 0.0), (5, 0.10))]
    res = CLAIMS["icl_word_tasks"]({"icl_accuracy": rows}, {"icl_accuracy": {}})
    assert res.verdict == "holds"  # 0.10 vs 0: sds 0.021 and 0.007, 2 x pooled 0.031 < 0.10
    rows = [{**r, "accuracy": 0.01 if r["k"] else 0.0} for r in rows]  # sds 0.0098, 0.0070: 2 x 0.0085 > 0.01
    assert CLAIMS["icl_word_tasks"]({"icl_accuracy": rows}, {"icl_accuracy": {}}).verdict == "does not hold"


def test_paper_agreement_table_has_a_row_per_result_and_a_verdict_per_model():
    text = readme.render("paper_agreement", FIGURES)
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(RESULTS)
    for r, line in zip(RESULTS, lines[1:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == r.result and cells[1] == "see paper"
        assert {cells[3], cells[5]} <= {f"**{v}**" for v in VERDICTS}
    for stem in FILES:
        file, _, sub = stem.rstrip("?").partition("@")
        if (FIGURES / sub / f"{file}.json").is_file():
            assert f"figures/{sub + '/' if sub else ''}{file}.json" in text


def test_a_claim_without_its_data_is_not_tested():
    res = CLAIMS["robustness_more_sites"]({"robustness": [{"configuration": "other", "accuracy": 0.5, "n": 9}]}, {})
    assert res.verdict == "not tested" and "not in the JSON" in res.sentence
    json.dumps(res.numbers)  # numbers stay JSON-serialisable


def test_rotation_scaling_is_judged_against_its_random_vector_null_only_where_the_rows_hold_one():
    """Rows without a null: not tested. When random vectors of θ's norm fall as far as θ from the first layer to
    the last, the trend is the layers' (does not hold); when their rotation distance stays put, it is θ's."""
    rows = []
    for seed in (0, 1, 2):
        for task in ("a", "b", "c"):
            for layer, dist in ((3, 1.4), (9, 1.0), (15, 0.6)):
                rows.append({"task": task, "layer": layer, "run_seed": seed, "rotation_distance": dist + 0.01 * seed,
                             "gain": 10.0 / (1 + layer), "det_q": 1.0})
    assert CLAIMS["rotation_scaling"]({"linear_map": rows}, {}).verdict == "not tested"
    same = [{**r, "jac_rotation_distance": r["rotation_distance"], "jac_gain": r["gain"],
             "null_jac_rotation_distance": [r["rotation_distance"] + d for d in (-0.02, -0.01, 0.01, 0.02)],
             "null_jac_gain": [r["gain"] * f for f in (0.5, 0.9, 1.1, 2.0)]} for r in rows]
    shared = CLAIMS["rotation_scaling"]({"linear_map": same}, {})
    assert shared.verdict == "does not hold" and shared.numbers["fall_null"] == pytest.approx(0.8, abs=1e-9)
    flat = [{**r, "null_jac_rotation_distance": [1.38 + d for d in (-0.02, -0.01, 0.01, 0.02)]} for r in same]
    own = CLAIMS["rotation_scaling"]({"linear_map": flat}, {})
    assert own.verdict == "holds" and own.numbers["fall_ltv"] == pytest.approx(0.8, abs=0.02)
    # the gain: θ's far above every draw at every layer holds, inside the draws does not
    assert CLAIMS["tv_gain"]({"linear_map": same}, {}).verdict == "does not hold"
    big = [{**r, "jac_gain": 10 * r["gain"]} for r in same]
    assert CLAIMS["tv_gain"]({"linear_map": big}, {}).verdict == "holds"
