"""Figure steps of the mechanism experiments (issue 4): ``ov_circuits`` (OV / MLP reconstruction of an LTV),
``key_heads`` (Taylor scores vs exact ablation, key vs random head ablation, layer histogram) and ``sinks``
(attention-sink statistics of key vs random heads). Each step only orchestrates.

Sizing (13 minutes for the three steps on the 10 built-in tasks, one thread on a shared 2-core CPU): LTVs at
``--mech-layer`` (default 15; reused from ``<out>/vectors``, trained there otherwise); accuracies on the first
``--mech-n-test`` (48) test queries of each task (``--n-test`` overrides); Taylor scores, key-head selection,
exact ablations and the mean-ablation means on the first ``--mech-n-score`` (32) *training* queries, so that
heads are chosen on other prompts than those they are evaluated on; exact ablation of every
``--exact-every``-th head of the Taylor ranking (27 of 270 heads by default), spread over all ranks.
"""

from __future__ import annotations

import argparse

from tvmech.methods.function_vectors import mean_head_z
from tvmech.analysis.heads import ablation_effects, key_heads, key_vs_random, random_head_sets, spearman, taylor_scores
from tvmech.analysis.ov import reconstruction_accuracy
from tvmech.data.prompts import make_prompts
from tvmech.analysis.sinks import attention_stats, check_threshold, compare_sets
from tvmech.data.tasks import builtin_task
from tvmech.figures import mechanism_plots as mp
from tvmech.figures.cache import cached, layer_vectors, per_task_rows
from tvmech.figures.export import save_figure


def _settings(ctx: dict, args: argparse.Namespace, **extra) -> dict:
    return {"tasks": args.tasks, "layer": args.mech_layer, "ltv_steps": args.ltv_steps,
            "n_test": args.n_test or args.mech_n_test, "seed": args.seed, "model": ctx["model_name"], **extra}


def _data(args: argparse.Namespace, name: str):
    task = builtin_task(name)
    sp = task.splits(args.seed)
    return task, sp.test[: args.n_test or args.mech_n_test], make_prompts(task, sp.train[: args.mech_n_score], 0)


def _heads_settings(ctx: dict, args: argparse.Namespace) -> dict:
    return _settings(ctx, args, n_score=args.mech_n_score, frac=args.key_frac, n_random=args.n_random,
                     exact_every=args.exact_every)


def step_ov(ctx: dict, args: argparse.Namespace) -> None:
    settings = _settings(ctx, args)
    path = args.out / "ov_reconstruction.json"
    rows, meta = cached(path, settings, args.force, ctx)
    if rows is None:
        vecs = layer_vectors(ctx, args, args.tasks, args.mech_layer)

        def compute(name: str) -> list[dict]:
            task, test, _ = _data(args, name)
            return reconstruction_accuracy(ctx["model"](), vecs[name], task, test, progress=True)

        rows = per_task_rows(path, settings, args.tasks, compute)
    paths = save_figure(mp.reconstruction_figure(rows, ctx["model_name"]), args.out, "ov_reconstruction", rows, meta,
                        png=not args.no_png)
    print(f"ov_reconstruction: {', '.join(str(p) for p in paths.values() if p)}")


def _head_rows(ctx: dict, args: argparse.Namespace, name: str, vec) -> list[dict]:
    """One task: every head's Taylor score, exact zero-ablation effects on a spread subset, and the key vs
    random ablations. Rows are tagged ``part`` = ``score`` / ``ablation``."""
    if args.exact_every < 1:
        raise ValueError(f"--exact-every {args.exact_every} is not valid: it must be >= 1")
    model = ctx["model"]()
    task, test, score_prompts = _data(args, name)
    scores = taylor_scores(model, vec, task, score_prompts)
    ranking = scores.ranking()
    key = set(key_heads(scores, args.key_frac))
    subset = ranking[:: args.exact_every]
    exact = ablation_effects(model, vec, task, score_prompts, subset, progress=True).abs().mean(1)
    exact_of = {h: float(e) for h, e in zip(subset, exact)}
    rho = spearman(scores.taylor[tuple(zip(*subset))], exact)
    rows = [{"part": "score", "task": name, "layer": l, "head": h, "rank": i, "taylor": float(scores.taylor[l, h]),
             "signed": float(scores.signed[l, h]), "key": (l, h) in key, "exact": exact_of.get((l, h)),
             "spearman": rho} for i, (l, h) in enumerate(ranking)]
    means = mean_head_z(model, task, score_prompts)
    ablations = key_vs_random(model, vec, task, test, scores, frac=args.key_frac, n_random=args.n_random,
                              seed=args.seed, means=means, progress=True)
    return rows + [{"part": "ablation", **r} for r in ablations]


