"""Before/after of the post-attention norm in the OV effect and in function vectors (issue 24), on a model with
post-norms (default: Gemma-3-270M) and the committed LTVs of ``figures/gemma3/runs/seed<s>/vectors``.

Per task, at the LTV's layer, on the first ``--n`` test queries: the norm of the packaged OV effect of θ at its
own block left before the post-attention norm (what tvmech computed before issue 24) and taken through it (now),
against the measured change of ``hook_attn_out`` there (its norm, and each effect's cosine with it), and the same
with the attention patterns held at the θ run's (where the new effect must equal the change). Then function
vectors: the norm of the top-10 heads' summed output before (``z̄ W_O``) and after (each prompt's head output
through the frozen-scale post-norm, averaged) and the FV accuracy on the test queries at ``--fv-layers``.

    python tools/post_norm_check.py [--model gemma-3-270m] [--seed 0] [--n 16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import tvmech as tv
from tvmech.analysis.ov import capture, ov_images, packaged_ov_effect
from tvmech.data.prompts import encode, make_prompts
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.function_vectors import function_vector_heads, mean_head_z

ROOT = Path(__file__).resolve().parents[1]


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=-1).mean())


def pre_norm_effect(ad, cap) -> torch.Tensor:
    """The packaged OV effect at the injection block as computed before issue 24 (no post-attention norm)."""
    l = cap.layers[0]
    x = ad.input_norm(l, cap.resid[:, 0] + cap.theta) - ad.input_norm(l, cap.resid[:, 0])
    images = ov_images(ad, x[:, None], [l])[:, 0]  # [batch, heads, d]
    return torch.einsum("bh,bhd->bd", cap.weights[:, 0].to(images.dtype), images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--vectors", default=str(ROOT / "figures/gemma3/runs/seed{seed}/vectors"))
    ap.add_argument("--tasks", nargs="+", default=["capitalize", "singular_plural", "sentiment"])
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--fv-layers", type=int, nargs="+", default=[3, 9, 12])
    args = ap.parse_args()
    model = tv.load_model(args.model)
    ad = tv.adapt(model)
    out = {}
    for name in args.tasks:
        task = tv.builtin_task(name)
        vec = TaskVector.load(Path(args.vectors.format(seed=args.seed)) / f"{name}_L{args.layer}", model)
        test = task.splits(args.seed).test[:args.n]
        batch = encode(ad.tokenizer, task, make_prompts(task, test, 0))
        row = {}
        for frozen in (False, True):
            cap = capture(model, vec, batch, freeze_patterns=frozen)
            measured, new, old = cap.attn_delta[:, 0], packaged_ov_effect(model, cap)[:, 0], pre_norm_effect(ad, cap)
            tag = "frozen" if frozen else "free"
            row.update({f"{tag}_measured_norm": float(measured.norm(dim=-1).mean()),
                        f"{tag}_before_norm": float(old.norm(dim=-1).mean()), f"{tag}_before_cos": cos(old, measured),
                        f"{tag}_after_norm": float(new.norm(dim=-1).mean()), f"{tag}_after_cos": cos(new, measured),
                        f"{tag}_after_rel_error": float((new - measured).norm() / measured.norm())})
        heads = function_vector_heads(model, task, seed=args.seed)
        top = heads.top(10)
        z_w_o = torch.einsum("lhd,lhdm->lhm", _mean_z(model, task, args.seed), ad.W_O.float())
        before = sum(z_w_o[l, h] for l, h in top)
        after = sum(heads.outputs[l, h] for l, h in top)
        row.update({"fv_before_norm": float(before.norm()), "fv_after_norm": float(after.norm()),
                    "fv_cos_before_after": float(torch.nn.functional.cosine_similarity(before, after, dim=0))})
        for layer in args.fv_layers:
            for tag, v in (("before", before), ("after", after)):
                fv = TaskVector.for_model(ad, v[None, None].to(ad.dtype), (layer,), (-1,), task=name, method="fv")
                row[f"fv_{tag}_acc_L{layer}"] = tv.evaluate(model, task, test, 0,
                                                            intervention=fv).accuracy
        row["zero_shot_acc"] = tv.evaluate(model, task, test, 0).accuracy
        out[name] = row
        print(name, json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)


def _mean_z(model, task, seed: int) -> torch.Tensor:
    """``z̄``: the mean query ``z`` over the 5-shot prompts that :func:`function_vector_heads` averages."""
    sp = task.splits(seed)
    queries = list(sp.train)[:16]
    return mean_head_z(model, task, make_prompts(task, queries, 5, sp.train, seed=seed)).float()


if __name__ == "__main__":
    main()
