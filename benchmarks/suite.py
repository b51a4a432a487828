"""The benchmark functions of ``benchmarks/run.py``: each takes a :class:`Context` and returns its rows.

Every row compares tvmech's path against a baseline measured in the same call on the same data (see
``common.Row``). Steps per call are kept small under ``--quick`` (the CPU run fits in a few minutes on two cores).
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import string
from dataclasses import dataclass, field
from functools import cached_property

import torch
from bench_fv import bench_fv_cie
from common import bf16_peak, device_name, multiple, rate_ratio, single, speedup, sync, timed

TASK = "antonym"
LAYER = 15


@dataclass
class Context:
    device: str = "cpu"
    dtype: str = "float32"
    quick: bool = False
    cache: dict = field(default_factory=dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def repeats(self) -> int:
        return 2 if self.quick else 3

    def release(self) -> None:
        """Free what a benchmark left behind (its own models); the shared default model stays."""
        gc.collect()
        if torch.device(self.device).type == "cuda":
            torch.cuda.empty_cache()

    @cached_property
    def model(self):
        import tvmech as tv

        return tv.load_model(device=self.device, dtype=self.torch_dtype, verbose=False)

    @cached_property
    def task(self):
        import tvmech as tv

        return tv.builtin_task(TASK)

    @cached_property
    def splits(self):
        return self.task.splits(0)

    @cached_property
    def vector(self):
        """A short LTV at layer 15 (the vector the analysis benchmarks inject)."""
        from tvmech.methods.learned import LTVConfig, learn_task_vector

        return learn_task_vector(self.model, self.task, layers=(LAYER,), config=LTVConfig(steps=20, eval_every=10**9),
                                 progress=False)


def reference_path():
    """``tvmech.fast_path(False)`` (the hooked reference path) when tvmech has it, else ``None``."""
    import tvmech as tv

    fp = getattr(tv, "fast_path", None)
    return None if fp is None else (lambda: fp(False))


NO_REFERENCE = "tvmech.fast_path does not exist in this tvmech version: the hooked-reference baseline was not measured"


def ms(xs: list[float]) -> list[float]:
    return [x * 1e3 for x in xs]


# ----------------------------------------------------------------------------------- 1. LTV step
def ltv_call(ctx: Context, steps: int, layers=(LAYER,), sweep: bool = False, val=None):
    """One timed call; ``val=()`` trains without a validation split (nothing evaluated)."""
    from tvmech.methods.learned import LTVConfig, learn_layer_sweep, learn_task_vector

    cfg = LTVConfig(steps=steps, eval_every=10**9)
    if sweep:
        return timed(lambda: learn_layer_sweep(ctx.model, ctx.task, layers=list(layers), val=val, config=cfg,
                                               progress=False), ctx.device)
    return timed(lambda: learn_task_vector(ctx.model, ctx.task, val=val, layers=tuple(layers), config=cfg,
                                           progress=False), ctx.device)


@contextlib.contextmanager
def recorded_steps():
    """Collect the per-step wall times that the training loop measures itself (it synchronises the device
    around each step; validation and batch drawing are outside). The loop's ``fit`` is wrapped, as seen from
    :mod:`tvmech.methods.learned`, for the duration; ``None`` when that module has no ``fit`` any more."""
    from tvmech.methods import learned

    orig = getattr(learned, "fit", None)
    if orig is None:
        yield None
        return
    got: list[list[float]] = []

    def recording(*args, **kwargs):
        res = orig(*args, **kwargs)
        got.append(list(getattr(res, "step_times_s", [])))
        return res

    learned.fit = recording
    try:
        yield got
    finally:
        learned.fit = orig


def per_step(ctx: Context, n_long: int, n_short: int, **kw) -> tuple[float, float, object, str]:
    """Seconds per step of ``n_long`` steps: the mean of the loop's own step times, or where those cannot be
    read, (T(n_long) − T(n_short)) / (n_long − n_short), so that data preparation, the prefix pass and the final
    validation (paid once per call) cancel. Returns it, the wall time of the ``n_long`` call, its result and how
    the step time was obtained."""
    with recorded_steps() as rec:
        t_long, out = ltv_call(ctx, n_long, **kw)
    if rec and rec[-1]:
        times = rec[-1][1:] or rec[-1]  # the first step also captures the CUDA graph (on CUDA)
        return (statistics.median(times), t_long, out,
                f"per step: median of the training loop's own step times (steps 2..{n_long}; the first one "
                "includes the CUDA-graph capture on CUDA)")
    t_short, _ = ltv_call(ctx, n_short, **kw)
    how = f"per step = (T({n_long} steps) − T({n_short} steps)) / {n_long - n_short}"
    return (t_long - t_short) / (n_long - n_short), t_long, out, how


def bench_ltv_step(ctx: Context) -> list:
    from bench_ltv import naive_steps

    n_long, n_short = (6, 2) if ctx.quick else (40, 5)
    ltv_call(ctx, 2)  # warm-up
    naive_steps(ctx.model, ctx.task, LAYER, 2, 16, 0.05)
    ref = reference_path()
    fast, naive, slow, curves = [], [], [], {}
    for _ in range(ctx.repeats):
        s, _, tvec, how = per_step(ctx, n_long, n_short)
        fast.append(s)
        curves["fast"] = [r["loss"] for r in tvec.curve]
        sync(ctx.device)
        naive.append(1.0 / naive_steps(ctx.model, ctx.task, LAYER, n_long, 16, 0.05))
        if ref is not None:
            with ref():
                s, _, tvec, _ = per_step(ctx, n_long, n_short)
            slow.append(s)
            curves["ref"] = [r["loss"] for r in tvec.curve]
    what = f"LTV training, task {TASK}, layer {LAYER}, batch 16: ms per step"
    how += f"; median of {ctx.repeats} calls"
    rows = [speedup("ltv_step", what, "naive loop (full forward from tokens, logits at every position)", ms(naive),
                    ms(fast), "ms/step", how + f"; naive: {n_long} steps timed as a whole")]
    if ref is None:
        rows.append(single("ltv_step (vs hooked reference)", what, "fast_path(False)", ms(fast), "ms/step",
                           NO_REFERENCE))
    else:
        diff = max(abs(a - b) for a, b in zip(curves["fast"], curves["ref"]))
        rows.append(speedup("ltv_step (vs hooked reference)", what, "the same call under fast_path(False)", ms(slow),
                            ms(fast), "ms/step", f"{how}; loss curves ({n_long} steps) differ by at most {diff:.2e}"))
    return rows


# ----------------------------------------------------------------------------------- 2. layer sweep
def bench_sweep(ctx: Context) -> list:
    from tvmech.core.adapter import adapt

    L = adapt(ctx.model).n_layers
    S, s0 = (2, 1) if ctx.quick else (100, 10)
    probe = (5, 15, 25) if L == 30 else tuple(round(x * (L - 1)) for x in (1 / 6, 1 / 2, 5 / 6))
    reps = 1 if ctx.quick else ctx.repeats
    ltv_call(ctx, 1, val=())  # warm-up
    sweep_step, sweep_call, loop_step, loop_call = [], [], [], []
    for _ in range(reps):
        step, call, _, how = per_step(ctx, S, s0, layers=range(L), sweep=True, val=())
        sweep_step.append(step)
        sweep_call.append(call)
        steps, calls = [], []
        for layer in probe:
            step, call, _, _ = per_step(ctx, S, s0, layers=(layer,), val=())
            steps.append(step)
            calls.append(call)
        loop_step.append(statistics.mean(steps) * L)
        loop_call.append(statistics.mean(calls) * L)
    ref = reference_path()
    hooked_call = []
    if ref is not None:  # the per-layer loop on the hooked reference path (once: it is the slow one)
        with ref():
            hooked_call.append(statistics.mean([ltv_call(ctx, S, layers=(layer,), val=())[0] for layer in probe]) * L)
    est = (f"per-layer loop estimated from layers {probe} (mean × {L}; a step's cost falls linearly with the layer, "
           f"so the mean of these evenly spread layers stands for all {L})")
    what = f"learn_layer_sweep over {L} layers, {S} steps, batch 16, no validation split (val=(), both sides)"
    return [speedup("sweep (per step)", what + ": seconds per step (all layers)", f"learn_task_vector per layer, "
                    f"{L} calls", loop_step, sweep_step, "s", f"{est}; {how}; "
                    f"{reps} repeat(s); the sweep forks each layer's copy off one clean batch at its own layer "
                    "(about half the row-blocks of one copy per layer through every block)"),
            speedup("sweep (whole call)", what + ": seconds for the whole call (data preparation, the steps)",
                    f"{L} learn_task_vector calls", loop_call, sweep_call, "s",
                    f"{est}; {reps} repeat(s)" + ("; the issue's target is 30 layers × 100 steps" if ctx.quick
                                                  else ""))] + ([
            speedup("sweep (whole call, vs hooked loop)", what + ": seconds for the whole call",
                    f"{L} learn_task_vector calls under fast_path(False) (the hooked reference path)", hooked_call,
                    sweep_call, "s", f"{est}; the loop timed once")] if hooked_call else [])


# ----------------------------------------------------------------------------------- 3. evaluation
def bench_evaluation(ctx: Context) -> list:
    import tvmech as tv

    queries = ctx.splits.test[:32] if ctx.quick else ctx.splits.test
    vec = ctx.vector

    def run(intervention):
        def go():
            return tv.evaluate(ctx.model, ctx.task, queries, k=5, demos=ctx.splits.train, intervention=intervention)
        t, res = timed(go, ctx.device)
        return len(queries) / t, res

    run(vec)  # warm-up
    ref = reference_path()
    fast, plain, slow, acc = [], [], [], {}
    for _ in range(ctx.repeats):
        r, res = run(vec)
        fast.append(r)
        acc["fast"] = res.accuracy
        plain.append(run(None)[0])
        if ref is not None:
            with ref():
                r, res = run(vec)
            slow.append(r)
            acc["ref"] = res.accuracy
    what = (f"evaluate(k=5 demos, {len(queries)} test queries, batch 16) with the LTV injected at layer {LAYER}: "
            "prompts/s")
    rows = []
    if ref is None:
        rows.append(single("evaluation (vs hooked reference)", what, "fast_path(False)", fast, "prompts/s",
                           NO_REFERENCE))
    else:
        rows.append(rate_ratio("evaluation (vs hooked reference)", what, "the same call under fast_path(False)", slow,
                               fast, "prompts/s", f"accuracy {acc['fast']:.3f} (fast) vs {acc['ref']:.3f} (reference)"))
    rows.append(rate_ratio("evaluation (injection cost)", what, "the same evaluate without an injection", plain, fast,
                           "prompts/s", "ratio < 1: the share of the plain throughput left with the injection hook"))
    return rows


# ----------------------------------------------------------------------------------- 4. Taylor vs ablation
def bench_taylor_vs_ablation(ctx: Context) -> list:
    import tvmech as tv
    from tvmech.analysis.head_attribution import spearman
    from tvmech.core.adapter import adapt

    ad = adapt(ctx.model)
    n = 4 if ctx.quick else 16
    prompts = tv.make_prompts(ctx.task, ctx.splits.test[:n], 0)
    heads = [(l, h) for l in range(ad.n_layers) for h in range(ad.n_heads)]
    vec = ctx.vector
    tv.taylor_scores(ctx.model, vec, ctx.task, prompts[:2])  # warm-up
    tv.ablation_effects(ctx.model, vec, ctx.task, prompts[:2], heads[-ad.n_heads:])
    t_tay, t_abl = [], []
    for _ in range(ctx.repeats):
        t, scores = timed(lambda: tv.taylor_scores(ctx.model, vec, ctx.task, prompts), ctx.device)
        t_tay.append(t)
        t, effects = timed(lambda: tv.ablation_effects(ctx.model, vec, ctx.task, prompts, heads), ctx.device)
        t_abl.append(t)
    exact = effects.abs().mean(1)
    taylor = scores.taylor.flatten()
    keep = torch.tensor([l >= LAYER for l, _ in heads])
    rho = spearman(taylor[keep], exact[keep])
    return [speedup("taylor_vs_ablation", f"head scores of all {len(heads)} heads on {n} zero-shot prompts, LTV at "
                    f"layer {LAYER}: seconds", "ablation_effects, every head ablated alone (exact)", t_abl, t_tay,
                    "s", f"Spearman(Taylor, mean |Δp|) = {rho:.2f} over the {int(keep.sum())} heads at layers ≥ "
                    f"{LAYER} (below the injection the tv_reliance score is 0 by construction)")]


# ----------------------------------------------------------------------------------- 5. linear fit
def bench_linear_fit(ctx: Context) -> list:
    import tvmech as tv
    from tvmech.analysis.tv_map import compare_maps, fit_prompts
    from tvmech.core.adapter import adapt

    ad = adapt(ctx.model)
    # quick: one prompt, fewer held-out samples; the fit keeps its default 2 × d_model samples (with only
    # d_model of them the least-squares map interpolates the noise and the comparison means nothing)
    n_prompts = 1 if ctx.quick else 8
    cfg = tv.MapConfig(n_heldout=32) if ctx.quick else tv.MapConfig()
    batch = fit_prompts(ctx.model, ctx.task, ctx.splits.test[:n_prompts])
    theta = ctx.vector.vectors.reshape(-1)
    small = tv.MapConfig(n_samples=64, n_heldout=0, solver="ridge")
    tv.fit_tv_map(ctx.model, batch, theta, LAYER, small)  # warm-up
    t_fit, t_jac = [], []
    for _ in range(ctx.repeats):
        t, lm = timed(lambda: tv.fit_tv_map(ctx.model, batch, theta, LAYER, cfg), ctx.device)
        t_fit.append(t)
        t, J = timed(lambda: tv.exact_jacobian(ctx.model, batch, theta, LAYER), ctx.device)
        t_jac.append(t)
    agree = compare_maps(J, lm.W, theta)
    samples = cfg.samples_for(ad.d_model)
    return [speedup("linear_fit", f"W_TV at layer {LAYER} on {n_prompts} prompt(s) ({samples} + {cfg.n_heldout} "
                    "noisy samples): seconds", "exact_jacobian (jacrev per prompt)", t_jac, t_fit, "s",
                    f"agreement: ‖J − W‖/‖J‖ = {agree['jac_rel_frobenius']:.3f}, cos(J, W) = "
                    f"{agree['jac_cosine']:.3f}, ‖(J − W)θ‖/‖Jθ‖ = {agree['jac_rel_theta']:.3f}; "
                    f"held-out R² {lm.r2_heldout:.3f}")]


# ----------------------------------------------------------------------------------- 6. load
def bench_load(ctx: Context) -> list:
    from bench_load import measure

    reps = ctx.repeats
    r = measure(reps)
    note = f"fresh Python processes (CPU; the default loader), {reps} repeats after one priming run"
    return [multiple("load (warm)", "python -c 'import tvmech; tvmech.load_model()', dequantized cache present: wall s",
                     "the import floor: import torch, transformers, transformer_lens.model_bridge", r["floor_wall_s"],
                     r["warm_wall_s"], "s", f"{note}; load_model() alone {statistics.median(r['warm_load_s']):.2f} s, "
                     f"a second load_model() in the same process {statistics.median(r['second_load_s']):.2f} s"),
            multiple("load (cold)", "the same with an empty cache directory (dequantize the GGUF, write the cache): "
                     "wall s", "the warm load", r["warm_wall_s"], r["cold_wall_s"], "s",
                     f"{note}; load_model() alone {statistics.median(r['cold_load_s']):.2f} s")]


# ----------------------------------------------------------------------------------- 7. 8B-shaped step
LLAMA_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                vocab_size=128256)
CPU_SHAPE = dict(hidden_size=1024, intermediate_size=3584, num_attention_heads=8, num_key_value_heads=2,
                 vocab_size=32000)


def char_tokenizer():
    """A throw-away character-level tokenizer (wrapping needs one; the step below feeds random token ids)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1} | {c: i + 2 for i, c in enumerate(string.printable)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def matmul_tflops(device: str, dtype: torch.dtype, m: int, k: int, n: int, iters: int) -> list[float]:
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    out = []
    for _ in range(3):
        t, _ = timed(lambda: [a @ b for _ in range(iters)], device)
        out.append(2 * m * k * n * iters / t / 1e12)
    return out


def bench_step_8b(ctx: Context) -> list:
    from transformers import AutoModelForCausalLM, LlamaConfig

    import tvmech as tv
    from tvmech.core.models import wrap
    from tvmech.data.prompts import Batch
    from tvmech.methods.learned import LTVConfig, ltv_objective
    from tvmech.methods.training import TrainData, fit

    cuda = torch.device(ctx.device).type == "cuda"
    shape = LLAMA_8B if cuda else CPU_SHAPE
    n_layers, layer = 8, 4
    B, T = (32, 64) if cuda else ((8, 64) if ctx.quick else (32, 64))
    steps = 20 if cuda else (3 if ctx.quick else 10)
    dtype = torch.bfloat16 if cuda else ctx.torch_dtype
    cfg = LlamaConfig(**shape, num_hidden_layers=n_layers, max_position_embeddings=256, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(ctx.device):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="eager")
    block_params = sum(p.numel() for blk in hf.model.layers[layer:] for p in blk.parameters())
    unembed_params = hf.lm_head.weight.numel()
    model = wrap(hf, char_tokenizer(), "llama-8b-shaped" if cuda else "llama-small", device=ctx.device, dtype=dtype)
    ad = tv.adapt(model)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, shape["vocab_size"], (B, T), generator=gen).to(ctx.device)
    q = torch.full((B,), T - 2, device=ctx.device)
    targets = torch.full((B, T), -100, device=ctx.device)
    targets[:, T - 2] = tokens[:, T - 1]  # one label token per row, predicted at the query
    batch = Batch(tokens, q, tokens[:, T - 1].clone(), targets, torch.full((B,), T, device=ctx.device))
    with torch.no_grad():
        data = TrainData(ad.residual(tokens, layer), batch, layer)

    def train(n: int) -> list[float]:
        # the vector at position 0, so that every one of the T positions runs through the blocks (a vector at the
        # query would leave the positions before it frozen: tvmech then runs only the last ones)
        obj, _ = ltv_objective(ad, data, [(layer,)], (0,), config=LTVConfig())
        return fit(obj, data, steps=n, batch_size=B, generator=torch.Generator().manual_seed(0)).step_times_s

    train(3)  # warm-up
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = train(steps)
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    flops = 4 * (block_params * B * T + unembed_params * B)  # forward 2, backward to the activations 2
    achieved = [flops / t / 1e12 for t in times]
    base = matmul_tflops(ctx.device, dtype, B * T, shape["hidden_size"], shape["intermediate_size"],
                         20 if cuda else 2)
    name = device_name(ctx.device)
    peak = bf16_peak(name) if cuda and dtype == torch.bfloat16 else None
    ms_step = statistics.median(times) * 1e3
    label = ("8B-shaped Llama (hidden 4096, MLP 14336, 32 heads / 8 KV, vocab 128256, bfloat16, random weights)"
             if cuda else "small Llama (CPU stand-in: hidden 1024, MLP 3584, 8 heads / 2 KV, vocab 32000, "
             f"{ctx.dtype}, random weights; not the 8B shape)")
    notes = [f"{ms_step:.1f} ms/step (median of {steps} steps, min {min(times) * 1e3:.1f}, max "
             f"{max(times) * 1e3:.1f})",
             f"FLOPs counted: 4 × ({block_params / 1e9:.2f} B parameters of blocks {layer}–{n_layers - 1} × {B * T} "
             f"tokens + {unembed_params / 1e6:.0f} M unembedding parameters × {B} label positions); attention "
             "scores and norms not counted; eager attention; the vector at position 0, so all tokens run",
             f"model built with {n_layers} layers, injection at layer {layer}; the blocks below run once (no grad)"]
    if cuda:
        notes.append(f"torch.cuda.max_memory_allocated {mem:.1f} GiB during the timed steps (weights included)")
        notes.append(f"{statistics.median(achieved) / peak:.1%} of the {peak:.0f} TFLOP/s bf16 dense peak"
                     if peak else "device not in the peak table: TFLOP/s only")
    return [rate_ratio("step_8b", f"LTV step on a {label}, batch {B} × {T} tokens: achieved TFLOP/s",
                       f"a dense {B * T}×{shape['hidden_size']}×{shape['intermediate_size']} matmul, same dtype",
                       base, achieved, "TFLOP/s", "; ".join(notes))]


