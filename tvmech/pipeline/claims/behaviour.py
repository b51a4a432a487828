"""Claims on what task vectors do: in-context accuracy, the layer sweep, robustness, transfer, cosine,
composition and the parameter-efficient comparison (rules: :mod:`tvmech.pipeline.claims.core`).

Every claim here is one run unless its JSON holds several run seeds; a single run's spread is the binomial sd
of its accuracies over the test queries.
"""

from __future__ import annotations

from statistics import fmean

from tvmech.data.tasks import BUILTIN, CLASSIFICATION_TASKS
from tvmech.pipeline.claims.core import (
    Comparison,
    Est,
    Finding,
    all_of,
    claim,
    const,
    count,
    estimate,
    exceeds,
    fmt_range,
    not_run,
    pick,
)
from tvmech.pipeline.readme_tables import ordered, scoring_views


def vs(c: Comparison, digits: int = 2) -> str:
    """``0.70 vs 0.24 (Δ +0.46 > 2 × sd 0.02)``."""
    return f"{c.a.fmt(digits)} vs {c.b.fmt(digits)} ({c.fmt(digits)})"


def chance(task: str) -> float | None:
    """1 / (number of labels) of a built-in classification task, else ``None``."""
    labels = BUILTIN.get(task, {}).get("labels")
    return 1 / len(labels) if labels else None


def word_rows(rows: list[dict]) -> list[dict]:
    """The rows of the word tasks (every task but the classification ones)."""
    return [r for r in rows if r.get("task") not in CLASSIFICATION_TASKS]


def _k(rows: list[dict], prefer: int = 5) -> int | None:
    ks = sorted(k for k in ordered(rows, "k") if k)
    return prefer if prefer in ks else (ks[-1] if ks else None)


@claim("icl_word_tasks", "Demonstrations lift the word tasks above zero-shot", "icl_accuracy")
def icl_word_tasks(tables, metas) -> Finding:
    rows = word_rows(tables["icl_accuracy"])
    k, tasks = _k(rows), ordered(rows, "task")
    if k is None or not pick(rows, k=0):
        return not_run("zero-shot and k-shot accuracy of a word task")
    per = {t: exceeds(estimate(pick(rows, task=t, k=k)), estimate(pick(rows, task=t, k=0))) for t in tasks}
    mean = exceeds(estimate(pick(rows, k=k)), estimate(pick(rows, k=0)))
    ranked = sorted(tasks, key=lambda t: -per[t].a.mean)
    missed = [t for t in tasks if not per[t].holds]
    return Finding(mean.verdict, (
        f"Zero-shot the {len(tasks)} word tasks score {fmt_range([per[t].b.mean for t in tasks])}; with {k} "
        f"demonstrations their mean is {vs(mean)}, above zero-shot on {count([c.verdict for c in per.values()])} "
        f"tasks{' (not ' + ', '.join(missed) + ')' if missed else ''}; highest "
        + ", ".join(f"{t} {per[t].a.fmt()}" for t in ranked[:3]) + f", lowest {ranked[-1]} {per[ranked[-1]].a.fmt()}."),
        {"k": k, "mean_k": mean.a.mean, "mean_zero": mean.b.mean, "lifted": len(tasks) - len(missed)},
        "zero-shot (k = 0), binomial sd", f"{mean.a.fmt()} vs {mean.b.fmt()}")


def _above_chance(rows: list[dict], task: str) -> tuple[list[int], dict[int, Comparison]]:
    mine = pick(rows, task=task, scoring=("label_set", None))
    ks = sorted(ordered(mine, "k"))
    return ks, {k: exceeds(estimate(pick(mine, k=k)), const(chance(task))) for k in ks}


