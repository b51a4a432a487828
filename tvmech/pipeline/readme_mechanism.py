"""README tables of the mechanism and linear-map experiments (OV reconstruction, key heads, attention sinks,
W_TV per layer), registered in :data:`tvmech.pipeline.readme_tables.REGIONS` like the others."""

from __future__ import annotations

from statistics import stdev

from tvmech.analysis.head_verdicts import comparison, taylor_agreement
from tvmech.analysis.polar_null import MAPS, pooled_verdict, row_verdicts, verdict_fields
from tvmech.pipeline.readme_tables import (
    Rows,
    aggregate,
    cell,
    has,
    ordered,
    provenance,
    register,
    scoring_views,
    table,
    view_label,
)

MECH_KEYS = ("model", "layer", "ltv_steps", "n_test")


def _split_alpha(rows: Rows) -> Rows:
    return [{**r, "name": str(r["method"]).split("@")[0],
             "a": float(str(r["method"]).split("@")[1]) if "@" in str(r["method"]) else 1.0} for r in rows]


@register("ov_reconstruction", "ov_reconstruction")
def ov_reconstruction(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Mean over tasks per method: accuracy under each task's own scoring and (where some task was scored two
    ways) under full-vocabulary first-token scoring, and the effect norm; then a method × α table (own
    scoring) where ``<name>@<α>`` rows exist."""
    rows = tables["ov_reconstruction"]
    base = [r for r in rows if "@" not in str(r.get("method"))]
    views = scoring_views(base)
    norm = has(base, "effect_norm")
    accs = [aggregate(view, ("method",), "accuracy") for _, view in views]
    eff = aggregate(views[0][1], ("method",), "effect_norm")
    header = ["method", *(SCORING_HEADERS.get(v, "accuracy") for v, _ in views), *(["effect norm"] if norm else [])]
    body = [[f"`{m}`", *(cell(acc, (m,), 3) for acc in accs), *([cell(eff, (m,), 1)] if norm else [])]
            for m in ordered(base, "method")]
    out = table(header, body)
    if any("@" in str(r.get("method")) for r in rows):
        keyed = [r for r in _split_alpha(rows) if r["name"] not in ("zero_shot", "ltv")
                 and not r["name"].startswith("path_")]
        own_view = next(view for v, view in views if v in ("", "label_set"))
        own_keys = {(r["task"], r.get("scoring")) for r in own_view}
        own = [r for r in keyed if (r["task"], r.get("scoring")) in own_keys]
        alphas = sorted({r["a"] for r in keyed})
        acc = aggregate(own, ("name", "a"), "accuracy")
        out += "\n\n" + table(["method (own scoring)", *(f"α={a:g}" for a in alphas)],
                               [[f"`{n}`", *(cell(acc, (n, a), 3) for a in alphas)] for n in ordered(own, "name")])
    return out + "\n\n" + provenance("ov_reconstruction", rows, metas["ov_reconstruction"], MECH_KEYS)


SCORING_HEADERS = {"": "accuracy", "label_set": "accuracy, own scoring", "first_token": "accuracy, full vocabulary"}
CLASSIFICATION_METHODS = ("zero_shot", "ltv", "ov_direct", "ov_direct_layerwise", "ov_paper", "mlp_direct",
                          "mlp_direct_layerwise", "mlp_total_measured", "attn_mlp_total_measured", "theta_final",
                          "path_v", "path_qk", "path_mlp", "path_v+qk+mlp", "path_all")


@register("ov_classification", "ov_reconstruction")
def ov_classification(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """The tasks scored two ways (the classification tasks), per task: label-set and full-vocabulary accuracy of
    the main reconstructions and path-restricted runs."""
    rows = tables["ov_reconstruction"]
    scored: dict = {}
    for r in rows:
        scored.setdefault(r["task"], set()).add(r.get("scoring"))
    tasks = [t for t in ordered(rows, "task") if len(scored[t]) > 1]
    if not tasks:
        return "(no task was scored two ways)"
    acc = aggregate(rows, ("method", "task", "scoring"), "accuracy")
    methods = [m for m in CLASSIFICATION_METHODS if any(r["method"] == m for r in rows)]
    header = ["method", *(f"{t} ({s})" for t in tasks for s in ("label set", "full vocab."))]
    body = [[f"`{m}`", *(cell(acc, (m, t, s)) for t in tasks for s in ("label_set", "first_token"))] for m in methods]
    return table(header, body) + "\n\n" + provenance("ov_reconstruction", rows, metas["ov_reconstruction"], MECH_KEYS)


# the exact intervention of each ablation kind (key vs random tables)
KIND_LABELS = {"zero": "zero ablation (z = 0)", "mean": "mean ablation (z = mean clean z)"}
SETS = (("key", "key"), ("random_layer_matched", "random, layer-matched"), ("random", "random, all layers"))


def _spread_over_sets(rows: Rows, kind, name: str) -> str:
    """`` (sd over N sets X)``: within each run, the sd across its random sets of their mean over tasks; the
    mean of that over runs (empty for one set)."""
    mine = [r for r in rows if r.get("kind") == kind and r.get("set") == name]
    sds, n = [], 0
    for run in dict.fromkeys(r.get("run_seed") for r in mine):
        per_set = aggregate([{**r, "run_seed": None} for r in mine if r.get("run_seed") == run], ("seed",),
                            "accuracy")
        if len(per_set) >= 2:
            sds.append(stdev(s.mean for s in per_set.values()))
            n = len(per_set)
    if not sds:
        return ""
    return f" (sd over {n} sets {sum(sds) / len(sds):.3f})"


def _like_for_like(rows: Rows) -> str:
    """Key vs layer-matched random sets on the (run seed, task) pairs that have a layer-matched set (a key set
    with more heads in one layer than that layer has other heads has none), each task's own scoring."""
    matched = {(r.get("run_seed"), r["task"]) for r in rows if r.get("set") == "random_layer_matched"}
    pairs = {(r.get("run_seed"), r["task"]) for r in rows}
    if not matched or matched == pairs:
        return ""
    view = next(v for name, v in scoring_views(rows) if name in ("", "label_set"))
    view = [r for r in view if (r.get("run_seed"), r["task"]) in matched]
    acc = aggregate(view, ("kind", "set"), "accuracy")
    body = [[KIND_LABELS.get(kind, kind), cell(acc, ("none", "none"), 3), cell(acc, (kind, "key"), 3),
             cell(acc, (kind, "random_layer_matched"), 3)] for kind in ordered(view, "kind") if kind != "none"]
    return (f"\n\nLike for like, on the {len(matched)} of {len(pairs)} (seed, task) pairs that have a layer-matched "
            "set (each task's own scoring):\n\n"
            + table(["ablation", "no ablation", "key", "random, layer-matched"], body))


