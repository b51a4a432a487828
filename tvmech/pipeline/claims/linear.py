"""Claims on linear propagation (``linear_map``: W_TV per layer, its polar factors, the random-rotation null,
Wθ at the final stream) and the logit lens (``logit_lens``); rules: :mod:`tvmech.pipeline.claims.core`.

``linear_map`` rows are one per (task, layer, run seed); a layer's value is the mean over tasks, ± the sd over
run seeds. The rotation/scaling claim is tested against the rows' random-vector null (the exact Jacobian's
polar statistics for random vectors of θ's norm, :mod:`tvmech.analysis.polar_null`); rows saved before that null
leave it ``not tested``.
"""

from __future__ import annotations

import math
from statistics import fmean

from tvmech.pipeline.claims.core import (
    Finding,
    all_of,
    claim,
    const,
    count,
    estimate,
    exceeds,
    fmt_range,
    majority,
    not_run,
    outside_null,
    pick,
)
from tvmech.pipeline.readme_tables import ordered

LM = "linear_map"


def layers(rows: list[dict]) -> list[int]:
    """The fitted layers, in order."""
    return sorted(ordered(rows, "layer"))


def by_layer(rows: list[dict], field: str) -> dict:
    """``{layer: Est}`` of ``field`` (mean over tasks, sd over run seeds; no binomial spread)."""
    return {la: estimate(pick(rows, layer=la), field, binomial=False) for la in layers(rows)}


@claim("linear_mean_vs_prompt", "One W fits the mean response better than each prompt's own response", LM)
def linear_mean_vs_prompt(tables, metas) -> Finding:
    rows = tables[LM]
    if not any(r.get("r2_per_prompt_centred_mean") is not None for r in rows):
        return not_run("the per-prompt R²")
    mean, prompt = by_layer(rows, "r2_heldout"), by_layer(rows, "r2_per_prompt_centred_mean")
    raw = by_layer(rows, "r2_per_prompt_mean")
    cmp = {la: exceeds(mean[la], prompt[la]) for la in mean}
    first, last = layers(rows)[0], layers(rows)[-1]
    alphas = sorted({k[len("ray_rel_error_"):] for r in rows for k in r if k.startswith("ray_rel_error_")}, key=float)
    ray = ""
    if alphas:
        e = by_layer(rows, f"ray_rel_error_{alphas[-1]}")
        ray = (f" Ray test: the relative error of Δ({alphas[-1]}θ) against {alphas[-1]}Wθ is {e[first].fmt()} at "
               f"layer {first} and {e[last].fmt()} at {last}.")
    neg = sum(raw[la].mean < 0 for la in raw)
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        f"R² of the mean response {mean[first].fmt()} at layer {first} → {mean[last].fmt()} at {last}; each "
        f"prompt's own response, centred, {prompt[first].fmt()} → {prompt[last].fmt()} (the shared W fits the mean "
        f"better at {count([c.verdict for c in cmp.values()])} layers); uncentred, the per-prompt R² is negative "
        f"at {neg} of {len(raw)} layers." + ray),
        {"r2_first": mean[first].mean, "r2_last": mean[last].mean, "prompt_last": prompt[last].mean},
        "each prompt's centred R², sd over seeds")


def null_by_layer(rows: list[dict], prefix: str, statistic: str) -> dict:
    """``{layer: pooled verdict}`` of ``statistic`` of map ``prefix`` (``""`` W, ``"jac_"`` J) over the rows' own
    random-vector nulls (:func:`tvmech.analysis.polar_null.pooled_verdict`), for the layers whose rows hold one."""
    from tvmech.analysis.polar_null import null_verdict, pooled_verdict

    out = {}
    for la in layers(rows):
        verdicts = [null_verdict(r[f"{prefix}{statistic}"], r[f"null_{prefix}{statistic}"], statistic)
                    for r in pick(rows, layer=la) if len(r.get(f"null_{prefix}{statistic}") or ()) >= 2]
        if verdicts:
            out[la] = pooled_verdict(verdicts)
    return out


