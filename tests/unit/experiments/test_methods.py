"""The methods comparison and the LTV recipes end to end on the tiny model; their steps, figures and README
tables."""

import pytest

import tvmech as tv
from tvmech.experiments import ltv_recipes
from tvmech.experiments import method_comparison as methods
from tvmech.pipeline import readme_methods
from tvmech.pipeline.steps import STEPS
from tvmech.plots.methods_plots import methods_figure, recipes_figure

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)
CFG = methods.Config(layers=(0, 2), alphas=(1.0, 3.0), budget=6, ltv_steps=3, fv_prompts=2, n_dev=5, n_test=5, k=1)


@pytest.fixture(scope="module")
def compared(tiny):
    return methods.compare_methods(tiny, SMALL, CFG, progress=False)


def test_every_method_is_scored_at_its_dev_choice(compared):
    rows, dev = compared
    assert {r["method"] for r in rows} == {"zero_shot", "icl_1shot", *methods.METHODS}
    assert all(r["budget"] == 6 and r["n_dev"] == 5 and r["n"] == 5 for r in rows)
    assert {r["method"]: r["source"] for r in rows if "source" in r} == {**dict.fromkeys(methods.METHODS, 6), "fv": 2}
    for m in methods.METHODS:
        table = [r for r in dev if r["method"] == m]
        assert len(table) == 2 * (1 if m == "ltv" else 2)  # layers x alphas (the LTV at α = 1)
        chosen = [r for r in table if r["chosen"]]
        best = max(r["accuracy"] for r in table)
        row = next(r for r in rows if r["method"] == m)
        assert len(chosen) == 1 and chosen[0]["accuracy"] == best == row["dev_accuracy"]
        assert (row["layer"], row["alpha"]) == (chosen[0]["layer"], chosen[0]["alpha"])
    assert all(r["layer"] is None for r in rows if r["method"] in ("zero_shot", "icl_1shot"))


def test_figure_and_readme_table_from_the_rows(compared):
    rows, _ = compared
    seeded = [{**r, "run_seed": s} for s in (0, 1) for r in rows]
    fig = methods_figure(seeded, "tiny")
    assert len(fig.data) == len(methods.METHODS) + 2 and "budget 6" in fig.layout.title.text
    assert any("site (dev-chosen): L" in h for tr in fig.data for h in tr.hovertext)
    text = readme_methods.methods({"methods": seeded}, {"methods": {"settings": {"model": "tiny"}}})
    assert "PCA diff" in text and "| capitalize |" in text and text.splitlines()[-1].startswith("*figures/methods")
    assert readme_methods.methods({}, {}).startswith("*figures/methods.json is not computed yet")


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="methods methods"):
        methods.Config(methods=("ltv", "ltv"))
    with pytest.raises(ValueError, match="methods alphas"):
        methods.Config(alphas=(0.0,))
    with pytest.raises(ValueError, match="methods budget"):
        methods.Config(budget=1)


def test_ltv_recipes_on_the_tiny_model(tiny):
    res = ltv_recipes.run(tiny, ltv_recipes.Config(tasks=("capitalize",), max_steps=4, n_test=4, layer=1),
                          progress=False)
    rows = res.rows()
    assert [r["recipe"] for r in rows] == ["default", "released"]
    sp = TASK.splits(0)
    released = rows[1]
    assert released["n_train"] + released["n_val"] == len(sp.train) + len(sp.val)  # the pool: all there is
    assert rows[0]["n_train"] == len(sp.train) and all(r["steps_run"] <= 4 and r["wall_s"] > 0 for r in rows)
    assert recipes_figure(rows).data and "default" in readme_methods.ltv_recipes(
        {"ltv_recipes": rows}, {"ltv_recipes": {}})


def test_the_steps_are_registered():
    assert STEPS["methods"].tables == ("methods", "methods_dev") and STEPS["methods"].seeds["paper"] == (0, 1, 2)
    assert STEPS["ltv_recipes"].tables == ("ltv_recipes",)