@register("key_heads", "key_heads_ablation", "key_heads_taylor")
def key_heads(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """LTV accuracy with key vs random head sets ablated, per kind; Taylor vs exact ablation per task."""
    rows, taylor = tables["key_heads_ablation"], tables["key_heads_taylor"]
    sets = [(s, label) for s, label in SETS if any(r.get("set") == s for r in rows)]
    body = []
    for scoring, view in scoring_views(rows):
        acc = aggregate(view, ("kind", "set"), "accuracy")
        if ("none", "none") in acc:
            body.append([view_label("none (no ablation)", scoring), cell(acc, ("none", "none"), 3)]
                        + ["—"] * (len(sets) - 1))
        for kind in ordered(view, "kind"):
            if kind != "none":
                body.append([view_label(KIND_LABELS.get(kind, kind), scoring)] + [
                    cell(acc, (kind, s), 3) + (_spread_over_sets(view, kind, s) if (kind, s) in acc else "")
                    for s, _ in sets])
    out = table(["ablation", *(label for _, label in sets)], body)
    out += _like_for_like(rows)
    out += "\n\n" + provenance("key_heads_ablation", rows, metas["key_heads_ablation"],
                               (*MECH_KEYS, "score", "frac", "n_random"))
    return out + "\n\n" + taylor_table(taylor, metas["key_heads_taylor"])


SCORE_NAMES = {"tv_reliance": "TV-reliance", "paper": "paper score"}
INTERVENTION_NAMES = {"revert": "revert", "zero": "zero ablation"}
INTERVENTION_NOTES = {
    "revert": "*revert*: the head's z at the query set to its clean z (the same prompt's run without θ), the "
              "intervention TV-reliance |(a_θ − a_clean)·∂p/∂a| estimates",
    "zero": "*zero ablation*: z = 0 at the query, the intervention the paper score |a·∂p/∂a| estimates"}


def taylor_table(taylor: Rows, meta: dict) -> str:
    """Per task and mean over tasks: Spearman ρ and precision@k of each (score, exact intervention) comparison
    (:func:`tvmech.analysis.head_verdicts.comparison`; rows saved before issue 24 compared TV-reliance with
    zero ablation), the null of a random ranking beside the means, and which intervention each column is."""
    rows = [{**r, "cmp": "/".join(comparison(r))} for r in taylor]
    cmps = ordered(rows, "cmp")
    summary = taylor_agreement(taylor)["comparisons"]
    ks = ordered(taylor, "k_precision")
    prec = f"P@{ks[0]}" if len(ks) == 1 else "P@k"
    header = ["task"]
    for c in cmps:
        score, kind = c.split("/")
        header += [f"{SCORE_NAMES.get(score, score)} vs {INTERVENTION_NAMES.get(kind, kind)}: ρ", prec]
    tasks = ordered(rows, "task")
    rho, pk = (aggregate(rows, ("task", "cmp"), f) for f in ("spearman", "precision_at_k"))
    body = [[t, *(x for c in cmps for x in (cell(rho, (t, c)), cell(pk, (t, c))))] for t in tasks]
    # one value per task (repeated on every head's row): average per task first, then over tasks
    per_task = list({(r.get("task"), r["cmp"], r.get("run_seed")): r for r in rows}.values())
    m_rho, m_pk = aggregate(per_task, ("cmp",), "spearman"), aggregate(per_task, ("cmp",), "precision_at_k")
    body.append(["**mean**", *(x for c in cmps for x in (cell(m_rho, (c,), bold=True), cell(m_pk, (c,), bold=True)))])
    body.append(["null (random ranking)", *(x for c in cmps for x in (
        "0", "—" if summary[c]["precision_null"] is None else f"{summary[c]['precision_null']:.2f}"))])
    kinds = [k for k in INTERVENTION_NOTES if any(c.split("/")[1] == k for c in cmps)]
    notes = "; ".join(INTERVENTION_NOTES[k] for k in kinds)
    off = [c for c in cmps if not summary[c]["estimates"]]
    if off:
        notes += ". " + ", ".join(f"{SCORE_NAMES.get(c.split('/')[0])} vs {INTERVENTION_NAMES.get(c.split('/')[1])}"
                                  for c in off) + " compares a score with an intervention it does not estimate"
    return (table(header, body) + f"\n\n{notes}.\n\n"
            + provenance("key_heads_taylor", taylor, meta, (*MECH_KEYS, "score")))


SINK_METRICS = {"first": "attention to the first token", "self": "attention to the query itself",
                "injected": "attention to the injected position", "rest": "attention to the rest",
                "sink_rate": "sink rate"}


@register("sinks", "attention_sinks")
def sinks(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Attention statistics of the key heads vs random sets, per metric, mean over tasks (and random sets)."""
    rows = tables["attention_sinks"]
    sets = [(s, label) for s, label in SETS if any(r.get("set") == s for r in rows)]
    threshold = metas["attention_sinks"].get("settings", {}).get("threshold")
    stats = aggregate(rows, ("metric", "set"), "value")
    body = []
    for m in ordered(rows, "metric"):
        label = SINK_METRICS.get(m, m)
        if m == "sink_rate" and threshold is not None:
            label += f" (share of prompts with attention to the first token > {threshold:g})"
        body.append([label, *(cell(stats, (m, s), 3) for s, _ in sets)])
    out = table(["metric", *(label for _, label in sets)], body)
    return out + "\n\n" + provenance("attention_sinks", rows, metas["attention_sinks"], (*MECH_KEYS, "threshold"))


def _ray_alphas(rows: Rows) -> list[str]:
    keys = {k[len("ray_rel_error_"):] for r in rows for k in r if k.startswith("ray_rel_error_")}
    return sorted(keys, key=float)


def _reflections(rows: Rows, layer, key: str) -> str:
    """``k/n``: rows at ``layer`` whose orthogonal polar factor had det −1 (``key``: ``det_q`` or ``jac_det_q``)."""
    dets = [r[key] for r in rows if r.get("layer") == layer and r.get(key) is not None]
    return f"{sum(d < 0 for d in dets)}/{len(dets)}" if dets else "—"


@register("linear_map", "linear_map")
def linear_map(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """W_TV per layer, mean over tasks: fit (per-prompt R² centred: residuals centred per prompt; the uncentred
    one stays in the JSON), ray test, Jacobian, accuracies, rotation (the proper rotation Q₊ in rows that say
    ``reflection``; how many maps had det Q = −1) and its random-rotation null."""
    rows = [{**r, "beats_q95": float(r["align_qtheta"] > r["rot_null_q95"])}
            if r.get("align_qtheta") is not None and r.get("rot_null_q95") is not None else r
            for r in tables["linear_map"]]
    alphas = _ray_alphas(rows)
    ray = [f"ray_rel_error_{alphas[0]}", f"ray_rel_error_{alphas[-1]}"] if alphas else []
    q = "Q₊" if rows and all("reflection" in r for r in rows) else "Q"
    columns = [  # header, fields (joined by " / "), digits, signed, joiner
        ("R² mean response", ["r2_heldout"], 2, False, ""),
        ("R² per prompt, centred", ["r2_per_prompt_centred_mean"], 2, False, ""),
        ("‖J−W‖/‖J‖", ["jac_rel_frobenius"], 2, False, ""),
        (f"ray error α={alphas[0]} / {alphas[-1]}" if alphas else "ray", ray, 2, False, " / "),
        ("acc zero-shot", ["acc_zero_shot"], 2, False, ""),
        ("acc θ at l", ["acc_original"], 2, False, ""),
        ("acc Wθ at final", ["acc_reconstructed"], 2, False, ""),
        (f"‖{q}−I‖/√d", ["rotation_distance"], 2, False, ""),
        ("gain", ["gain"], 1, False, ""),
        (f"cos(θ,ū) → cos({q}θ,ū)", ["align_theta", "align_qtheta"], 3, True, " → "),
        (f"null: draws ≥ cos({q}θ,ū)", ["rot_null_count_ge"], 1, False, ""),
        ("null percentile", ["rot_null_percentile"], 0, False, ""),
        ("share above null q95", ["beats_q95"], 2, False, ""),
    ]
    columns = [c for c in columns if c[1] and all(has(rows, f) for f in c[1])]
    dets = [k for k in ("det_q", "jac_det_q") if has(rows, k)]
    det_header = ["det Q = −1 (" + " / ".join("W" if k == "det_q" else "J" for k in dets) + ")"] if dets else []
    body = []
    for scoring, view in scoring_views(rows):
        stats = {f: aggregate(view, ("layer",), f) for c in columns for f in c[1]}
        for layer in sorted(ordered(view, "layer")):
            line = [view_label(str(layer), scoring)]
            line += [c[4].join(cell(stats[f], (layer,), c[2], signed=c[3]) for f in c[1]) for c in columns]
            line += [" / ".join(_reflections(view, layer, k) for k in dets)] if dets else []
            body.append(line)
    out = table(["layer", *(c[0] for c in columns), *det_header], body)
    nulls = ordered(rows, "rot_null_n")
    keys = ("model", "tasks", "ltv_steps", "map_prompts", "map_solver")
    line = provenance("linear_map", rows, metas["linear_map"], keys)
    return out + "\n\n" + (line[:-1] + f", {nulls[0]} random rotations*" if len(nulls) == 1 else line)


NULL_STATS = (("rotation_distance", "‖Q₊−I‖/√d", 2), ("cos_theta_qtheta", "cos(θ, Q₊θ)", 3), ("gain", "gain", 1))


def _null_line(rows: Rows, stat: str, name: str, pre: str, layer, digits: int) -> list[str]:
    """One line of the null table: the LTV's statistic, the null's mean [q2.5, q97.5], the LTV's percentile,
    how many rows were called specific one by one, the pooled verdict and the Vanilla TV's statistic."""
    mine = [r for r in rows if r.get("layer") == layer]
    key = f"null_{pre}{stat}"
    agg = {f: aggregate(mine, ("layer",), f) for f in (f"{pre}{stat}", f"{key}_mean", f"{key}_q025", f"{key}_q975",
                                                       f"{key}_percentile", f"vanilla_{pre}{stat}")}
    verdicts = [v for r in mine for v in row_verdicts(r) if v["map"] == name and v["statistic"] == stat]
    if verdicts:
        null = (f"{cell(agg[f'{key}_mean'], (layer,), digits)} [{agg[f'{key}_q025'][(layer,)].mean:.{digits}f}, "
                f"{agg[f'{key}_q975'][(layer,)].mean:.{digits}f}]")
        pooled = pooled_verdict(verdicts)
        verdict = f"{'**specific**' if pooled['specific'] else 'not specific'} (z = {pooled['z']:+.1f})"
        count = f"{sum(v['specific'] for v in verdicts)}/{len(verdicts)}"
    else:
        null = verdict = count = "—"
    return [str(layer), name, cell(agg[f"{pre}{stat}"], (layer,), digits), null,
            cell(agg[f"{key}_percentile"], (layer,), 0) if verdicts else "—", count, verdict,
            cell(agg[f"vanilla_{pre}{stat}"], (layer,), digits)]


@register("linear_map_null", "linear_map")
def linear_map_null(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """The polar statistics of W and of the exact Jacobian J for the LTV, against random vectors of its norm
    (:mod:`tvmech.analysis.polar_null`), and for the Vanilla TV; one block per statistic, a line per layer and
    map. Rows saved before the null existed give a note instead."""
    rows = [{**r, **{k: v for x in row_verdicts(r) for k, v in
                     verdict_fields(x, f"null_{MAPS[x['map']]}{x['statistic']}").items()}}
            for r in tables["linear_map"]]  # the verdict fields recomputed from the null values the rows hold
    line = provenance("linear_map", rows, metas["linear_map"], ("model", "tasks", "map_random", "map_random_fits"))
    if not any(row_verdicts(r) for r in rows):
        return ("*Not computed yet: these rows predate the random-vector null and J's polar statistics "
                "(recompute the linear step).*\n\n" + line)
    maps = [(name, pre) for name, pre in (("J", "jac_"), ("W", "")) if has(rows, f"{pre}rotation_distance")]
    body = []
    for stat, header, digits in NULL_STATS:
        lines = [_null_line(rows, stat, name, pre, layer, digits)
                 for layer in sorted(ordered(rows, "layer")) for name, pre in maps]
        body += [[header if i == 0 else "", *line] for i, line in enumerate(lines)]
    out = table(["statistic", "layer", "map", "LTV", "random vectors: mean [q2.5, q97.5]", "LTV percentile",
                 "rows outside the null's 95 %", "pooled verdict", "Vanilla TV"], body)
    return out + "\n\n" + line