def _trend(rows: list[dict], prefix: str, statistic: str, first: int, last: int) -> tuple[list[dict], list[dict]]:
    """Per (task, seed): θ's fall of ``statistic`` from layer ``first`` to ``last`` and the null mean's fall, as
    rows ``{task, run_seed, value}`` (only where both layers hold a null)."""
    out_ltv, out_null = [], []
    for key in {(r["task"], r.get("run_seed")) for r in rows}:
        a = pick(rows, task=key[0], run_seed=key[1], layer=first)
        b = pick(rows, task=key[0], run_seed=key[1], layer=last)
        if a and b and a[0].get(f"null_{prefix}{statistic}") and b[0].get(f"null_{prefix}{statistic}"):
            base = {"task": key[0], "run_seed": key[1]}
            out_ltv.append({**base, "value": a[0][f"{prefix}{statistic}"] - b[0][f"{prefix}{statistic}"]})
            out_null.append({**base, "value": fmean(a[0][f"null_{prefix}{statistic}"])
                             - fmean(b[0][f"null_{prefix}{statistic}"])})
    return out_ltv, out_null


@claim("rotation_scaling", "The rotation-then-scaling trend is specific to task vectors (not shared by random "
                           "vectors of their norm)", LM)
def rotation_scaling(tables, metas) -> Finding:
    """The trend: the rotation distance ‖Q₊ − I‖/√d of the map near θ falls from the first fitted layer to the
    last. Specific to task vectors only if θ's fall exceeds that of random vectors of its norm at the same layers
    (the rows' null, through the exact Jacobian J), by more than 2 sd over seeds. Without a null: ``not tested``."""
    rows = tables[LM]
    if not any(r.get("rotation_distance") is not None for r in rows):
        return not_run("the polar decomposition")
    dist, gain = by_layer(rows, "rotation_distance"), by_layer(rows, "gain")
    first, last = layers(rows)[0], layers(rows)[-1]
    dets = [r["det_q"] for r in rows if r.get("det_q") is not None]
    refl = (f" det Q = −1 (a reflection, split off before the statistics where the rows say so) in "
            f"{sum(d < 0 for d in dets)} of {len(dets)} (task, seed, layer) cases.") if dets else ""
    text = (f"Through W, ‖Q₊ − I‖/√d {dist[first].fmt()} at layer {first} (√2 ≈ {math.sqrt(2):.2f} for a random "
            f"rotation) → {dist[last].fmt()} at {last}; gain ‖Sθ‖/‖θ‖ {gain[first].fmt(1)} → {gain[last].fmt(1)}.")
    numbers = {"dist_first": dist[first].mean, "dist_last": dist[last].mean, "gain_first": gain[first].mean,
               "gain_last": gain[last].mean, "det_negative": sum(d < 0 for d in dets)}
    head = f"‖Q−I‖/√d {dist[first].fmt()} → {dist[last].fmt()}, gain {gain[first].fmt(1)} → {gain[last].fmt(1)}"
    ltv_fall, null_fall = _trend(rows, "jac_", "rotation_distance", first, last)
    if not ltv_fall:
        return Finding("not tested", text + " No null in the JSON: a random vector of θ's norm through the same map "
                       "is not measured, so the trend is not shown to be θ's." + refl, numbers, None, head)
    diff = [{**a, "value": a["value"] - b["value"]} for a, b in zip(ltv_fall, null_fall)]
    cmp = exceeds(estimate(diff, "value", False), const(0.0))
    a, b = estimate(ltv_fall, "value", False), estimate(null_fall, "value", False)
    numbers.update({"fall_ltv": a.mean, "fall_null": b.mean})
    return Finding(cmp.verdict, text + (
        f" Through the exact Jacobian J, θ's rotation distance falls by {a.fmt()} from layer {first} to {last}, that "
        f"of random vectors of θ's norm by {b.fmt()} (difference {cmp.fmt(2)}): "
        + ("θ's falls further than theirs." if cmp.holds else "the trend belongs to the layers, not to θ.") + refl),
        numbers, "random vectors of θ's norm through J, per task and seed", head)


