"""Several scorings from one forward pass: score_batch_multi against score_batch, the default scorings, and
the per-scoring rows of the mechanism and linear-map experiments (tiny random model, a label-set task whose
labels differ in their first character)."""

import pytest
import torch

import tvmech as tv
from tvmech.analysis import evaluation
from tvmech.analysis.evaluation import (
    default_scorings,
    evaluate_multi,
    resolve_scorings,
    score_batch,
    score_batch_multi,
)
from tvmech.analysis.head_attribution import taylor_scores
from tvmech.analysis.ov import Reconstruction
from tvmech.analysis.tv_map import MapConfig, fit_prompts, fit_tv_map
from tvmech.data.prompts import batches, label_set_ids, make_prompts
from tvmech.data.tasks import Example, Task, Template
from tvmech.experiments import key_heads, linear_map, ov_reconstruction, sinks
from tvmech.interventions.task_vector import TaskVector

WORDS = ["apple", "stone", "river", "cloud", "tiger", "lemon", "chair", "plant", "house", "brick", "grape", "ocean"]
# a closed label set whose labels start with different characters (the char tokenizer splits " yes" into " ", ...)
YESNO = Task("yesno", tuple(Example(f"{w}{i}", "yes" if (i + len(w)) % 2 else "no") for i, w in enumerate(WORDS * 3)),
             Template(query="Q: {input}\nA: ", answer="{output}"), labels=("yes", "no"), scoring="label_set")
BOTH = ("label_set", "first_token")


def _vec(model, layer=1, scale=3.0):
    g = torch.Generator().manual_seed(0)
    return TaskVector.for_model(model, scale * torch.randn(1, 1, tv.adapt(model).d_model, generator=g), (layer,))


def _batch(model, n=8, with_labels=True):
    prompts = make_prompts(YESNO, YESNO.examples[:n], 0)
    return next(iter(batches(tv.adapt(model).tokenizer, YESNO, prompts, n, with_labels=with_labels)))[1]


def test_default_scorings_add_first_token_to_label_set_tasks():
    assert default_scorings(YESNO) == ("label_set", "first_token")
    assert default_scorings(tv.builtin_task("sentiment")) == ("label_set", "first_token")
    assert default_scorings(tv.builtin_task("antonym")) == ("first_token",)
    assert resolve_scorings(YESNO) == BOTH
    assert resolve_scorings(YESNO, ["first_token", "label_set", "first_token"]) == ("first_token", "label_set")
    # label_set is left out for a task without a label set; nothing left is an error
    assert resolve_scorings(tv.builtin_task("antonym"), BOTH) == ("first_token",)
    with pytest.raises(ValueError, match="no closed label set"):
        resolve_scorings(tv.builtin_task("antonym"), ["label_set"])
    with pytest.raises(ValueError, match=r"unknown \['argmax'\].*valid: \['first_token', 'label_set'"):
        resolve_scorings(YESNO, ["argmax"])


@pytest.mark.parametrize("with_vector", [False, True])
def test_one_forward_scores_like_score_batch_under_each_scoring(tiny, monkeypatch, with_vector):
    batch = _batch(tiny)
    vec = _vec(tiny) if with_vector else None
    modes = ("label_set", "first_token", "exact_match")
    single = {s: score_batch(tiny, YESNO, batch, s, vec) for s in modes}
    calls = []
    forward = evaluation.final_residual
    monkeypatch.setattr(evaluation, "final_residual", lambda *a, **k: calls.append(1) or forward(*a, **k))
    multi = evaluation.predict_batch(tiny, YESNO, batch, modes, vec)
    assert len(calls) == 1  # every scoring from one forward pass
    assert list(multi) == list(modes)
    for s in modes:
        assert torch.equal(multi[s][0], single[s][0]) and torch.equal(multi[s][1], single[s][1]), s
    ok = score_batch_multi(tiny, YESNO, batch, modes, vec)
    assert all(torch.equal(ok[s], single[s][0]) for s in modes)
    ids = set(label_set_ids(tv.adapt(tiny).tokenizer, YESNO))
    assert set(multi["label_set"][1].tolist()) <= ids
    # the two argmaxes differ on the random model: full-vocabulary predictions leave the label set
    assert not set(multi["first_token"][1].tolist()) <= ids
    assert torch.equal(multi["exact_match"][0], multi["first_token"][0])  # one-token labels


def test_evaluate_multi_equals_evaluate_per_scoring(tiny):
    queries = YESNO.splits(0).test[:6]
    vec = _vec(tiny)
    multi = evaluate_multi(tiny, YESNO, queries, 0, scorings=BOTH, batch_size=4, intervention=vec)
    for s in BOTH:
        one = tv.evaluate(tiny, YESNO, queries, 0, scoring=s, batch_size=4, intervention=vec)
        assert (multi[s].accuracy, multi[s].correct, multi[s].predictions) == (one.accuracy, one.correct,
                                                                             one.predictions)


