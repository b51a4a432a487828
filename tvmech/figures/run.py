"""``python -m tvmech.figures``: recompute and draw every figure. This module only orchestrates.

Each step's numbers are kept in ``<out>/<name>.json`` together with the settings that produced them;
a later run with the same settings redraws from that file instead of recomputing (``--force`` to
recompute). Steps run in order; an interrupted run resumes at the first step without numbers.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from tvmech.core.models import load_model
from tvmech.data.tasks import BUILTIN

log = logging.getLogger("tvmech.figures")

# one module per part of the project; each has ``STEPS`` (name -> step(ctx, args)) and may have
# ``add_arguments(parser)`` for its own options
STEP_MODULES = ("steps_tv", "steps_mechanism", "steps_linear", "steps_synthetic")
_MODULES = [importlib.import_module(f"{__package__}.{m}") for m in STEP_MODULES]
STEPS: dict[str, Callable[[dict, argparse.Namespace], None]] = {k: v for m in _MODULES for k, v in m.STEPS.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tvmech.figures", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("figures"), help="output directory (default: figures)")
    p.add_argument("--only", nargs="+", choices=list(STEPS), help="run only these steps")
    p.add_argument("--tasks", nargs="+", default=list(BUILTIN), choices=list(BUILTIN), metavar="TASK",
                   help="tasks to include (default: all built-in)")
    p.add_argument("--n-test", type=int, default=None, help="cap on test queries per task (default: whole test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ltv-steps", type=int, default=150, help="training steps per learned task vector")
    p.add_argument("--model", default=None, help="model source (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--force", action="store_true", help="recompute even where saved numbers match the settings")
    p.add_argument("--no-png", action="store_true", help="skip static PNG export")
    for m in _MODULES:
        if hasattr(m, "add_arguments"):
            m.add_arguments(p)
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
