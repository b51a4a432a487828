"""``fv_cie``: the causal indirect effects of function vectors
(:func:`tvmech.methods.function_vectors.indirect_effects`) on the default model, the query-only forked passes
against the full-width per-layer loop measured in the same run.

The baseline is ``indirect_effects(..., query_only=False)``: the implementation before issue 26 (every layer's heads
patched in one batch replicated once per head, the whole prompt run from that layer), kept as the reference path.
Both run on the same label-shuffled 5-shot prompts and the same mean ``z``; the row's notes give the largest
difference between the two CIE matrices and whether the top-10 heads agree. On the CPU the prompts are fewer than
``function_vector``'s 16 (the baseline alone takes minutes per call there); on a GPU, 16.

    python benchmarks/run.py --device cuda --only fv_cie
"""

from __future__ import annotations

import torch
from common import speedup, timed

TASK = "antonym"
K = 5


def bench_fv_cie(ctx) -> list:
    import tvmech as tv
    from tvmech.core.adapter import adapt
    from tvmech.data.prompts import encode
    from tvmech.methods.function_vectors import indirect_effects, query_z

    ad = adapt(ctx.model)
    task = tv.builtin_task(TASK)
    cpu = torch.device(ctx.device).type == "cpu"
    n = 4 if cpu else 16
    sp = task.splits(0)
    queries = list(sp.train)[:n]
    z_mean = query_z(ctx.model, task, tv.make_prompts(task, queries, K, sp.train, seed=0)).mean(0)
    shuffled = tv.make_prompts(task, queries, K, sp.train, seed=1, shuffle_labels=True)
    groups = len(set(encode(ad.tokenizer, task, shuffled).query_pos.tolist()))
    indirect_effects(ctx.model, task, shuffled[:1], z_mean)  # warm-up (the baseline's is not repeated on the CPU)
    base_reps, reps = (1, ctx.repeats) if cpu else (ctx.repeats, ctx.repeats)
    if not cpu:
        indirect_effects(ctx.model, task, shuffled[:1], z_mean, query_only=False)
    t_new, t_old = [], []
    for _ in range(reps):
        t, new = timed(lambda: indirect_effects(ctx.model, task, shuffled, z_mean), ctx.device)
        t_new.append(t)
    for _ in range(base_reps):
        t, old = timed(lambda: indirect_effects(ctx.model, task, shuffled, z_mean, query_only=False), ctx.device)
        t_old.append(t)
    diff = float((new - old).abs().max())
    top = lambda cie: set(cie.flatten().topk(10).indices.tolist())  # noqa: E731
    same_top = top(new) == top(old)
    heads = ad.n_layers * ad.n_heads
    return [speedup("fv_cie", f"causal indirect effects of all {heads} heads, task {TASK}, {n} label-shuffled "
                    f"{K}-shot prompts: seconds", "indirect_effects(query_only=False): per layer, the batch "
                    "replicated once per head, the whole prompt run from that layer (before issue 26)", t_old, t_new,
                    "s", f"max |ΔCIE| = {diff:.1e} (largest |CIE| {float(old.abs().max()):.3f}); top-10 heads "
                    f"{'the same' if same_top else 'differ'}; {groups} query-position group(s); "
                    f"{reps} repeat(s), baseline {base_reps}")]