@claim("icl_nli_chance", "Demonstrations lift nli above chance (1/3)", "icl_accuracy")
def icl_nli_chance(tables, metas) -> Finding:
    ks, per = _above_chance(tables["icl_accuracy"], "nli")
    if not ks:
        return not_run("nli")
    verdict = "holds" if any(c.holds for c in per.values()) else "does not hold"
    return Finding(verdict, "Label-set accuracy at k = " + ", ".join(
        f"{k}: {per[k].a.fmt()}" for k in ks) + f" (n {pick(tables['icl_accuracy'], task='nli')[0].get('n')}); above "
        f"chance beyond 2 × the binomial sd at {sum(c.holds for c in per.values())} of {len(ks)} k.",
        {k: per[k].a.mean for k in ks}, "chance 1/3, binomial sd", f"{fmt_range([c.a.mean for c in per.values()])}")


@claim("icl_sentiment_zero_shot", "Zero-shot sentiment is above chance (1/2) under label-set scoring",
       "icl_accuracy")
def icl_sentiment_zero_shot(tables, metas) -> Finding:
    rows = tables["icl_accuracy"]
    ks, per = _above_chance(rows, "sentiment")
    if 0 not in per:
        return not_run("zero-shot sentiment")
    mine = pick(rows, task="sentiment", scoring=("label_set", None))
    lift = {k: exceeds(estimate(pick(mine, k=k)), estimate(pick(mine, k=0))) for k in ks if k}
    return Finding(per[0].verdict, (
        f"Zero-shot {vs(per[0])}; demonstrations raise it beyond the spread at "
        f"{sum(c.holds for c in lift.values())} of {len(lift)} k (k = " + ", ".join(
            f"{k}: {c.a.fmt()}" for k, c in lift.items()) + ")."),
        {"zero_shot": per[0].a.mean}, "chance 1/2, binomial sd", per[0].a.fmt())


def headline(rows: list[dict]) -> list[dict]:
    """The full-vocabulary view of rows scored two ways (``scoring``): a label-set task's ``first_token`` rows, every
    other task's own; rows with one scoring per task pass unchanged (:func:`~tvmech.pipeline.readme_tables.
    scoring_views`)."""
    return dict(scoring_views(rows, "first_token")).get("first_token", rows)


def own(rows: list[dict]) -> list[dict]:
    """The tasks' own scoring of rows scored two ways (label set for the classification tasks)."""
    return dict(scoring_views(rows)).get("label_set", rows)


