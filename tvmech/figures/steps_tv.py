"""Figure steps of the task-vector experiments (issue 3): ICL, layer sweep, robustness, task geometry,
composition and the parameter-efficient comparison. Each step only orchestrates: compute (or reuse saved
numbers), build the figure, save it."""

from __future__ import annotations

import argparse
import json

from tvmech.experiments.icl import icl_accuracy
from tvmech.analysis.geometry import composition_experiment, cosine_matrix, transfer_matrix
from tvmech.methods.learned import LTVConfig
from tvmech.methods.peft import compare_peft
from tvmech.experiments.robustness import robustness_table
from tvmech.sweep import layer_sweep
from tvmech.data.tasks import builtin_tasks
from tvmech.figures import geometry_plots, peft_plots, plots
from tvmech.figures.cache import cached, layer_vectors, per_task_rows
from tvmech.figures.export import save_figure


def step_icl(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "ks": [0, 1, 2, 5, 10], "n_test": args.n_test, "seed": args.seed,
                "model": ctx["model_name"]}
    rows, meta = cached(args.out / "icl_accuracy.json", settings, args.force, ctx)
    if rows is None:
        tasks = builtin_tasks(tuple(args.tasks))
        rows = icl_accuracy(ctx["model"](), tasks, settings["ks"], n_test=args.n_test, seed=args.seed)
    fig = plots.icl_accuracy_figure(rows, ctx["model_name"])
    paths = save_figure(fig, args.out, "icl_accuracy", rows, meta, png=not args.no_png)
    print(f"icl_accuracy: {', '.join(str(p) for p in paths.values() if p)}")


def step_sweep(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "layers": args.sweep_layers, "ltv_steps": args.ltv_steps, "k": 5,
                "methods": ["ltv", "vanilla", "fv"],
                "n_test": args.n_test, "seed": args.seed, "model": ctx["model_name"]}
    rows, meta = cached(args.out / "layer_sweep.json", settings, args.force, ctx)
    if rows is None:
        cfg = LTVConfig(steps=args.ltv_steps, seed=args.seed)
        rows = per_task_rows(args.out / "layer_sweep.json", settings, args.tasks, lambda t: layer_sweep(
            ctx["model"](), builtin_tasks((t,)), args.sweep_layers, config=cfg, n_test=args.n_test, seed=args.seed))
    paths = [*save_figure(plots.layer_sweep_figure(rows, ctx["model_name"]), args.out, "layer_sweep", rows, meta,
                          png=not args.no_png).values(),
             *save_figure(plots.layer_sweep_by_task_figure(rows, ctx["model_name"]), args.out,
                          "layer_sweep_by_task", png=not args.no_png).values()]
    print(f"layer_sweep: {', '.join(str(p) for p in paths if p)}")


def step_robustness(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "ltv_steps": args.ltv_steps, "k": 5, "n_test": args.n_test, "seed": args.seed,
                "model": ctx["model_name"]}
    rows, meta = cached(args.out / "robustness.json", settings, args.force, ctx)
    if rows is None:
        cfg = LTVConfig(steps=args.ltv_steps, seed=args.seed)
        rows = per_task_rows(args.out / "robustness.json", settings, args.tasks, lambda t: robustness_table(
            ctx["model"](), builtin_tasks((t,)), config=cfg, n_test=args.n_test))
    refs = {}
    sweep = args.out / "layer_sweep.json"
    if sweep.is_file():  # reference lines from the sweep's zero-shot and ICL rows, when present
        srows = json.loads(sweep.read_text())["rows"]
        for m in ("zero_shot", "icl_5shot"):
            vals = [r["accuracy"] for r in srows if r["method"] == m and r["task"] in args.tasks]
            if vals:
                refs[m] = sum(vals) / len(vals)
    paths = save_figure(plots.robustness_figure(rows, refs, meta.get("note")), args.out, "robustness", rows, meta,
                        png=not args.no_png)
    print(f"robustness: {', '.join(str(p) for p in paths.values() if p)}")


def step_geometry(ctx: dict, args: argparse.Namespace) -> None:
    layer = args.geometry_layer
    settings = {"tasks": args.tasks, "layer": layer, "ltv_steps": args.ltv_steps, "n_test": args.n_test,
                "seed": args.seed, "model": ctx["model_name"]}
    rows, meta = cached(args.out / "task_transfer.json", settings, args.force, ctx)
    vecs = layer_vectors(ctx, args, args.tasks, layer)
    names, cos = cosine_matrix(vecs)
    if rows is None:
        tasks = {t.name: t for t in builtin_tasks(tuple(args.tasks))}
        rows = transfer_matrix(ctx["model"](), vecs, tasks, n_test=args.n_test, seed=args.seed)
    cos_rows = [{"task_a": a, "task_b": b, "cosine": float(cos[i, j])} for i, a in enumerate(names) for j, b in enumerate(names)]
    paths = [*save_figure(geometry_plots.cosine_heatmap(names, cos, model_name=ctx["model_name"]), args.out,
                          "task_cosine", cos_rows, meta, png=not args.no_png).values(),
             *save_figure(geometry_plots.transfer_heatmap(rows, model_name=ctx["model_name"]), args.out,
                          "task_transfer", rows, meta, png=not args.no_png).values()]
    print(f"geometry: {', '.join(str(p) for p in paths if p)}")


def step_composition(ctx: dict, args: argparse.Namespace) -> None:
    layer = args.geometry_layer
    settings = {"layer": layer, "ltv_steps": args.ltv_steps, "k": 5, "seed": args.seed, "model": ctx["model_name"],
                "scoring": "exact_match"}  # first-token scoring cannot tell 'mar'(quis) from 'mar'(quise)
    rows, meta = cached(args.out / "composition.json", settings, args.force, ctx)
    if rows is None:
        vecs = layer_vectors(ctx, args, ["english_french", "masculine_feminine"], layer)
        rows = composition_experiment(ctx["model"](), vecs["english_french"], vecs["masculine_feminine"], k=5,
                                      seed=args.seed, scoring="exact_match")
    paths = save_figure(geometry_plots.composition_bars(rows, model_name=ctx["model_name"]), args.out, "composition",
                        rows, meta, png=not args.no_png)
    print(f"composition: {', '.join(str(p) for p in paths.values() if p)}")


def step_peft(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"task": "sentiment", "layer": args.geometry_layer, "steps": args.ltv_steps, "seed": args.seed,
                "model": ctx["model_name"]}
    rows, meta = cached(args.out / "peft.json", settings, args.force, ctx)
    if rows is None:
        rows = compare_peft(ctx["model"](), builtin_tasks(("sentiment",))[0], layer=args.geometry_layer,
                            steps=args.ltv_steps, seed=args.seed)
    paths = save_figure(peft_plots.peft_figure(rows, ctx["model_name"]), args.out, "peft", rows, meta,
                        png=not args.no_png)
    print(f"peft: {', '.join(str(p) for p in paths.values() if p)}")


STEPS = {"icl": step_icl, "sweep": step_sweep, "robustness": step_robustness, "geometry": step_geometry,
         "composition": step_composition, "peft": step_peft}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sweep-layers", type=int, nargs="+", default=list(range(0, 30, 3)),
                   help="injection layers of the layer sweep (default: every 3rd)")
    p.add_argument("--geometry-layer", type=int, default=15,
                   help="layer of the LTVs for task geometry, composition and the PEFT comparison")
