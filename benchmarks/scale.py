"""The per-task pipeline on an 8B-shaped random Llama (issue 29): each step's time and peak GPU memory, first call
and warm, on one GPU; then the same steps with half of the layers offloaded to the CPU by accelerate's
``device_map`` (what a user without the GPU memory for the whole model does), as ratios to the one-GPU run.

    python benchmarks/scale.py --device cuda --out scale.json            # the GPU run (~4 min on an H100)
    python benchmarks/scale.py --small --out /tmp/scale.json             # a tiny Llama on the CPU (the test)

The model: Llama 3 8B's shape (32 layers, d_model 4096, MLP 14336, 32 heads / 8 KV heads, vocab 128256) in
bfloat16, built directly on the GPU (random weights: only cost and behaviour count), wrapped with ``tv.wrap`` and
a character tokenizer; one built-in task, layer ``n_layers // 2``. Each step is called twice ("first": the first
call in the process, fingerprint and caches included; "warm": the second). ``--before`` also times the old
fingerprint (host SHA-256 of every weight) and the old least squares (the host's SVD) on the same data.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's tvmech
from suite import LLAMA_8B, char_tokenizer  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=128)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", type=Path, required=True, help="the JSON file written")
    p.add_argument("--small", action="store_true", help="a tiny Llama in float32 (fewer LTV steps): tests the script")
    p.add_argument("--layers", type=int, default=32, help="layers of the 8B-shaped model")
    p.add_argument("--task", default="antonym")
    p.add_argument("--no-split", action="store_true", help="skip the device_map section")
    p.add_argument("--before", action="store_true", help="also time the old fingerprint and least squares")
    p.add_argument("--budget-s", type=float, default=280.0, help="steps that would start after this are skipped")
    return p.parse_args(argv)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], object], device: str) -> tuple[float, float | None, object]:
    """(seconds, peak GPU memory in GiB (None on the CPU), result) of one call."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    dt = time.perf_counter() - t
    return dt, (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None), out


