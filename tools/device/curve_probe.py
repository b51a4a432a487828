"""GPU probe: where the CUDA-graph LTV loss curve leaves the hooked reference (issue 14's "same loss curve to
1e-5"). Trains the LTV of ``antonym`` at layer 15 (batch 16, STEPS steps, default config) under variants that
switch one ingredient of the graph path at a time:

- ``ref``: the hooked path (``fast_path(False)``), run twice (is the reference itself deterministic?);
- ``eager`` / ``eager_cap``: the fast path without graphs (dynamic shapes), torch's AdamW / its
  ``capturable=True`` form;
- ``static_<opt>``: static shapes (full width, fixed label slots) without a graph, with optimizer ``<opt>``:
  ``cap`` (torch's capturable AdamW), ``nocap`` (torch's default), ``graph_adamw`` (``GraphAdamW``);
- ``graph_<opt>``: the graph path with that optimizer (``graph_graph_adamw`` is tvmech's default since
  GraphAdamW), twice for ``cap``.

Writes $OUT/curves.json; prints each variant's largest loss-curve difference from ``ref_a``. Its run of
2026-12-02 (commit d476851, before GraphAdamW, whose update this probe first tried as a local class) is
``benchmarks/results/curve_probe_cuda.json``: capturable AdamW 1.7e-5, static shapes 2e-6 over 40 steps.
``STEPS=40 python tools/device/curve_probe.py``
"""

import json
import os
import time

import torch

import tvmech as tv
import tvmech.methods.training.loop as training
from tvmech.core.fast import fast_path
from tvmech.core.optim import GraphAdamW
from tvmech.methods.learned import LTVConfig, learn_task_vector

STEPS = int(os.environ.get("STEPS", "40"))
DEV = "cuda" if torch.cuda.is_available() else "cpu"
TorchAdamW = torch.optim.AdamW
OPTIMIZERS = {
    "cap": lambda groups, **kw: TorchAdamW(groups, capturable=DEV == "cuda"),
    "nocap": lambda groups, **kw: TorchAdamW(groups),
    "graph_adamw": GraphAdamW,
}
saved = training.Stepper, training.GraphAdamW, TorchAdamW
RealStepper = saved[0]


def variant(name: str, *, fast: bool = True, graphs: bool = True, run_graph: bool = True, opt: str = "") -> dict:
    """One LTV run; ``opt`` replaces the optimizer fit() builds (both its graph and its eager choice)."""
    if opt:
        training.GraphAdamW = OPTIMIZERS[opt]
        torch.optim.AdamW = lambda groups, **kw: OPTIMIZERS[opt](groups, max_steps=STEPS)
    training.Stepper = lambda *a, graph=False, **k: RealStepper(*a, graph=graph and run_graph, **k)
    try:
        with fast_path(fast, cuda_graphs=graphs):
            t = time.perf_counter()
            cfg = LTVConfig(steps=STEPS, eval_every=10**9)
            tvec = learn_task_vector(MODEL, TASK, layers=(15,), config=cfg, progress=False)
            if DEV == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - t
    finally:
        training.Stepper, training.GraphAdamW, torch.optim.AdamW = saved
    return {"name": name, "curve": [r["loss"] for r in tvec.curve], "vector": tvec.vectors.flatten().tolist(),
            "wall_s": wall}


MODEL = tv.load_model(device=DEV)
TASK = tv.builtin_task("antonym")
runs = [variant("ref_a", fast=False, graphs=False), variant("ref_b", fast=False, graphs=False),
        variant("eager", graphs=False), variant("eager_cap", graphs=False, opt="cap" if DEV == "cuda" else "")]
for opt in OPTIMIZERS:
    runs.append(variant(f"static_{opt}", run_graph=False, opt=opt))
    runs.append(variant(f"graph_{opt}", opt=opt))
runs.append(variant("graph_cap_again", opt="cap"))
ref = runs[0]
ref_vector = list(ref["vector"])
for r in runs:
    d = [abs(a - b) for a, b in zip(r["curve"], ref["curve"])]
    r.update(max_abs=max(d), max_rel=max(x / abs(b) for x, b in zip(d, ref["curve"])),
             first_diff_step=next((i for i, x in enumerate(d) if x > 0), None),
             vector_max_abs=max(abs(a - b) for a, b in zip(r.pop("vector"), ref_vector)))
    print(f"{r['name']:18s} max|dloss| {r['max_abs']:.3e} rel {r['max_rel']:.3e} first {r['first_diff_step']} "
          f"|dv| {r['vector_max_abs']:.3e} wall {r['wall_s']:.2f}s", flush=True)
res = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu", "torch": torch.__version__,
       "steps": STEPS, "runs": runs}
with open(os.path.join(os.environ.get("OUT", "/tmp"), "curves.json"), "w") as f:
    json.dump(res, f, indent=1)