@claim("tv_gain", "The map amplifies task vectors more than random vectors of their norm", LM)
def tv_gain(tables, metas) -> Finding:
    """The gain ‖Σθ‖/‖θ‖ of the exact Jacobian J at θ against the same for random vectors of θ's norm: at a
    majority of the layers, θ's mean percentile in its null is above it (pooled two-sided 5 % test)."""
    rows = tables[LM]
    pooled = null_by_layer(rows, "jac_", "gain")
    if not pooled:
        return not_run("the random-vector null")
    up = [la for la, v in pooled.items() if v["specific"] and v["mean_percentile"] > 50]
    g = by_layer(rows, "jac_gain")
    nulls = {la: fmean(fmean(r["null_jac_gain"]) for r in pick(rows, layer=la) if r.get("null_jac_gain"))
             for la in pooled}
    verdict = "holds" if 2 * len(up) > len(pooled) else "does not hold"
    return Finding(verdict, (
        "Gain of J at θ vs the mean over random vectors of its norm, per layer: " + ", ".join(
            f"{g[la].fmt(1)} vs {nulls[la]:.1f} (percentile {v['mean_percentile']:.0f}, layer {la})"
            for la, v in pooled.items())
        + f"; above the null (pooled two-sided 5 % test) at {len(up)} of {len(pooled)} layers."),
        {"layers_above": up}, "random vectors of θ's norm through J (pooled percentile per layer)",
        f"above the null at {len(up)} of {len(pooled)} layers")


@claim("rotation_alignment", "The rotation Q aligns θ with the label directions beyond random rotations", LM)
def rotation_alignment(tables, metas) -> Finding:
    rows = [r for r in tables[LM] if r.get("rot_null_percentile") is not None]
    if not rows:
        return not_run("the random-rotation null")
    pct = by_layer(rows, "rot_null_percentile")
    at = {la: outside_null(e.mean, "above") for la, e in pct.items()}
    up = sum(r["align_qtheta"] > r["align_theta"] for r in rows)
    return Finding(majority(list(at.values())), (
        f"Qθ is more aligned with the label directions than θ in {up} of {len(rows)} (task, seed, layer) cases; "
        f"against {ordered(rows, 'rot_null_n')[0]} Haar-random rotations its mean percentile per layer is "
        + ", ".join(f"{pct[la].mean:.0f} (layer {la})" for la in pct)
        + f": above the null's central 95 % at {count(list(at.values()))} layers."),
        {la: e.mean for la, e in pct.items()}, "cos(Rθ, ū) over random rotations R",
        "percentile " + fmt_range([e.mean for e in pct.values()], 0))


@claim("wtheta_final", "Wθ added at the final stream lifts accuracy above zero-shot", LM)
def wtheta_final(tables, metas) -> Finding:
    rows = tables[LM]
    rec, zero, orig = (by_layer(rows, f) for f in ("acc_reconstructed", "acc_zero_shot", "acc_original"))
    cmp = {la: exceeds(rec[la], zero[la]) for la in rec}
    below = sum(exceeds(orig[la], rec[la]).holds for la in rec)
    per_task = []
    for t in ordered(rows, "task"):
        z = estimate(pick(rows, task=t), "acc_zero_shot", False).mean
        per_task.append(f"{t} {z:.2f} → " + fmt_range(
            [estimate(pick(rows, task=t, layer=la), "acc_reconstructed", False).mean for la in rec]))
    tops = [r for r in rows if r.get("label_in_top_wtheta") is not None]
    top = (f" Decoded through the lens, Wθ ranks a label among its top tokens in "
           f"{sum(bool(r['label_in_top_wtheta']) for r in tops)} of {len(tops)} cases.") if tops else ""
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        f"Above zero-shot at {count([c.verdict for c in cmp.values()])} layers: Wθ "
        f"{fmt_range([e.mean for e in rec.values()])} vs zero-shot {fmt_range([e.mean for e in zero.values()])} "
        f"(mean over tasks per layer); per task, zero-shot → Wθ over the layers: {'; '.join(per_task)}. It stays "
        f"below θ at its own layer ({fmt_range([e.mean for e in orig.values()])}) at {below} of {len(rec)} layers."
        + top),
        {la: (rec[la].mean, zero[la].mean) for la in rec}, "zero-shot, sd over seeds",
        f"Wθ {fmt_range([e.mean for e in rec.values()])} vs zero-shot {fmt_range([e.mean for e in zero.values()])}")


