"""On the GPU machine: milliseconds per training step of the paper preset's synthetic model (offset task,
the figure script's ``quick`` synthetic preset) on the fast path and on the hooked path, and whether the two
loss curves are identical.

    python tools/device/synthetic_paths.py [--steps 200] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

import tvmech
from tvmech.experiments import synthetic
from tvmech.synthetic import ModelConfig, SyntheticModel, TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    p = synthetic.PRESETS["quick"]
    task = synthetic.Config(preset="quick").task("offset")
    curves = {}
    for fast in (True, False, True):
        for weight in (0.0, 1.0):
            cfg = TrainConfig(**{**p["train"], "steps": args.steps, "seed": 0, "tvp_weight": weight})
            with tvmech.fast_path(fast):
                model = SyntheticModel(task, ModelConfig(**p["model"], seed=0)).to(args.device)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                curves[fast, weight] = train(model, cfg, progress=False).curve
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
            print(f"{'fast' if fast else 'hooked'} λ={weight}: {(time.perf_counter() - t) / args.steps * 1e3:.1f} "
                  f"ms/step", flush=True)
    for weight in (0.0, 1.0):
        print(f"λ={weight}: curves identical: {curves[True, weight] == curves[False, weight]}")


if __name__ == "__main__":
    main()
