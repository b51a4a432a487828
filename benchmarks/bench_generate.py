"""Batched steered generation against one prompt at a time (the ``generate_batched`` row of ``run.py``).

32 prompts of the benchmark task (0 to 3 demonstrations, so lengths differ and rows are padded), a vanilla task vector
injected at each prompt's query, greedy decoding
with the KV cache: ``tvmech.generate(..., batch_size=32)`` (one right-padded batch) against ``batch_size=1`` (the
same call, one prompt per pass), timed in the same run; the row's notes say whether the tokens are equal.
"""

from __future__ import annotations

from common import speedup, timed

N_PROMPTS = 32
N_NEW = 8


def bench_generate_batched(ctx) -> list:
    from suite import LAYER, TASK

    import tvmech as tv
    from tvmech.analysis.continuation import starts_with_label

    queries = list(ctx.splits.test[:N_PROMPTS])
    vec = tv.vanilla_task_vector(ctx.model, ctx.task, LAYER, n=16)
    made = [tv.make_prompts(ctx.task, queries[k::4], k, ctx.splits.train, seed=k) for k in range(4)]
    prompts = [p.text for p in sum(made, [])]
    queries = [q for k in range(4) for q in queries[k::4]]

    def run(batch_size: int):
        return timed(lambda: tv.generate(ctx.model, prompts, N_NEW, intervention=vec, batch_size=batch_size),
                     ctx.device)

    tv.generate(ctx.model, prompts[:2], 2, intervention=vec, batch_size=1)  # warm-up
    run(N_PROMPTS)
    batched, alone = [], []
    for _ in range(ctx.repeats):
        t, got = run(N_PROMPTS)
        batched.append(t)
        t, ref = run(1)
        alone.append(t)
    same = sum(a.new_ids == b.new_ids for a, b in zip(got, ref))
    acc = sum(starts_with_label(g.text, q.output) for g, q in zip(got, queries)) / len(queries)
    lengths = [len(g.prompt_ids) for g in got]
    what = (f"generate({len(prompts)} {TASK} prompts of 0-3 demonstrations, {N_NEW} new tokens each, vanilla TV at "
            f"layer {LAYER}, KV cache, batch_size=32): seconds")
    notes = (f"{same}/{len(prompts)} rows token for token equal to one at a time; prompts {min(lengths)}–"
             f"{max(lengths)} tokens (right-padded); generation accuracy (continuation starts with the label) "
             f"{acc:.3f}; {ctx.repeats} repeats after a warm-up")
    return [speedup("generate_batched", what, "the same call with batch_size=1 (one prompt at a time)", alone,
                    batched, "s", notes)]