def test_reconstruction_rows_one_per_scoring(tiny):
    vec, queries = _vec(tiny), YESNO.splits(0).test[:6]
    rows = ov_reconstruction.reconstruction_accuracy(tiny, vec, YESNO, queries, {"ov_direct": Reconstruction()},
                                                     paths=("v",), batch_size=4)
    methods = ["zero_shot", "ltv", "ov_direct", "path_v"]
    assert [(r["method"], r["scoring"]) for r in rows] == [(m, s) for m in methods for s in BOTH]
    for m in methods:
        pair = [r for r in rows if r["method"] == m]
        assert pair[0]["effect_norm"] == pair[1]["effect_norm"] and pair[0]["cos_attn"] == pair[1]["cos_attn"]
        assert {k: v for k, v in pair[0].items() if k not in ("scoring", "accuracy")} == \
            {k: v for k, v in pair[1].items() if k not in ("scoring", "accuracy")}
    by = {(r["method"], r["scoring"]): r["accuracy"] for r in rows}
    for s in BOTH:
        assert by["ltv", s] == tv.evaluate(tiny, YESNO, queries, 0, scoring=s, intervention=vec).accuracy
        assert by["zero_shot", s] == tv.evaluate(tiny, YESNO, queries, 0, scoring=s).accuracy
    assert rows[2]["effect_norm"] > 0
    from tvmech.plots.mechanism_plots import reconstruction_figure

    fig = reconstruction_figure(rows, "tiny")  # only the primary scoring is drawn, and the title says which
    assert "label set" in fig.layout.title.text and len(fig.data) == len(methods)
    assert fig.data[1].y[0] == by["ltv", "label_set"]


def test_key_vs_random_rows_one_per_scoring(tiny):
    vec, queries = _vec(tiny), YESNO.splits(0).test[:6]
    scores = taylor_scores(tiny, vec, YESNO, make_prompts(YESNO, YESNO.examples[:4], 0))
    rows = key_heads.key_vs_random(tiny, vec, YESNO, queries, scores, frac=0.25, n_random=2, kinds=("zero",),
                                   batch_size=4)
    assert len(rows) == 2 * (1 + 1 + 2)  # (none, key, 2 random sets) x 2 scorings
    assert [r["scoring"] for r in rows] == list(BOTH) * 4
    base = {r["scoring"]: r["accuracy"] for r in rows if r["set"] == "none"}
    assert base == {s: tv.evaluate(tiny, YESNO, queries, 0, scoring=s, intervention=vec).accuracy
                    for s in BOTH}
    from tvmech.plots.mechanism_plots import key_ablation_figure

    fig = key_ablation_figure(rows, "tiny")
    assert "label set" in fig.layout.title.text and fig.data[0].y[0] == base["label_set"]


def test_linear_report_keeps_primary_flat_and_every_scoring_in_a_dict(tiny):
    batch = fit_prompts(tiny, YESNO, YESNO.examples[:2])
    theta = torch.randn(64, generator=torch.Generator().manual_seed(1))
    fit = fit_tv_map(tiny, batch, theta, 2, MapConfig(n_samples=64, n_heldout=0, solver="lstsq"))
    queries = YESNO.splits(0).test[:6]
    rep = linear_map.reconstruction_report(tiny, YESNO, queries, fit)
    assert rep["scoring"] == "label_set" and list(rep["acc_by_scoring"]) == list(BOTH)
    primary = rep["acc_by_scoring"]["label_set"]
    assert (rep["acc_zero_shot"], rep["acc_original"], rep["acc_reconstructed"]) == \
        (primary["zero_shot"], primary["original"], primary["reconstructed"])
    assert rep["acc_by_scoring"]["first_token"]["zero_shot"] == \
        tv.evaluate(tiny, YESNO, queries, 0, scoring="first_token").accuracy
    first = linear_map.reconstruction_report(tiny, YESNO, queries, fit, scorings=("first_token",))
    assert first["acc_original"] == rep["acc_by_scoring"]["first_token"]["original"]
    from tvmech.plots import lens_plots

    rows = [{**rep, "task": "yesno", "layer": 2, "r2_heldout": 0.9}]
    fig = lens_plots.reconstruction_figure(rows)  # new rows draw like the old ones (the flat primary keys)
    assert fig.data[0].y[0] == rep["acc_original"]


def test_configs_check_scorings_and_save_them():
    for cls, field in ((ov_reconstruction.Config, "mechanism scorings"), (key_heads.Config, "mechanism scorings"),
                       (linear_map.Config, "linear scorings")):
        with pytest.raises(ValueError, match=rf"{field} \['first_token', 'bogus'\].*unknown \['bogus'\].*label_set"):
            cls(scorings=("first_token", "bogus"))
        assert cls(scorings=("first_token",)).scorings == ("first_token",)
        assert cls().resolve(30).settings()["scorings"] is None  # saved even while None: older numbers recompute
    assert ov_reconstruction.Config(scorings=BOTH).resolve(30).settings()["scorings"] == list(BOTH)
    # the sinks have no accuracies: their settings leave it out, their key-head part keeps it
    cfg = sinks.Config(scorings=BOTH).resolve(30)
    assert "scorings" not in cfg.settings() and cfg.key_heads_config().settings()["scorings"] == list(BOTH)


def test_the_command_line_sets_the_scorings():
    from tvmech.pipeline import cli

    args = cli.parse_args(["--mech-scorings", "first_token", "--linear-scorings", "label_set", "first_token"])
    c = args.configs
    assert c["ov_circuits"].scorings == c["key_heads"].scorings == c["sinks"].scorings == ("first_token",)
    assert c["linear"].scorings == BOTH and c["icl"] is not None
    with pytest.raises(SystemExit):
        cli.parse_args(["--mech-scorings", "bogus"])
