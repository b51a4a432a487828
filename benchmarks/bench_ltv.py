"""LTV training speed: suffix-only training with logits at the label positions (tvmech) against the
naive loop (a full forward from the tokens with the injection hook, logits at every position), both
measured in the same run on the same batches.

    python benchmarks/bench_ltv.py [--device cpu] [--layer 15] [--steps 20]

Writes ``benchmarks/results/ltv_steps_<device>.json`` with steps/second, the ratio, device and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import tvmech as tv
from tvmech.data.prompts import encode
from tvmech.interventions.injection import Injection
from tvmech.methods.learned import LTVConfig, learn_task_vector


def naive_steps(model, task, layer: int, steps: int, batch_size: int, lr: float) -> float:
    """The straightforward loop: every step runs all layers and the unembedding at every position."""
    ad = tv.adapt(model)
    sp = task.splits(0)
    batch = encode(ad.tokenizer, task, tv.make_prompts(task, sp.train, 0), with_labels=True).to(ad.device)
    theta = torch.zeros(ad.d_model, device=ad.device, requires_grad=True)
    opt = torch.optim.AdamW([theta], lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(steps):
        idx = torch.randperm(len(batch), generator=gen)[:batch_size].to(ad.device)
        tokens, targets, q = batch.tokens[idx], batch.targets[idx], batch.query_pos[idx]
        with Injection.single(theta, layer).apply(model, q):
            logits = model(tokens)  # full forward, logits at every position
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if ad.device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t)


def main() -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--task", default="antonym")
    args = p.parse_args()
    model = tv.load_model(device=args.device)
    task = tv.builtin_task(args.task)
    cfg = LTVConfig(steps=args.steps, eval_every=10**9)
    learn_task_vector(model, task, layers=(args.layer,), config=LTVConfig(steps=2), progress=False)  # warm-up
    naive_steps(model, task, args.layer, 2, cfg.batch_size, 0.05)
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        learn_task_vector(model, task, layers=(args.layer,), config=cfg, progress=False)
        fast = args.steps / (time.perf_counter() - t)
        slow = naive_steps(model, task, args.layer, args.steps, cfg.batch_size, 0.05)
        runs.append({"tvmech_steps_per_s": fast, "naive_steps_per_s": slow, "ratio": fast / slow})
    runs.sort(key=lambda r: r["ratio"])
    on_cuda = args.device.startswith("cuda")
    dev = torch.cuda.get_device_name() if on_cuda else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    result = {"benchmark": f"LTV training steps/s, task {args.task}, layer {args.layer}, batch {cfg.batch_size}; "
                           "tvmech (prefix once, suffix-only, logits at label positions; includes the one-off "
                           "prefix pass and data preparation) vs naive (full forward + full logits each step)",
              "device": dev, "date": time.strftime("%Y-%m-%d"), "runs": runs, "median": runs[1]}
    out = Path(__file__).parent / "results" / f"ltv_steps_{args.device.split(':')[0]}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