# ----------------------------------------------------------------------------------- synthetic (optional)
def bench_synthetic(ctx: Context) -> list:
    from bench_synthetic import measure

    preset = "quick" if ctx.quick or torch.device(ctx.device).type == "cpu" else "gpu"
    steps = 30 if ctx.quick else 150
    rows = measure(preset, ctx.device, steps, warmup=5 if ctx.quick else 10)
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        van = next(r for r in rows if r["task"] == task and r["tvp_weight"] == 0)
        tvp = next(r for r in rows if r["task"] == task and r["tvp_weight"] > 0)
        out.append(multiple(f"synthetic ({task})", f"synthetic-ICL training, preset {preset}, TVP (λ = "
                            f"{tvp['tvp_weight']:g}): ms per step", "vanilla training (λ = 0), same preset",
                            [van["ms_per_step"]], [tvp["ms_per_step"]], "ms/step",
                            f"{steps} timed steps after a warm-up; a full preset run ≈ {tvp['full_run_min']:.1f} min"))
    return out


from bench_generate import bench_generate_batched  # noqa: E402

BENCHMARKS = {"ltv_step": bench_ltv_step, "sweep": bench_sweep, "evaluation": bench_evaluation,
              "taylor_vs_ablation": bench_taylor_vs_ablation, "linear_fit": bench_linear_fit, "load": bench_load,
              "step_8b": bench_step_8b, "generate_batched": bench_generate_batched,
              "fv_cie": bench_fv_cie}
OPTIONAL = {"synthetic": bench_synthetic}  # run only when named with --only
