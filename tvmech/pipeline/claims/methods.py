"""Claims on the methods side by side (``methods``: every method at its dev-chosen site, seeds as runs) and on the
two LTV recipes (``ltv_recipes``: tvmech's default against ``LTVConfig.released()``); rules:
:mod:`tvmech.pipeline.claims.core`. Accuracies are full-vocabulary first-token scoring, the mean over tasks per run
seed, mean ± sd over the seeds."""

from __future__ import annotations

from tvmech.pipeline.claims.behaviour import vs
from tvmech.pipeline.claims.core import Finding, all_of, claim, count, estimate, exceeds, pick

OTHERS = {"icl_5shot": "5-shot ICL", "mean_diff": "mean difference (Vanilla TV)", "pca_diff": "PCA of the differences",
          "pca_center": "PCA of the centred states", "fv": "function vector"}


def _ltv_best(tables) -> Finding:
    rows = pick(tables["methods"], scoring="first_token")
    ltv = estimate(pick(rows, method="ltv"))
    cmp = {m: exceeds(ltv, estimate(pick(rows, method=m))) for m in OTHERS if pick(rows, method=m)}
    parts = "; ".join(f"{OTHERS[m]} {c.b.fmt()} (Δ {c.diff:+.2f})" for m, c in cmp.items())
    budget = sorted({r["budget"] for r in rows if r.get("budget") is not None})
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        f"Mean over {len({r['task'] for r in rows})} tasks, LTV {ltv.fmt()}; {parts}; above "
        f"{count([c.verdict for c in cmp.values()])} (2 × the pooled sd over seeds). Matched budget: "
        f"{budget[0]}-{budget[-1]} source examples per task."),
        {"ltv": ltv.mean, **{m: c.b.mean for m, c in cmp.items()}}, "each other method, seeds",
        f"{ltv.fmt()} vs best other {max(c.b.mean for c in cmp.values()):.2f}")


@claim("methods_ltv_best", "At its dev-chosen layer the LTV beats every extracted vector and 5-shot ICL", "methods")
def methods_ltv_best(tables, metas) -> Finding:
    return _ltv_best(tables)


@claim("methods_ltv_best_gemma3", "On Gemma-3-270M too, the LTV beats every extracted vector and 5-shot ICL",
       "methods@gemma3")
def methods_ltv_best_gemma3(tables, metas) -> Finding:
    return _ltv_best({"methods": tables["methods@gemma3"]})


def _recipes(rows: list[dict]) -> Finding:
    rows = pick(rows, scoring="first_token")
    default, released = (estimate(pick(rows, recipe=r)) for r in ("default", "released"))
    c = exceeds(default, released)
    steps, wall = (estimate(pick(rows, recipe="released"), v, binomial=False) for v in ("steps_run", "wall_s"))
    return Finding(c.verdict, (
        f"Mean over {len({r['task'] for r in rows})} tasks: default {vs(c)}; the released recipe ran "
        f"{steps.fmt(0)} steps ({wall.fmt(1)} s) against the default's 150."),
        {"default": default.mean, "released": released.mean}, "the released recipe, seeds", vs(c))


@claim("released_recipe", "tvmech's default LTV recipe beats the released recipe (as reported) on this model",
       "ltv_recipes")
def released_recipe(tables, metas) -> Finding:
    return _recipes(tables["ltv_recipes"])


@claim("released_recipe_gemma3", "On Gemma-3-270M too, the default LTV recipe beats the released recipe",
       "ltv_recipes@gemma3")
def released_recipe_gemma3(tables, metas) -> Finding:
    return _recipes(tables["ltv_recipes@gemma3"])