@claim("theta_decodes", "θ decoded alone through the logit lens ranks a label among its top tokens", LM)
def theta_decodes(tables, metas) -> Finding:
    rows = [r for r in tables[LM] if r.get("label_in_top_theta") is not None]
    if not rows:
        return not_run("the decoded θ")
    hits = [r for r in rows if r["label_in_top_theta"]]
    where = sorted({(r["task"], r["layer"]) for r in hits})
    return Finding("not tested", (
        f"In {len(hits)} of {len(rows)} (task, seed, layer) cases" + (
            ": " + ", ".join(f"{t} at layer {la}" for t, la in where) if where else "")
        + " (no baseline of random vectors in the JSON)."), {"hits": len(hits), "cases": len(rows)})


LENS_READABLE = 0.2  # lens accuracy above which the answer counts as readable at a layer


def _lens(rows: list[dict]) -> tuple[int, str | None]:
    tv = [c for c in ordered(rows, "condition") if str(c).startswith("tv")]
    return max(ordered(rows, "layer")), (tv[0] if tv else None)


@claim("lens_final", "Through the logit lens at the last layer, the LTV's answer is above zero-shot", "logit_lens")
def lens_final(tables, metas) -> Finding:
    rows = tables["logit_lens"]
    last, tv = _lens(rows)
    if tv is None:
        return not_run("an LTV condition")
    tasks = ordered(rows, "task")
    e = {(t, c): estimate(pick(rows, task=t, condition=c, layer=last)) for t in tasks
         for c in ("zero_shot", "icl_5shot", tv)}
    cmp = {t: exceeds(e[(t, tv)], e[(t, "zero_shot")]) for t in tasks}
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        "Final-layer lens accuracy zero-shot / 5-shot ICL / LTV: " + "; ".join(
            f"{t} {e[(t, 'zero_shot')].fmt()} / {e[(t, 'icl_5shot')].fmt()} / {e[(t, tv)].fmt()}" for t in tasks)
        + f"; the LTV is above zero-shot on {count([c.verdict for c in cmp.values()])} tasks (binomial sd, one "
        "seed)."), {t: c.a.mean for t, c in cmp.items()}, "zero-shot, binomial sd")


@claim("lens_first_layer", f"The answer becomes readable (lens accuracy > {LENS_READABLE:g}) earlier with the LTV "
       "than with ICL", "logit_lens")
def lens_first_layer(tables, metas) -> Finding:
    rows = tables["logit_lens"]
    _, tv = _lens(rows)
    first = {}
    for t in ordered(rows, "task"):
        for c in ("icl_5shot", tv):
            hit = [r["layer"] for r in pick(rows, task=t, condition=c) if r["accuracy"] > LENS_READABLE]
            first[(t, c)] = min(hit) if hit else None
    both = [t for t in ordered(rows, "task") if first[(t, tv)] is not None and first[(t, "icl_5shot")] is not None]
    earlier = sum(first[(t, tv)] < first[(t, "icl_5shot")] for t in both)
    ltv = [first[(t, tv)] for t in both]
    icl = [first[(t, "icl_5shot")] for t in both]
    return Finding("not tested", (
        f"On the {len(both)} tasks where both get there, the first such layer is {fmt_range(ltv, 0)} with the LTV and "
        f"{fmt_range(icl, 0)} with ICL, earlier with the LTV on {earlier} (no null for a layer index: one seed, "
        "no spread)."), {"earlier": earlier, "tasks": len(both)})
