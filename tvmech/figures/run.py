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
from ..learn import LTVConfig
from ..robustness import robustness_table
from ..sweep import layer_sweep
from ..models import load_model
from ..tasks import BUILTIN, builtin_tasks
from . import plots
from .export import save_figure

log = logging.getLogger("tvmech.figures")


def _cached_rows(path: Path, settings: dict, force: bool) -> list[dict] | None:
    if force or not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data["rows"] if data.get("meta", {}).get("settings") == settings else None


def step_icl(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "ks": [0, 1, 2, 5, 10], "n_test": args.n_test, "seed": args.seed,
                "model": ctx["model_name"]}
    rows = _cached_rows(args.out / "icl_accuracy.json", settings, args.force)
    if rows is None:
        tasks = builtin_tasks(tuple(args.tasks))
        rows = icl_accuracy(ctx["model"](), tasks, settings["ks"], n_test=args.n_test, seed=args.seed)
    fig = plots.icl_accuracy_figure(rows, ctx["model_name"])
    meta = {"settings": settings, "device": ctx["device"], "date": time.strftime("%Y-%m-%d")}
    paths = save_figure(fig, args.out, "icl_accuracy", rows, meta, png=not args.no_png)
    print(f"icl_accuracy: {', '.join(str(p) for p in paths.values() if p)}")


def step_sweep(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "layers": args.sweep_layers, "ltv_steps": args.ltv_steps, "k": 5,
                "methods": ["ltv", "vanilla", "fv"],
                "n_test": args.n_test, "seed": args.seed, "model": ctx["model_name"]}
    rows = _cached_rows(args.out / "layer_sweep.json", settings, args.force)
    if rows is None:
        cfg = LTVConfig(steps=args.ltv_steps, seed=args.seed)
        rows = layer_sweep(ctx["model"](), builtin_tasks(tuple(args.tasks)), args.sweep_layers, config=cfg,
                           n_test=args.n_test, seed=args.seed)
    meta = {"settings": settings, "device": ctx["device"], "date": time.strftime("%Y-%m-%d")}
    paths = [*save_figure(plots.layer_sweep_figure(rows, ctx["model_name"]), args.out, "layer_sweep", rows, meta,
                          png=not args.no_png).values(),
             *save_figure(plots.layer_sweep_by_task_figure(rows, ctx["model_name"]), args.out,
                          "layer_sweep_by_task", png=not args.no_png).values()]
    print(f"layer_sweep: {', '.join(str(p) for p in paths if p)}")


def step_robustness(ctx: dict, args: argparse.Namespace) -> None:
    settings = {"tasks": args.tasks, "ltv_steps": args.ltv_steps, "k": 5, "n_test": args.n_test, "seed": args.seed,
                "model": ctx["model_name"]}
    rows = _cached_rows(args.out / "robustness.json", settings, args.force)
    if rows is None:
        rows = robustness_table(ctx["model"](), builtin_tasks(tuple(args.tasks)),
                                config=LTVConfig(steps=args.ltv_steps, seed=args.seed), n_test=args.n_test)
    refs = {}
    sweep = args.out / "layer_sweep.json"
    if sweep.is_file():  # reference lines from the sweep's zero-shot and ICL rows, when present
        srows = json.loads(sweep.read_text())["rows"]
        for m in ("zero_shot", "icl_5shot"):
            vals = [r["accuracy"] for r in srows if r["method"] == m and r["task"] in args.tasks]
            if vals:
                refs[m] = sum(vals) / len(vals)
    meta = {"settings": settings, "device": ctx["device"], "date": time.strftime("%Y-%m-%d")}
    paths = save_figure(plots.robustness_figure(rows, refs), args.out, "robustness", rows, meta, png=not args.no_png)
    print(f"robustness: {', '.join(str(p) for p in paths.values() if p)}")


STEPS: dict[str, Callable[[dict, argparse.Namespace], None]] = {
    "icl": step_icl, "sweep": step_sweep, "robustness": step_robustness,
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
    p.add_argument("--model", default=None, help="model source (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--force", action="store_true", help="recompute even where saved numbers match the settings")
    p.add_argument("--no-png", action="store_true", help="skip static PNG export")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
