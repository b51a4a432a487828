"""``python -m tvmech.figures``: recompute and draw every figure. This module only orchestrates.

Each step's numbers are kept in ``<out>/<name>.json`` together with the settings that produced them;
a later run with the same settings redraws from that file instead of recomputing (``--force`` to
recompute). Steps run in order; an interrupted run resumes at the first step without numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..baseline import icl_accuracy
from ..geometry import composition_experiment, cosine_matrix, transfer_matrix
from ..peft import compare_peft
from ..vectors import TaskVector
from ..learn import LTVConfig, learn_task_vector
from ..robustness import robustness_table
from ..sweep import layer_sweep
from ..models import load_model
from ..tasks import BUILTIN, builtin_tasks
from . import geometry_plots, peft_plots, plots
from ..io import write_json
from .export import save_figure

log = logging.getLogger("tvmech.figures")


def _cached(path: Path, settings: dict, force: bool, ctx: dict) -> tuple[list[dict] | None, dict]:
    """Saved rows and meta for these settings (the meta keeps the device and date of the run that
    computed them); ``(None, fresh meta)`` when there are none."""
    if not force and path.is_file():
        data = json.loads(path.read_text())
        if data.get("meta", {}).get("settings") == settings:
            return data["rows"], data["meta"]
    return None, _meta(ctx, settings)


def _per_task_rows(path: Path, settings: dict, tasks: list[str], compute: Callable[[str], list[dict]]) -> list[dict]:
    """Compute rows task by task, saving after each one in ``<name>.partial.json``, so an interrupted
    run resumes at the first task without rows (for the same settings)."""
    partial = path.with_name(path.stem + ".partial.json")
    key = {k: v for k, v in settings.items() if k != "tasks"}
    rows: list[dict] = []
    if partial.is_file():
        data = json.loads(partial.read_text())
        rows = data["rows"] if data.get("settings") == key else []
    for task in tasks:
        if not any(r["task"] == task for r in rows):
            rows += compute(task)
            write_json(partial, {"settings": key, "rows": rows})
    partial.unlink(missing_ok=True)
    return [r for t in tasks for r in rows if r["task"] == t]


def step_icl(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "ks": [0, 1, 2, 5, 10], "n_test": args.n_test, "seed": args.seed,
                "model": ctx["model_name"]}
    rows, meta = _cached(args.out / "icl_accuracy.json", settings, args.force, ctx)
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
    rows, meta = _cached(args.out / "layer_sweep.json", settings, args.force, ctx)
    if rows is None:
        cfg = LTVConfig(steps=args.ltv_steps, seed=args.seed)
        rows = _per_task_rows(args.out / "layer_sweep.json", settings, args.tasks, lambda t: layer_sweep(
            ctx["model"](), builtin_tasks((t,)), args.sweep_layers, config=cfg, n_test=args.n_test, seed=args.seed))
    paths = [*save_figure(plots.layer_sweep_figure(rows, ctx["model_name"]), args.out, "layer_sweep", rows, meta,
                          png=not args.no_png).values(),
             *save_figure(plots.layer_sweep_by_task_figure(rows, ctx["model_name"]), args.out,
                          "layer_sweep_by_task", png=not args.no_png).values()]
    print(f"layer_sweep: {', '.join(str(p) for p in paths if p)}")


def step_robustness(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "ltv_steps": args.ltv_steps, "k": 5, "n_test": args.n_test, "seed": args.seed,
                "model": ctx["model_name"]}
    rows, meta = _cached(args.out / "robustness.json", settings, args.force, ctx)
    if rows is None:
        cfg = LTVConfig(steps=args.ltv_steps, seed=args.seed)
        rows = _per_task_rows(args.out / "robustness.json", settings, args.tasks, lambda t: robustness_table(
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


def _meta(ctx: dict, settings: dict) -> dict:
    return {"settings": settings, "device": ctx["device"], "date": time.strftime("%Y-%m-%d")}


def layer_vectors(ctx: dict, args: argparse.Namespace, names: list[str], layer: int) -> dict[str, TaskVector]:
    """LTVs at ``layer`` for ``names``, kept under ``<out>/vectors`` and reused when the config matches."""
    cfg = LTVConfig(steps=args.ltv_steps, seed=args.seed)
    out = {}
    for name in names:
        path = args.out / "vectors" / f"{name}_L{layer}"
        if path.with_suffix(".json").is_file() and not args.force:
            vec = TaskVector.load(path)
            if vec.config == json.loads(json.dumps(cfg.__dict__)):
                out[name] = vec
                continue
        vec = learn_task_vector(ctx["model"](), builtin_tasks((name,))[0], layers=(layer,), config=cfg)
        vec.save(path, overwrite=True)
        out[name] = vec
    return out


def step_geometry(ctx: dict, args: argparse.Namespace) -> None:
    layer = args.geometry_layer
    settings = {"tasks": args.tasks, "layer": layer, "ltv_steps": args.ltv_steps, "n_test": args.n_test,
                "seed": args.seed, "model": ctx["model_name"]}
    rows, meta = _cached(args.out / "task_transfer.json", settings, args.force, ctx)
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
    rows, meta = _cached(args.out / "composition.json", settings, args.force, ctx)
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
    rows, meta = _cached(args.out / "peft.json", settings, args.force, ctx)
    if rows is None:
        rows = compare_peft(ctx["model"](), builtin_tasks(("sentiment",))[0], layer=args.geometry_layer,
                            steps=args.ltv_steps, seed=args.seed)
    paths = save_figure(peft_plots.peft_figure(rows, ctx["model_name"]), args.out, "peft", rows, meta,
                        png=not args.no_png)
    print(f"peft: {', '.join(str(p) for p in paths.values() if p)}")


STEPS: dict[str, Callable[[dict, argparse.Namespace], None]] = {
    "icl": step_icl, "sweep": step_sweep, "robustness": step_robustness, "geometry": step_geometry,
    "composition": step_composition, "peft": step_peft,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tvmech.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("figures"), help="output directory (default: figures)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    p.add_argument("--tasks", nargs="+", default=list(BUILTIN), choices=list(BUILTIN), metavar="TASK",
                   help="tasks to include (default: all built-in)")
    p.add_argument("--n-test", type=int, default=None, help="cap on test queries per task (default: whole test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep-layers", type=int, nargs="+", default=list(range(0, 30, 3)),
                   help="injection layers of the layer sweep (default: every 3rd)")
    p.add_argument("--ltv-steps", type=int, default=150, help="training steps per learned task vector")
    p.add_argument("--geometry-layer", type=int, default=15,
                   help="layer of the LTVs for task geometry, composition and the PEFT comparison")
    p.add_argument("--model", default=None, help="model source (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--force", action="store_true", help="recompute even where saved numbers match the settings")
    p.add_argument("--no-png", action="store_true", help="skip static PNG export")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("kaleido", "choreographer", "logistro"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    loaded: list = []

    def model():  # loaded lazily: a redraw from saved numbers needs no model
        if not loaded:
            loaded.append(load_model(args.model, device=args.device))
        return loaded[0]

    ctx = {"model": model, "model_name": args.model or "SmolLM2-135M-Instruct", "device": args.device}
    for name in args.only or list(STEPS):
        STEPS[name](ctx, args)
    return 0
