"""Claims on the synthetic ICL experiment (``synthetic_offset_*``: a small model trained from scratch with and
without the task-vector-prompting loss); rules: :mod:`tvmech.pipeline.claims.core`.

Errors are ``1 − accuracy`` over ``n`` prompts of one run: their spread is the binomial sd (an error rate has the
same binomial sd as its accuracy).
"""

from __future__ import annotations

from tvmech.pipeline.claims.core import Finding, all_of, claim, estimate, exceeds, not_run, pick

TVP = "synthetic_offset_tv_prompting"
ROB = "synthetic_offset_robustness"
MODELS = {"tvp": "the model trained with the TVP loss", "vanilla": "the model trained without it (λ = 0)"}


def _layer(metas) -> int | None:
    return metas.get(TVP, {}).get("settings", {}).get("train", {}).get("tvp_layer")


def _vector_carries(tables, metas, model: str) -> Finding:
    rows, layer = pick(tables[TVP], model=model), _layer(metas)
    if layer is None or not pick(rows, method="task_vector", layer=layer):
        return not_run(f"the task vector of {model} at the TVP layer")
    err = {m: estimate(pick(rows, method=m, layer=layer), "error") for m in ("task_vector", "shuffled", "random")}
    err["zero_shot"] = estimate(pick(rows, method="zero_shot"), "error")
    err["icl"] = estimate(pick(rows, method="icl"), "error")
    cmp = {m: exceeds(err[m], err["task_vector"]) for m in ("shuffled", "random", "zero_shot")}
    return Finding(all_of([c.verdict for c in cmp.values()]), (
        f"In {MODELS[model]}, query error at layer {layer}: task vector {err['task_vector'].fmt(3)} against another "
        f"prompt's vector {err['shuffled'].fmt(3)}, a random vector of its norm {err['random'].fmt(3)}, the query "
        f"alone {err['zero_shot'].fmt(3)} (ICL {err['icl'].fmt(3)}); lower than all three beyond 2 × the binomial "
        f"sd: {all_of([c.verdict for c in cmp.values()])} (smallest margin "
        f"{min(cmp.values(), key=lambda c: c.diff).fmt(3)})."),
        {m: e.mean for m, e in err.items()}, "shuffled and random vectors, zero-shot; binomial sd")


@claim("synthetic_tvp_vector", "With the TVP loss, one vector at the prescribed layer carries the task", TVP)
def synthetic_tvp_vector(tables, metas) -> Finding:
    return _vector_carries(tables, metas, "tvp")


@claim("synthetic_vanilla_vector", "Without the TVP loss, a vector at that layer carries the task", TVP)
def synthetic_vanilla_vector(tables, metas) -> Finding:
    return _vector_carries(tables, metas, "vanilla")


@claim("synthetic_sharpness", "The TVP loss clusters the extracted vectors by task at the prescribed layer",
       "synthetic_offset_pca", TVP)
def synthetic_sharpness(tables, metas) -> Finding:
    sharp = {(s["model"], s["layer"]): s["sharpness"] for s in metas["synthetic_offset_pca"].get("sharpness", [])}
    layer = _layer(metas)
    if ("tvp", layer) not in sharp or ("vanilla", layer) not in sharp:
        return not_run("the cluster sharpness")
    others = [s for (m, la), s in sharp.items() if m == "tvp" and la != layer]
    return Finding("not tested", (
        f"η² (between-task over total variance) at layer {layer}: {sharp[('tvp', layer)]:.2f} with the TVP loss, "
        f"{sharp[('vanilla', layer)]:.2f} without; other layers of the TVP model at most {max(others):.2f} (one "
        "run, no null)."), {"tvp": sharp[("tvp", layer)], "vanilla": sharp[("vanilla", layer)]})


@claim("synthetic_noise", "With noisy labels, the TVP model's vector errs more than its ICL", ROB)
def synthetic_noise(tables, metas) -> Finding:
    rows = [r for r in pick(tables[ROB], model="tvp") if str(r["condition"]).startswith("label_noise")]
    if not rows:
        return not_run("a label-noise condition")
    cmp = {r["condition"]: exceeds(estimate([r], "tv_error"), estimate([r], "icl_error")) for r in rows}
    return Finding("holds" if any(c.holds for c in cmp.values()) else "does not hold", "; ".join(
        f"{c.replace('label_noise_', 'labels ')} noisy: task vector {x.a.fmt(3)} vs ICL {x.b.fmt(3)} ({x.fmt(3)})"
        for c, x in cmp.items()) + ".", {c: (x.a.mean, x.b.mean) for c, x in cmp.items()}, "ICL, binomial sd")


@claim("synthetic_ood", "The TVP model's vector carries the task to queries outside the demonstrations' range", ROB)
def synthetic_ood(tables, metas) -> Finding:
    rows = {r["model"]: r for r in tables[ROB] if r["condition"] == "ood_query"}
    if "tvp" not in rows:
        return not_run("the out-of-range condition")
    cmp = {m: exceeds(estimate([r], "random_error"), estimate([r], "tv_error")) for m, r in rows.items()}
    return Finding(cmp["tvp"].verdict, "; ".join(
        f"{MODELS[m].removeprefix('the ')}: task vector {c.b.fmt(3)} vs a random vector {c.a.fmt(3)} "
        f"(ICL {rows[m]['icl_error']:.3f}; lower: {c.verdict})" for m, c in cmp.items()) + ".",
        {m: c.b.mean for m, c in cmp.items()}, "a random vector, binomial sd")


LTV = "synthetic_offset_ltv"


@claim("synthetic_ltv", "Without the TVP loss, a learned vector at the TVP layer still lifts accuracy above "
       "zero-shot", LTV)
def synthetic_ltv(tables, metas) -> Finding:
    rows = tables[LTV]
    acc = {(m, x): estimate(pick(rows, model=m, method=x)) for m in MODELS
           for x in ("zero_shot", "ltv", "extracted_mean")}
    if any(e.runs == 0 or e.mean != e.mean for e in acc.values()):
        return not_run("a learned or extracted vector")
    cmp = {m: exceeds(acc[(m, "ltv")], acc[(m, "zero_shot")]) for m in MODELS}
    return Finding(cmp["vanilla"].verdict, "Accuracy on held-out inputs, mean over the offsets: " + "; ".join(
        f"{MODELS[m].removeprefix('the ')}: learned {c.a.fmt()} vs zero-shot {c.b.fmt()} ({c.fmt()}), Hendel's mean "
        f"extracted vector {acc[(m, 'extracted_mean')].fmt()}" for m, c in cmp.items()) + ".",
        {f"{m}_{x}": e.mean for (m, x), e in acc.items()}, "zero-shot, binomial sd")
