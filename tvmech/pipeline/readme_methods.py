"""README tables of the methods comparison and the LTV recipes (``figures/methods.json``,
``figures/ltv_recipes.json``); both files are optional: until they are computed the region says so."""

from __future__ import annotations

from collections import Counter

from tvmech.pipeline.readme_tables import (
    Rows,
    aggregate,
    cell,
    ordered,
    provenance,
    register,
    scoring_views,
    table,
    view_label,
)

METHOD_NAMES = {"zero_shot": "zero-shot", "mean_diff": "mean diff (Vanilla TV)", "pca_diff": "PCA diff",
                "pca_center": "PCA center", "fv": "FV", "ltv": "LTV"}


def _absent(stem: str, step: str) -> str:
    return (f"*figures/{stem}.json is not computed yet: `python -m tvmech.figures --preset paper --only {step}` "
            "(a GPU) writes it.*")


def _name(m: str) -> str:
    return METHOD_NAMES.get(m, m.replace("icl_", "ICL ").replace("shot", "-shot"))


def _sites(rows: Rows, task: str, method: str) -> str:
    """The most frequent dev choice over run seeds, ``L12 α=2`` (``×2/3`` when seeds disagree)."""
    picks = Counter(f"L{r['layer']}" + (f" α={r['alpha']:g}" if r.get("alpha") not in (None, 1.0) or method != "ltv"
                                        else "")
                    for r in rows if r["task"] == task and r["method"] == method and r.get("layer") is not None)
    if not picks:
        return "—"
    top, n = picks.most_common(1)[0]
    total = sum(picks.values())
    return top if n == total else f"{top} ×{n}/{total}"


@register("methods", "methods?")
def methods(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Test accuracy per task and method at the dev-chosen site (mean ± sd over run seeds), the mean over tasks per
    scoring view, then the dev-chosen sites."""
    if "methods" not in tables:
        return _absent("methods", "methods")
    rows = tables["methods"]
    methods = ordered(rows, "method")
    acc = aggregate(rows, ("task", "scoring", "method"), "accuracy")
    budget = aggregate(rows, ("task",), "budget")
    body = [[t, s or "", f"{budget[(t,)].mean:.0f}" if (t,) in budget else "—",
             *(cell(acc, (t, s, m)) for m in methods)] for t, s in ordered(rows, "task", "scoring")]
    for scoring, view in scoring_views(rows, first="first_token"):
        mean = aggregate(view, ("method",), "accuracy")
        body.append([view_label("**mean**", scoring), "", "", *(cell(mean, (m,), bold=True) for m in methods)])
    first = table(["task", "scoring", "budget", *(_name(m) for m in methods)], body)
    chosen = [m for m in methods if any(r.get("layer") is not None for r in rows if r["method"] == m)]
    sites = table(["task (dev-chosen site)", *(_name(m) for m in chosen)],
                  [[t, *(_sites(rows, t, m) for m in chosen)] for t in ordered(rows, "task")])
    return (first + "\n\n" + sites + "\n\n"
            + provenance("methods", rows, metas["methods"], ("model", "layers", "alphas", "ltv_steps", "k")))


@register("ltv_recipes", "ltv_recipes?")
def ltv_recipes(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Per task and recipe: test accuracy, steps run and wall seconds (mean ± sd over run seeds), and the train /
    validation sizes."""
    if "ltv_recipes" not in tables:
        return _absent("ltv_recipes", "ltv_recipes")
    rows = tables["ltv_recipes"]
    recipes = ordered(rows, "recipe")
    stats = {v: aggregate(rows, ("task", "scoring", "recipe"), v) for v in ("accuracy", "steps_run", "wall_s")}
    sizes = {v: aggregate(rows, ("task", "recipe"), v) for v in ("n_train", "n_val")}
    header = ["task", "scoring", *(f"{r} {what}" for r in recipes for what in ("accuracy", "steps", "wall s",
                                                                             "train/val"))]
    body = []
    for t, s in ordered(rows, "task", "scoring"):
        line = [t, s or ""]
        for r in recipes:
            tv = (f"{sizes['n_train'][(t, r)].mean:.0f}/{sizes['n_val'][(t, r)].mean:.0f}"
                  if (t, r) in sizes["n_train"] and (t, r) in sizes["n_val"] else "—")
            line += [cell(stats["accuracy"], (t, s, r)), cell(stats["steps_run"], (t, s, r), 0),
                     cell(stats["wall_s"], (t, s, r), 1), tv]
        body.append(line)
    for scoring, view in scoring_views(rows, first="first_token"):
        mean = {v: aggregate(view, ("recipe",), v) for v in ("accuracy", "steps_run", "wall_s")}
        body.append([view_label("**mean**", scoring), "", *(x for r in recipes for x in (
            cell(mean["accuracy"], (r,), bold=True), cell(mean["steps_run"], (r,), 0), cell(mean["wall_s"], (r,), 1),
            ""))])
    return table(header, body) + "\n\n" + provenance("ltv_recipes", rows, metas["ltv_recipes"], ("model", "layer"))


__all__ = ["methods", "ltv_recipes", "METHOD_NAMES"]