def build(args: argparse.Namespace, wrapped: bool = True):
    """The random Hugging Face Llama (built on the device, in its dtype, seed 0) and, with ``wrapped``, its wrapped
    model."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    import tvmech as tv

    shape, dtype = (SMALL, torch.float32) if args.small else (LLAMA_8B, torch.bfloat16)
    cfg = LlamaConfig(**shape, num_hidden_layers=4 if args.small else args.layers, max_position_embeddings=2048,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(args.device):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="eager")
    return hf, (tv.wrap(hf, char_tokenizer(), "llama-8b-shaped", device=args.device, dtype=dtype) if wrapped else None)


def pipeline(model, task, small: bool, split: bool = False) -> list[tuple[str, Callable[[], object]]]:
    """``(name, call)`` of every step, in order; the calls share the first LTV (``state["vec"]``)."""
    import tvmech as tv
    from tvmech.analysis.tv_map import fit_prompts
    from tvmech.experiments.key_heads import key_vs_random
    from tvmech.experiments.ov_reconstruction import reconstruction_accuracy

    ad = tv.adapt(model)
    layer = ad.n_layers // 2
    sp = task.splits(0)
    queries, prompts = sp.test[:32], tv.make_prompts(task, sp.train[:16], 0)
    fit4, fit1 = fit_prompts(model, task, sp.train[:4]), fit_prompts(model, task, sp.train[:1])
    steps = 10 if small or split else None
    ltv_cfg = tv.LTVConfig(steps=steps) if steps else tv.LTVConfig()
    state: dict = {}

    def ltv():
        state["vec"] = tv.learn_task_vector(model, task, config=ltv_cfg, progress=False)
        return state["vec"]

    def vec():
        return state["vec"]

    sweep_layers = list(range(max(0, layer - 4), min(ad.n_layers, layer + 4)))
    return [
        ("learn_task_vector (defaults" + (f", {steps} steps)" if steps else ")"), ltv),
        ("fingerprint (computed, not cached)", lambda: _digest(model)),
        ("evaluate 5-shot (32 queries)", lambda: tv.evaluate(model, task, queries, 5, sp.train)),
        ("vanilla_task_vector", lambda: tv.vanilla_task_vector(model, task, layer)),
        ("function_vector (4 prompts)", lambda: tv.function_vector(model, task, layer, n_prompts=4)),
        ("OV reconstruction with paths (32 queries)", lambda: reconstruction_accuracy(model, vec(), task, queries)),
        ("key heads vs random (Taylor 16 prompts + key_vs_random defaults)",
         lambda: key_vs_random(model, vec(), task, queries, tv.taylor_scores(model, vec(), task, prompts))),
        ("sinks: attention_stats (16 prompts)", lambda: tv.attention_stats(model, task, prompts, vec())),
        ("lens: lens_metrics (16 prompts)", lambda: tv.lens_metrics(model, task, prompts, vec())),
        ("fit_tv_map (4 prompts, defaults)", lambda: tv.fit_tv_map(model, fit4, vec().vectors.reshape(-1), layer)),
        ("exact_jacobian (1 prompt)", lambda: tv.exact_jacobian(model, fit1, vec().vectors.reshape(-1), layer)),
        ("fit_tv_map (4 prompts, solver='jacobian')",
         lambda: tv.fit_tv_map(model, fit4, vec().vectors.reshape(-1), layer, tv.MapConfig(solver="jacobian"))),
        (f"{len(sweep_layers)}-layer LTV sweep" + (f" ({steps} steps)" if steps else " (100 steps)"),
         lambda: tv.learn_layer_sweep(model, task, sweep_layers, config=tv.LTVConfig(steps=steps or 100),
                                      progress=False)),
        ("generate (20 tokens)", lambda: tv.generate(model, ["hot ->"], 20, intervention=vec())),
    ]


PIPELINE_STEPS = ("learn_task_vector", "vanilla", "function_vector", "OV", "key heads", "sinks", "lens",
                  "fit_tv_map (4 prompts, defaults)")  # the per-task pipeline of issue 29 (prefixes of step names)


def _digest(model) -> str:
    """What :meth:`Adapter.fingerprint` computes when its cache misses (the sketch of every weight)."""
    import tvmech as tv
    from tvmech.core.fingerprint import weights_digest

    with tv.adapt(model).native() as hf:
        return weights_digest(hf)


def run_steps(steps, device: str, deadline: float, repeats: int = 2) -> list[dict]:
    rows = []
    for name, fn in steps:
        row: dict = {"step": name}
        for i, label in enumerate(("first", "warm")[:repeats]):
            if time.perf_counter() > deadline:
                row[f"{label}_s"] = None
                row["notes"] = "skipped: the --budget-s was spent"
                break
            try:
                dt, mem, _ = measure(fn, device)
                row[f"{label}_s"], row[f"{label}_peak_gib"] = round(dt, 3), mem and round(mem, 2)
            except Exception as e:  # a step that fails is reported, the others still run
                row["error"] = f"{type(e).__name__}: {e}"[:400]
                break
        print(f"  {name}: {row}", flush=True)
        rows.append(row)
    return rows


def before(model, device: str, task) -> dict:
    """The old fingerprint (host SHA-256 of every weight) and the old solve (host SVD) of a d_model fit."""
    import tvmech as tv
    from tvmech.analysis.tv_map import perturbations
    from tvmech.core.fingerprint import legacy_weights_sha256

    out = {}
    dt, _, _ = measure(lambda: legacy_weights_sha256(model.original_model), device)
    out["fingerprint_legacy_s"] = round(dt, 2)
    d = tv.adapt(model).d_model
    X = perturbations(torch.randn(d), 2 * d, (0.05, 0.1, 0.2), torch.Generator().manual_seed(0))
    Y = X @ torch.randn(d, d, dtype=torch.float64) / d**0.5
    t = time.perf_counter()
    torch.linalg.lstsq(X, Y, driver="gelsd")
    out["lstsq_host_svd_s"] = round(time.perf_counter() - t, 2)
    from tvmech.analysis.linear_fit import solve

    dt, _, _ = measure(lambda: solve(X.to(device), Y), device)
    out["lstsq_device_qr_s"] = round(dt, 2)
    return out


def split_model(args: argparse.Namespace, offload_dir: str):
    """The same model (same seed) with half of its layers offloaded by accelerate: to the CPU next to a GPU, to
    disk for the CPU test."""
    from accelerate import dispatch_model

    import tvmech as tv

    hf, _ = build(args, wrapped=False)
    n = hf.config.num_hidden_layers
    main = 0 if args.device == "cuda" else "cpu"
    off = "cpu" if args.device == "cuda" else "disk"
    device_map = {"model.embed_tokens": main, "model.rotary_emb": main, "model.norm": main, "lm_head": main,
                  **{f"model.layers.{i}": main if i < n // 2 else off for i in range(n)}}
    for i in range(n // 2, n):  # accelerate keeps an offloaded module's weights where they are: the host for "cpu"
        hf.model.layers[i].to("cpu")
    hf = dispatch_model(hf, device_map, main_device="cuda:0" if args.device == "cuda" else "cpu",
                        offload_dir=offload_dir)
    return tv.wrap(hf, char_tokenizer(), "llama-8b-shaped-split", dtype=hf.dtype)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    import tvmech as tv

    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    dt, mem, (hf, model) = measure(lambda: build(args), args.device)
    ad = tv.adapt(model)
    task = tv.builtin_task(args.task)
    result: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
        "torch": torch.__version__, "model": {"n_layers": ad.n_layers, "d_model": ad.d_model, "n_heads": ad.n_heads,
                                             "n_kv_heads": ad.n_kv_heads, "dtype": str(ad.dtype),
                                             "parameters_b": sum(p.numel() for p in hf.parameters()) / 1e9},
        "task": args.task, "layer": ad.n_layers // 2, "build_and_wrap_s": round(dt, 2),
    }
    print(f"built {result['model']} in {dt:.1f} s", flush=True)
    result["steps"] = run_steps(pipeline(model, task, args.small), args.device, deadline)
    dt, _, fp = measure(ad.fingerprint, args.device)
    result["fingerprint"] = {"value": fp, "cached_call_s": round(dt, 4)}
    pipe = [r for r in result["steps"] if any(r["step"].startswith(p) for p in PIPELINE_STEPS)]
    firsts = [r.get("first_s") for r in pipe]
    result["pipeline_first_call_s"] = round(sum(firsts), 2) if all(f is not None for f in firsts) else None
    result["pipeline_steps"] = [r["step"] for r in pipe]
    if args.before:
        result["before"] = before(model, args.device, task)
    if not args.no_split and time.perf_counter() < deadline:
        # the capped steps on the one device (already warm: the section above ran the same code paths)
        one_gpu = {r["step"]: r.get("first_s") for r in run_steps(pipeline(model, task, args.small, split=True),
                                                                  args.device, deadline, repeats=1)}
        del model, hf, ad
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
        with tempfile.TemporaryDirectory() as off:
            split = split_model(args, off)
            rows = run_steps(pipeline(split, task, args.small, split=True), args.device, deadline, repeats=1)
            result["split_fingerprint_matches"] = tv.adapt(split).fingerprint() == fp
        for r in rows:
            base = one_gpu.get(r["step"])
            r["one_device_s"] = base
            r["ratio_to_one_device"] = round(r["first_s"] / base, 2) if r.get("first_s") and base else None
        n = result["model"]["n_layers"]
        result["split"] = {"layers_offloaded": f"{n // 2}..{n - 1}", "steps": rows}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({result['wall_s']} s); per-task pipeline, first calls: "
          f"{result['pipeline_first_call_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
