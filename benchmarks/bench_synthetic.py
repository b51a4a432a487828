"""Synthetic-ICL training speed (issue 6): milliseconds per training step of each task of a preset, vanilla
(λ = 0) and TVP (λ > 0), and the time a full preset run would take; then (``--figures``) the figures step
end to end with ``--figure-steps`` steps per model, as a smoke test of the device path.

    python benchmarks/bench_synthetic.py --preset gpu --device cuda [--steps 150] [--figures OUT_DIR]

Writes ``benchmarks/results/synthetic_steps_<device>.json``. The full GPU preset itself is
``python -m tvmech.pipeline --only synthetic --synthetic-preset gpu --device cuda``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from tvmech.experiments import synthetic as steps_synthetic
from tvmech.pipeline import cli
from tvmech.synthetic import ModelConfig, SyntheticModel, SyntheticTask, TrainConfig, train


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(preset_name: str, device: str, steps: int, warmup: int = 10, echo: bool = False) -> list[dict]:
    """Milliseconds per training step of each task of the preset, vanilla (λ = 0) then TVP (λ > 0)."""
    preset = steps_synthetic.PRESETS[preset_name]
    rows = []
    for name, kw in preset["tasks"].items():
        task = SyntheticTask(name, **kw)
        for lam in (0.0, preset["train"]["tvp_weight"]):
            model = SyntheticModel(task, ModelConfig(**preset["model"])).to(device)
            cfg = TrainConfig(**{**preset["train"], "tvp_weight": lam, "steps": steps, "log_every": steps})
            train(model, TrainConfig(**{**cfg.__dict__, "steps": warmup}), progress=False)
            sync(device)
            t = time.perf_counter()
            res = train(model, cfg, progress=False)
            sync(device)
            ms = (time.perf_counter() - t) / steps * 1e3
            rows.append({"task": name, "tvp_weight": lam, "ms_per_step": ms,
                         "full_run_min": ms * preset["train"]["steps"] / 6e4, "last": res.curve[-1]})
            if echo:
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="gpu", choices=list(steps_synthetic.PRESETS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=150, help="timed steps per model (after 10 warm-up steps)")
    p.add_argument("--figures", type=Path, default=None, help="also run the figures step into this directory")
    p.add_argument("--figure-steps", type=int, default=200)
    args = p.parse_args()
    rows = measure(args.preset, args.device, args.steps, echo=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    out = Path(__file__).parent / "results" / f"synthetic_steps_{args.device.split(':')[0]}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"preset": args.preset, "device": device, "date": time.strftime("%Y-%m-%d"),
                               "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    if args.figures is not None:
        short = copy.deepcopy(steps_synthetic.PRESETS[args.preset])
        short["train"].update(steps=args.figure_steps, log_every=max(args.figure_steps // 4, 1))
        short["ltv_steps"] = 20
        steps_synthetic.PRESETS[args.preset] = short
        t = time.perf_counter()
        cli.main(["--out", str(args.figures), "--only", "synthetic", "--synthetic-preset", args.preset, "--no-png",
                  "--device", args.device])
        print(f"figures step, {args.figure_steps} steps per model: {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