def _key_sets(ctx: dict, args: argparse.Namespace, vecs: dict) -> dict[str, list[tuple[int, int]]]:
    """Key heads per task: from the key_heads step's saved scores when their settings match, else computed
    with the LTVs ``vecs``."""
    saved, _ = cached(args.out / "key_heads_layers.json", _heads_settings(ctx, args), args.force, ctx)
    if saved is not None and {r["task"] for r in saved} >= set(args.tasks):
        return {t: [(r["layer"], r["head"]) for r in saved if r["task"] == t and r["key"]] for t in args.tasks}
    out = {}
    for name in args.tasks:
        task, _, score_prompts = _data(args, name)
        out[name] = key_heads(taylor_scores(ctx["model"](), vecs[name], task, score_prompts), args.key_frac)
    return out


def step_key_heads(ctx: dict, args: argparse.Namespace) -> None:
    settings = _heads_settings(ctx, args)
    names = ("key_heads_ablation", "key_heads_taylor", "key_heads_layers")
    found = [cached(args.out / f"{n}.json", settings, args.force, ctx) for n in names]
    meta = found[0][1]
    if all(rows is not None for rows, _ in found):
        ablation, taylor, scores = (rows for rows, _ in found)
    else:
        vecs = layer_vectors(ctx, args, args.tasks, args.mech_layer)
        rows = per_task_rows(args.out / "key_heads.json", settings, args.tasks,
                             lambda t: _head_rows(ctx, args, t, vecs[t]))
        strip = lambda r: {k: v for k, v in r.items() if k != "part"}  # noqa: E731
        ablation = [strip(r) for r in rows if r["part"] == "ablation"]
        scores = [strip(r) for r in rows if r["part"] == "score"]
        taylor = [{k: r[k] for k in ("task", "layer", "head", "rank", "taylor", "exact", "spearman")}
                  for r in scores if r["exact"] is not None]
    n_layers = max(r["layer"] for r in scores) + 1
    figs = {"key_heads_ablation": (mp.key_ablation_figure(ablation, ctx["model_name"]), ablation),
            "key_heads_taylor": (mp.taylor_exact_figure(taylor, ctx["model_name"]), taylor),
            "key_heads_layers": (mp.key_layers_figure(scores, n_layers, args.mech_layer, ctx["model_name"]), scores)}
    paths = [p for name, (fig, rows) in figs.items()
             for p in save_figure(fig, args.out, name, rows, meta, png=not args.no_png).values() if p]
    print(f"key_heads: {', '.join(str(p) for p in paths)}")


def step_sinks(ctx: dict, args: argparse.Namespace) -> None:
    threshold = check_threshold(args.sink_threshold)
    settings = {**_heads_settings(ctx, args), "threshold": threshold}
    path = args.out / "attention_sinks.json"
    rows, meta = cached(path, settings, args.force, ctx)
    if rows is None:
        vecs = layer_vectors(ctx, args, args.tasks, args.mech_layer)
        keys = _key_sets(ctx, args, vecs)
        rows = []
        for name in args.tasks:
            model = ctx["model"]()
            task, test, _ = _data(args, name)
            stats = attention_stats(model, task, make_prompts(task, test, 0), vecs[name], threshold=threshold)
            key = keys[name]
            rnd = random_head_sets(stats.first.shape[0], stats.first.shape[1], len(key), args.n_random, args.seed,
                                   exclude=key)
            rows += [{"task": name, **r} for r in compare_sets(stats, key, rnd, model)]
    paths = save_figure(mp.sinks_figure(rows, ctx["model_name"], threshold), args.out, "attention_sinks", rows, meta,
                        png=not args.no_png)
    print(f"attention_sinks: {', '.join(str(p) for p in paths.values() if p)}")


STEPS = {"ov_circuits": step_ov, "key_heads": step_key_heads, "sinks": step_sinks}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mechanism (ov_circuits, key_heads, sinks)")
    g.add_argument("--mech-layer", type=int, default=15, help="injection layer of the analysed LTVs (default 15)")
    g.add_argument("--mech-n-test", type=int, default=48,
                   help="test queries per task for the mechanism steps when --n-test is not given (default 48)")
    g.add_argument("--mech-n-score", type=int, default=32,
                   help="training queries per task for Taylor scores, exact ablations and ablation means (default 32)")
    g.add_argument("--key-frac", type=float, default=0.1, help="share of heads that are key heads (default 0.1)")
    g.add_argument("--n-random", type=int, default=5, help="random head sets (seeds) per comparison (default 5)")
    g.add_argument("--exact-every", type=int, default=10,
                   help="exact ablation of every n-th head of the Taylor ranking (default 10: 27 of 270 heads)")
    g.add_argument("--sink-threshold", type=float, default=0.3,
                   help="attention to the first token above which a prompt counts as a sink (default 0.3)")
