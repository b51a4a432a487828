"""Time (and cProfile) the paper-preset experiments on one task: where a figure step spends its time.

    python tools/device/profile_steps.py OUT_DIR [--profile step ...] [--task antonym] [--device cuda]

Each experiment runs with its paper defaults (its Config's own) restricted to one task; LTVs are kept in
OUT_DIR/vectors (trained on first use, so run twice to time the steps without training). Prints one line per
step (seconds) and, for the profiled steps, the 25 functions with the most cumulative time; writes
OUT_DIR/<step>.prof.
"""

import argparse
import cProfile
import dataclasses
import inspect
import pstats
import time
from pathlib import Path

import torch

import tvmech as tv
from tvmech.experiments.vectors import VectorStore
from tvmech.pipeline.steps import STEPS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--profile", nargs="*", default=[])
    ap.add_argument("--only", nargs="*", default=[n for n in STEPS if n not in ("composition", "synthetic")])
    ap.add_argument("--task", default="antonym")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    model = tv.load_model(device=args.device)
    store = VectorStore(args.out / "vectors", False)
    for name in args.only:
        mod = STEPS[name].experiment
        fields = {f.name for f in dataclasses.fields(mod.Config)}
        cfg = mod.Config(**({"tasks": (args.task,)} if "tasks" in fields else {}))
        params = inspect.signature(mod.run).parameters
        kw = {k: v for k, v in (("vectors", store), ("progress", False)) if k in params}
        prof = cProfile.Profile() if name in args.profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        mod.run(model, cfg, **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        if prof:
            prof.disable()
        print(f"{name}: {time.perf_counter() - t0:.1f} s{' (profiled)' if prof else ''}", flush=True)
        if prof:
            prof.dump_stats(args.out / f"{name}.prof")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
