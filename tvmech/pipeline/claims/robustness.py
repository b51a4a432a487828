"""Claims on robustness (``robustness``: LTVs, Vanilla TVs and FVs injected at several layers and positions) and
on the LTV at every site tried; rules: :mod:`tvmech.pipeline.claims.core`. Configurations are told apart by what
they are (their layers, positions and demonstrations), so rows saved before issue 24, named otherwise, still
place."""

from __future__ import annotations

from tvmech.pipeline.claims.behaviour import EXTRACTED, own, sweep_layers, vs
from tvmech.pipeline.claims.core import Finding, all_of, claim, count, estimate, exceeds, majority, not_run, pick
from tvmech.pipeline.readme_tables import ordered


@claim("ltv_any_site", "The LTV lifts accuracy above zero-shot at every layer and position tried",
       "layer_sweep", "robustness?")
def ltv_any_site(tables, metas) -> Finding:
    sweep = own(tables["layer_sweep"])  # the robustness accuracies are each task's own scoring
    zero = estimate(pick(sweep, method="zero_shot"))
    sites = {f"layer {la}": estimate(pick(sweep, method="ltv", layer=la)) for la in sweep_layers(sweep)[0]}
    ltv_rows = [r for r in tables.get("robustness", []) if r.get("method", "ltv") == "ltv"]
    for conf in ordered(ltv_rows, "configuration"):
        sites[conf] = estimate(pick(ltv_rows, configuration=conf))
    cmp = {s: exceeds(e, zero) for s, e in sites.items()}
    low = min(sites, key=lambda s: sites[s].mean)
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        f"Above zero-shot ({zero.fmt()}) at {count([c.verdict for c in cmp.values()])} sites (swept layers"
        f"{' and robustness configurations' if 'robustness' in tables else ''}); lowest: {low}, {vs(cmp[low])}."),
        {"sites": len(sites), "held": sum(c.holds for c in cmp.values())}, "zero-shot, binomial sd",
        f"lowest {sites[low].fmt()} ({low}) vs zero-shot {zero.fmt()}; "
        f"{count([c.verdict for c in cmp.values()])} sites")


def _ltv(rows: list[dict]) -> list[dict]:
    """The LTV rows of ``robustness`` (rows saved before issue 24 have no ``method``: all LTV)."""
    return [r for r in rows if r.get("method", "ltv") == "ltv"]


def _shape(r: dict) -> tuple:
    """A robustness configuration by what it is: (number of layers, positions, demonstrations); rows saved
    before issue 24 are placed by their names."""
    if "positions" in r:
        return len(r["layers"]), tuple(r["positions"]), r.get("k", 0)
    name = r["configuration"]
    return (1 if name.startswith("layer") else 8, ("query",) if "last position" in name else ("other",),
            5 if "shot prompt" in name else 0)


def _configs(rows: list[dict]) -> dict[str, tuple]:
    return {c: _shape(pick(rows, configuration=c)[0]) for c in ordered(rows, "configuration")}


def _base(rows: list[dict]) -> str | None:
    """The reference configuration: one vector at the query (the last token) of one layer, zero-shot."""
    return next((c for c, sh in _configs(rows).items() if sh in ((1, ("query",), 0), (1, (-1,), 0))), None)


@claim("robustness_above_icl", "The LTV beats 5-shot ICL in every robustness configuration", "robustness",
       "layer_sweep")
def robustness_above_icl(tables, metas) -> Finding:
    rows, sweep = _ltv(tables["robustness"]), own(tables["layer_sweep"])
    confs = {c: estimate(pick(rows, configuration=c)) for c in ordered(rows, "configuration")}
    zero, icl = estimate(pick(sweep, method="zero_shot")), estimate(pick(sweep, method="icl_5shot"))
    cmp = {c: exceeds(e, icl) for c, e in confs.items()}
    low = min(confs, key=lambda c: confs[c].mean)
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        f"Above 5-shot ICL ({icl.fmt()}; zero-shot {zero.fmt()}; the layer sweep's, each task's own scoring) in "
        f"{count([c.verdict for c in cmp.values()])} configurations; lowest: {low}, {vs(cmp[low])}."),
        {c: e.mean for c, e in confs.items()}, "5-shot ICL of the layer sweep, binomial sd")


@claim("robustness_more_sites", "More injection sites raise the LTV's accuracy", "robustness")
def robustness_more_sites(tables, metas) -> Finding:
    rows = _ltv(tables["robustness"])
    base = _base(rows)
    more = [c for c, (n_layers, pos, k) in _configs(rows).items() if k == 0 and (n_layers > 1 or len(pos) > 1)]
    if base is None or not more:
        return not_run("a multi-site robustness configuration")
    ref = estimate(pick(rows, configuration=base))
    cmp = {c: exceeds(estimate(pick(rows, configuration=c)), ref) for c in more}
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        f"Against one vector at {base} ({ref.fmt()}): " + "; ".join(
            f"{c} {x.a.fmt()} ({x.fmt(2)})" for c, x in cmp.items()) + "."),
        {c: x.a.mean for c, x in cmp.items()}, f"{base}, sd over seeds")


@claim("robustness_position", "Moving the single vector away from the query costs the LTV accuracy", "robustness")
def robustness_position(tables, metas) -> Finding:
    rows = _ltv(tables["robustness"])
    base = _base(rows)
    moved = [c for c, (n_layers, pos, k) in _configs(rows).items()
             if n_layers == 1 and len(pos) == 1 and k == 0 and c != base]
    if base is None or not moved:
        return not_run("a moved-position robustness configuration")
    cmp = {}
    for c in moved:  # like for like: the tasks where the moved position exists in every prompt
        tasks = ordered([r for r in pick(rows, configuration=c) if r.get("accuracy") is not None], "task")
        cmp[c] = exceeds(estimate(pick(rows, configuration=base, task=tasks)),
                         estimate(pick(rows, configuration=c, task=tasks)))
    return Finding(majority([c.verdict for c in cmp.values()]), "; ".join(
        f"{base} {x.a.fmt()} vs {c} {x.b.fmt()} ({x.fmt(2)})" for c, x in cmp.items())
        + " (each pair over the tasks where both are defined).",
        {c: x.b.mean for c, x in cmp.items()}, f"{base}, sd over seeds")


@claim("robustness_extracted", "The LTV beats the Vanilla TV and the FV in every robustness configuration",
       "robustness")
def robustness_extracted(tables, metas) -> Finding:
    rows = tables["robustness"]
    if not any(r.get("method") in EXTRACTED for r in rows):
        return not_run("Vanilla TV or FV rows")
    parts, verdicts = [], []
    for c in ordered(rows, "configuration"):
        ltv = estimate(pick(rows, configuration=c, method="ltv"))
        other = {m: exceeds(ltv, estimate(pick(rows, configuration=c, method=m))) for m in EXTRACTED
                 if pick(rows, configuration=c, method=m)}
        if other:
            verdicts += [x.verdict for x in other.values()]
            parts.append(f"{c}: LTV {ltv.fmt()}, " + ", ".join(f"{EXTRACTED[m]} {x.b.fmt()}" for m, x in other.items()))
    return Finding(all_of(verdicts), "; ".join(parts) + f" ({count(verdicts)} comparisons beyond 2 × the sd over "
                   "seeds).", {"held": sum(v == "holds" for v in verdicts), "of": len(verdicts)},
                   "Vanilla TV and FV at the same sites, sd over seeds")