def sweep_layers(rows: list[dict]) -> tuple[list[int], int]:
    layers = sorted(ordered([r for r in rows if r.get("layer") is not None], "layer"))
    return layers, 15 if 15 in layers else layers[len(layers) // 2]


@claim("sweep_ltv_vs_zero_shot", "At the middle layer the LTV lifts every task above zero-shot", "layer_sweep")
def sweep_ltv_vs_zero_shot(tables, metas) -> Finding:
    rows = headline(tables["layer_sweep"])
    _, mid = sweep_layers(rows)
    tasks = ordered(rows, "task")
    per = {t: exceeds(estimate(pick(rows, task=t, method="ltv", layer=mid)),
                      estimate(pick(rows, task=t, method="zero_shot"))) for t in tasks}
    missed = [t for t in tasks if not per[t].holds]
    return Finding(all_of([c.verdict for c in per.values()]), (
        f"LTV at layer {mid} above zero-shot on {count([c.verdict for c in per.values()])} tasks"
        + ("" if not missed else "; not on " + "; ".join(f"{t}: {vs(per[t])}" for t in missed)) + "."),
        {"layer": mid, "lifted": len(tasks) - len(missed), "tasks": len(tasks)}, "zero-shot, binomial sd")


@claim("sweep_ltv_vs_icl", "At the middle layer the LTV beats 5-shot ICL on the word tasks", "layer_sweep")
def sweep_ltv_vs_icl(tables, metas) -> Finding:
    rows = word_rows(headline(tables["layer_sweep"]))
    _, mid = sweep_layers(rows)
    tasks = ordered(rows, "task")
    ltv = {t: estimate(pick(rows, task=t, method="ltv", layer=mid)) for t in tasks}
    icl = {t: estimate(pick(rows, task=t, method="icl_5shot")) for t in tasks}
    above = [t for t in tasks if exceeds(ltv[t], icl[t]).holds]
    below = [t for t in tasks if exceeds(icl[t], ltv[t]).holds]
    mean = exceeds(estimate(pick(rows, method="ltv", layer=mid)), estimate(pick(rows, method="icl_5shot")))
    tie = [t for t in tasks if t not in above and t not in below]
    return Finding(mean.verdict, (
        f"Mean over the {len(tasks)} word tasks at layer {mid}: {vs(mean)}. Per task the LTV is above ICL on "
        f"{len(above)} ({', '.join(above) or 'none'}), within the spread on {len(tie)} ({', '.join(tie) or 'none'})"
        f" and below on {len(below)} ({', '.join(below) or 'none'})."),
        {"above": len(above), "tie": len(tie), "below": len(below), "layer": mid}, "5-shot ICL, binomial sd")


@claim("sweep_late_layers", "Late layers lose LTV accuracy", "layer_sweep")
def sweep_late_layers(tables, metas) -> Finding:
    rows = headline(tables["layer_sweep"])
    layers, _ = sweep_layers(rows)
    per = {la: estimate(pick(rows, method="ltv", layer=la)) for la in layers}
    best = max(layers, key=lambda la: per[la].mean)
    c = exceeds(per[best], per[layers[-1]])
    zero = estimate(pick(rows, method="zero_shot"))
    first = exceeds(per[layers[0]], zero)
    return Finding(c.verdict, (
        f"Mean LTV accuracy peaks at layer {best} and falls by the last layer {layers[-1]}: {vs(c)}; at the first "
        f"layer {layers[0]} it is {vs(first)} against zero-shot."),
        {"best": best, "best_acc": per[best].mean, "last_acc": per[layers[-1]].mean}, "best layer, binomial sd")


def _beats_extracted(rows: list[dict], layer: int) -> tuple[Est, dict[str, Comparison]]:
    ltv = estimate(pick(rows, method="ltv", layer=layer))
    return ltv, {m: exceeds(ltv, estimate(pick(rows, method=m, layer=layer))) for m in ("vanilla", "fv")
                 if pick(rows, method=m, layer=layer)}


EXTRACTED = {"vanilla": "Vanilla TV", "fv": "FV"}


@claim("ltv_beats_extracted", "The LTV beats the extracted vectors (Vanilla TV, FV) at every layer", "layer_sweep")
def ltv_beats_extracted(tables, metas) -> Finding:
    rows = headline(tables["layer_sweep"])
    layers, mid = sweep_layers(rows)
    per = {la: _beats_extracted(rows, la)[1] for la in layers}
    at = {la: all_of([c.verdict for c in per[la].values()]) for la in layers}
    peaks = []
    for m, label in EXTRACTED.items():
        acc = {la: estimate(pick(rows, method=m, layer=la)) for la in layers if pick(rows, method=m, layer=la)}
        if acc:
            top = max(acc, key=lambda la: acc[la].mean)
            peaks.append(f"{label} peaks at layer {top} ({acc[top].fmt()})")
    ltv, mid_cmp = _beats_extracted(rows, mid)
    seeds = f"{ltv.runs} seeds" if ltv.basis == "seeds" else "one seed"
    return Finding(all_of(list(at.values())), (
        f"The LTV is above both at {count(list(at.values()))} layers ({seeds}); at layer {mid}: LTV {ltv.fmt()}, "
        + ", ".join(f"{EXTRACTED[m]} {c.b.fmt()} ({c.fmt(2)})" for m, c in mid_cmp.items()) + ". "
        + "; ".join(peaks) + "."),
        {"layers": len(layers), "held": sum(v == "holds" for v in at.values())}, "Vanilla TV and FV, same layer",
        f"L{mid}: LTV {ltv.fmt()} vs " + ", ".join(f"{EXTRACTED[m]} {c.b.fmt()}" for m, c in mid_cmp.items())
        + (f"; above both at {count(list(at.values()))} layers" if len(layers) > 1 else ""))


@claim("task_cosine", "LTVs of related tasks point in similar directions", "task_cosine")
def task_cosine(tables, metas) -> Finding:
    rows = [r for r in tables["task_cosine"] if r["task_a"] != r["task_b"]]
    pairs = {tuple(sorted((r["task_a"], r["task_b"]))): r["cosine"] for r in rows}
    top = sorted(pairs, key=lambda p: -pairs[p])[:2]
    return Finding("not tested", (
        f"Mean off-diagonal cosine {fmean(pairs.values()):.2f}; highest " + " and ".join(
            f"{a}/{b} {pairs[(a, b)]:.2f}" for a, b in top) + " (no random-direction baseline in the JSON)."),
        {"mean": fmean(pairs.values()), **{f"{a}/{b}": pairs[(a, b)] for a, b in top}})


def _transfer(tables) -> tuple[dict, dict]:
    acc = {(r["train_task"], r["test_task"]): r for r in tables["task_transfer"]}
    zero = {r["task"]: r for r in pick(own(tables["layer_sweep"]), method="zero_shot")}
    return acc, zero


@claim("transfer_specific", "Each word-task LTV works best on its own task", "task_transfer", "layer_sweep")
def transfer_specific(tables, metas) -> Finding:
    acc, zero = _transfer(tables)
    every = ordered(tables["task_transfer"], "train_task")
    words = [t for t in ordered(tables["task_transfer"], "test_task") if t not in CLASSIFICATION_TASKS]
    own = {t: exceeds(estimate([acc[(t, t)]]), estimate([max((acc[(s, t)] for s in every if s != t and (s, t) in acc),
                                                              key=lambda r: r["accuracy"])])) for t in words}
    lifted, rest = [], []
    for (s, t), r in acc.items():
        if s != t and t in words:
            c = exceeds(estimate([r]), estimate([zero[t]])) if t in zero else None
            (lifted if c is not None and c.holds else rest).append((s, t, r["accuracy"]))
    lifted.sort(key=lambda x: -x[2])
    return Finding(all_of([c.verdict for c in own.values()]), (
        f"Its own task's accuracy beats every other task's LTV on {count([c.verdict for c in own.values()])} "
        f"word tasks. Off the diagonal, another task's LTV lifts a word task above its zero-shot accuracy (beyond 2 × "
        f"the binomial sd) in {len(lifted)} of {len(lifted) + len(rest)} pairs: "
        + ", ".join(f"{s} → {t} {a:.2f}" for s, t, a in lifted)
        + f"; the other {len(rest)} are at most {max((a for *_, a in rest), default=float('nan')):.2f}."),
        {"own_best": sum(c.holds for c in own.values()), "lifted": [(s, t) for s, t, _ in lifted]},
        "the test task's zero-shot accuracy, binomial sd")


@claim("transfer_sentiment", "Foreign LTVs lower sentiment accuracy below its zero-shot level",
       "task_transfer", "layer_sweep")
def transfer_sentiment(tables, metas) -> Finding:
    acc, zero = _transfer(tables)
    if "sentiment" not in zero:
        return not_run("sentiment")
    z = estimate([zero["sentiment"]])
    cmp = {s: exceeds(z, estimate([r])) for (s, t), r in acc.items() if t == "sentiment" and s != "sentiment"}
    low = [s for s, c in cmp.items() if c.holds]
    return Finding("holds" if low else "does not hold", (
        f"On sentiment prompts (zero-shot {z.fmt()}) the other {len(cmp)} LTVs give "
        f"{fmt_range([c.b.mean for c in cmp.values()])}; below zero-shot beyond 2 × the binomial sd for {len(low)}"
        + (": " + ", ".join(f"{s} {cmp[s].b.fmt()}" for s in sorted(low, key=lambda s: cmp[s].b.mean)) if low else "")
        + "."), {"lowered": low}, "zero-shot sentiment, binomial sd")


@claim("composition", "Adding two task LTVs composes the tasks", "composition")
def composition(tables, metas) -> Finding:
    """The sum of the parts' LTVs against zero-shot and against each part's LTV alone, on the composed task,
    under its primary scoring; judged only where 5-shot ICL does the composed task (its headroom,
    :func:`tvmech.experiments.composition.headroom`), else ``not tested``."""
    from tvmech.experiments.composition import headroom

    every = tables["composition"]
    rows = [r for r in every if r.get("role", "composed") == "composed"]
    scoring = metas.get("composition", {}).get("settings", {}).get("scoring") or rows[0].get("scoring")
    rows = pick(rows, scoring=scoring) or rows
    methods = ordered(rows, "method")
    zero = estimate(pick(rows, method="zero_shot"))
    summed = [m for m in methods if m.startswith("sum")]
    if not summed:
        return not_run("a sum of vectors")
    cmp = {m: exceeds(estimate(pick(rows, method=m)), zero) for m in methods if m != "zero_shot"}
    parts = [m for m in methods if m not in ("zero_shot", *summed) and not m.startswith("icl")]
    beat_parts = all_of([exceeds(cmp[summed[0]].a, cmp[m].a).verdict for m in parts if m in cmp])
    room = headroom(every, scoring)
    task = rows[0].get("task")
    verdict = all_of([cmp[summed[0]].verdict, beat_parts]) if room["icl_headroom"] else "not tested"
    return Finding(verdict, (
        f"On `{task}` ({scoring}, n {rows[0].get('n')}): zero-shot {zero.fmt()}, " + ", ".join(
            f"{m} {c.a.fmt()}" for m, c in cmp.items())
        + f"; the sum is above zero-shot: {cmp[summed[0]].verdict} ({cmp[summed[0]].fmt(2)}), above each part alone: "
        f"{beat_parts}; 5-shot ICL {'does' if room['icl_headroom'] else 'does not do'} the composed task (headroom "
        f"{room['composed']['gain']:+.2f})" + ("" if room["icl_headroom"] else ", so the sum cannot be judged") + "."),
        {m: c.a.mean for m, c in cmp.items()}, "zero-shot and each vector alone, binomial sd")


@claim("peft_accuracy", "LTV, prefix tuning and LoRA differ in accuracy", "peft")
def peft_accuracy(tables, metas) -> Finding:
    rows = [{**r, "n": r.get("n", r.get("n_test"))} for r in tables["peft"]]
    est = {r["method"]: estimate([r]) for r in rows}
    pairs = [(a, b) for a in est for b in est if a != b]
    cmp = {(a, b): exceeds(est[a], est[b]) for a, b in pairs}
    held = [(a, b) for (a, b), c in cmp.items() if c.holds]
    zero = rows[0].get("zero_shot_accuracy")
    lat = {r["method"]: r.get("step_latency_s") for r in rows}
    return Finding("holds" if held else "does not hold", (
        f"{rows[0].get('task')}: " + ", ".join(f"{m} {e.fmt()}" for m, e in est.items())
        + (f" against zero-shot {zero:.2f}" if zero is not None else "") + f" (n {rows[0].get('n')}); "
        + (", ".join(f"{a} > {b}" for a, b in held) if held else "no pair differs beyond 2 × the binomial sd")
        + ". Step latency (one timing each, no spread): " + ", ".join(
            f"{m} {v * 1e3:.0f} ms" for m, v in lat.items() if v is not None) + "."),
        {m: e.mean for m, e in est.items()}, "each other method, binomial sd")
