"""GPU probe of the fast path (one run on the device, 2026-12-01): LTV step and layer-sweep timings by path
(CUDA graph, eager fast path, hooked path), the graphed loss curve against the hooked one, and the 30-layer sweep
against a hooked per-layer loop estimated from layers 0, 15, 29. Output: $OUT/probe.json (kept as
benchmarks/results/probe_fast_cuda.json). Run after ../shared/device/stage.sh's pieces:
``python tools/device/probe_fast.py``."""
import json
import os
import time

import torch

import tvmech as tv
from tvmech.core.fast import fast_path
from tvmech.methods.learned import LTVConfig, learn_layer_sweep, learn_task_vector

out = os.environ.get("OUT", "/tmp")
res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}


def sync():
    torch.cuda.synchronize()


def timed(fn):
    sync()
    t = time.perf_counter()
    r = fn()
    sync()
    return r, time.perf_counter() - t


def per_step(model, task, layer, steps, **fp):
    with fast_path(**fp):
        cfg = lambda s: LTVConfig(steps=s, eval_every=10**9)  # noqa: E731
        learn_task_vector(model, task, layers=(layer,), config=cfg(3), progress=False)
        a, ta = timed(lambda: learn_task_vector(model, task, layers=(layer,), config=cfg(3), progress=False))
        b, tb = timed(lambda: learn_task_vector(model, task, layers=(layer,), config=cfg(steps + 3), progress=False))
    return (tb - ta) / steps, b


task = tv.builtin_task("antonym")
for dtype in (torch.float32, torch.bfloat16):
    name = str(dtype).split(".")[-1]
    m = tv.load_model(device="cuda", dtype=dtype, verbose=False)
    r = {}
    paths = (("graph", dict(enabled=True, cuda_graphs=True)), ("eager_fast", dict(enabled=True, cuda_graphs=False)),
             ("hooked", dict(enabled=False)))
    for label, fp in paths:
        try:
            s, v = per_step(m, task, 15, 40 if label != "hooked" else 20, **fp)
            r[label] = {"ms_per_step": s * 1000, "curve": [c["loss"] for c in v.curve]}
        except Exception as e:  # noqa: BLE001
            r[label] = {"error": f"{type(e).__name__}: {e}"}
        print(name, label, {k: v for k, v in r[label].items() if k != "curve"}, flush=True)
    if "curve" in r.get("graph", {}) and "curve" in r.get("hooked", {}):
        n = min(len(r["graph"]["curve"]), len(r["hooked"]["curve"]))
        pairs = zip(r["graph"]["curve"][:n], r["hooked"]["curve"][:n])
        r["curve_max_diff_graph_vs_hooked"] = max(abs(a - b) for a, b in pairs)
    for k in list(r):
        if isinstance(r[k], dict):
            r[k].pop("curve", None)
    # sweep 30 x 100 (forked, graph) vs per-layer loop estimated from 3 layers (hooked, 100 steps)
    cfg = LTVConfig(steps=100, eval_every=10**9)
    try:
        learn_layer_sweep(m, task, range(30), config=LTVConfig(steps=3, eval_every=10**9), progress=False)
        _, t_sweep = timed(lambda m=m: learn_layer_sweep(m, task, range(30), config=cfg, progress=False))
        r["sweep_30x100_s"] = t_sweep
    except Exception as e:  # noqa: BLE001
        r["sweep_error"] = f"{type(e).__name__}: {e}"
    with fast_path(False):
        _, t_loop = timed(lambda m=m: [learn_task_vector(m, task, layers=(layer,), config=cfg, progress=False)
                                       for layer in (0, 15, 29)])
    r["loop_3_layers_hooked_s"] = t_loop
    r["loop_30_est_s"] = t_loop * 10
    print(name, r, flush=True)
    res[name] = r
    del m
    torch.cuda.empty_cache()
json.dump(res, open(os.path.join(out, "probe.json"), "w"), indent=2)
print(json.dumps(res, indent=2))
