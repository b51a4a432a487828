"""The fast path (Hugging Face layers called directly, interventions as PyTorch hooks on them) against the
hooked reference path (TransformerLens hooks on the bridge), on every architecture of the matrix; the training
loop's fast lane (frozen prefix, static label slots, CUDA graphs) for LTV, prompt tuning and LoRA; the forked
layer sweep against one copy per layer; the training loop's deferred divergence checks."""

import copy
import warnings
from dataclasses import replace

import pytest
import torch

import tvmech as tv
from tvmech.core.fast import cuda_graphs_enabled, fast_path, fast_path_enabled, sdpa_enabled
from tvmech.interventions.engine import attached
from tvmech.interventions.sites import Context
from tvmech.methods import training
from tvmech.methods.learned import LTVConfig, learn_layer_sweep, learn_task_vector, ltv_objective
from tvmech.methods.lora import lora_objective
from tvmech.methods.peft_training import METHODS, train_peft
from tvmech.methods.prompt_tuning import prefix_objective
from tvmech.methods.training import LabelLoss, TrainingDiverged, prepare_data

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)
CFG = LTVConfig(steps=6, batch_size=8, eval_every=2, lr=3e-2, init="uniform", init_scale=0.5)


def _both(fn):
    with fast_path(True):
        fast = fn()
    with fast_path(False):
        ref = fn()
    return fast, ref


def test_fast_path_switch_restores_and_refuses_non_booleans():
    before = (fast_path_enabled(), cuda_graphs_enabled(), sdpa_enabled())
    with fast_path(False):
        assert not fast_path_enabled() and not cuda_graphs_enabled()
        with fast_path(True, sdpa=True):
            assert fast_path_enabled() and sdpa_enabled()
    assert (fast_path_enabled(), cuda_graphs_enabled(), sdpa_enabled()) == before
    with pytest.raises(TypeError, match="enabled must be True or False, got 'yes'"):
        tv.set_fast_path("yes")


def test_fast_path_is_taken_only_without_transformerlens_hooks(tiny):
    ad = tv.adapt(tiny)
    inj = tv.Injection.single(torch.ones(ad.d_model), 1)
    assert ad.fast()
    with attached(ad, inj, Context()) as fast:
        assert fast
    with ad.hooks([(ad.hook_name(0), lambda x, hook: x)]):
        assert ad.hooks_attached() and not ad.fast()
        with attached(ad, inj, Context()) as fast:
            assert not fast
    with fast_path(False), attached(ad, inj, Context()) as fast:
        assert not fast and not ad.fast()


def test_fast_path_equals_hooked_path_on_every_architecture(make_arch, arch):
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    data = prepare_data(ad, SMALL, SMALL.examples[:12], 1)
    obj, _ = ltv_objective(ad, data, [(1,), (1, 2)], (-2, -1), config=CFG)
    idx = torch.arange(3, 11)

    def loss_and_grads():
        for ps in obj.groups:
            ps[0].grad = None
        loss = obj.row_loss(data, idx)
        loss.sum().backward()
        return loss.detach(), [ps[0].grad.clone() for ps in obj.groups]

    (fast_loss, fast_grads), (ref_loss, ref_grads) = _both(loss_and_grads)
    assert ref_loss.abs().sum() > 0 and all(g.abs().sum() > 0 for g in ref_grads)
    torch.testing.assert_close(fast_loss, ref_loss, atol=1e-5, rtol=1e-5)
    for f, r in zip(fast_grads, ref_grads):
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("which", ["llama", "gemma3", "gpt2"])
def test_trained_vectors_and_curves_equal_the_hooked_path(make_arch, which):
    model, _ = make_arch(which)
    fast, ref = _both(lambda: learn_task_vector(model, SMALL, layers=(1,), config=CFG, progress=False))
    torch.testing.assert_close(fast.vectors, ref.vectors, atol=1e-5, rtol=1e-5)
    assert [r["step"] for r in fast.curve] == [r["step"] for r in ref.curve] == list(range(CFG.steps))
    for a, b in zip(fast.curve, ref.curve):
        assert abs(a["loss"] - b["loss"]) <= 1e-5 and abs(a.get("val_loss", 0) - b.get("val_loss", 0)) <= 1e-5
    assert fast.curve[-1]["loss"] < fast.curve[0]["loss"]  # it trained


def _objectives(ad, data):
    """The three methods' objectives on ``data`` (prepared at block 0), parameters moved off their start."""
    objs = {"ltv": ltv_objective(ad, data, [(1,)], (-2, -1), config=CFG)[0],
            "prefix": prefix_objective(ad, data, 1e-2)[0], "lora_rank1": lora_objective(ad, data, 1, 1e-2)[0]}
    with torch.no_grad():
        for obj in objs.values():
            for p in obj.groups[0]:
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(p))
    return objs


def test_every_method_takes_the_fast_lane_with_the_hooked_path_s_losses(make_arch, arch):
    """LTV, prompt tuning and LoRA through the loop's fast lane: the fast path (with LTV's frozen prefix) and its
    static label slots (the shapes of a CUDA-graphed step) give the hooked path's losses and gradients."""
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    data = prepare_data(ad, SMALL, SMALL.examples[:12], 0)
    idx = torch.arange(2, 10)
    for method, obj in _objectives(ad, data).items():
        assert isinstance(obj.row_loss, LabelLoss) and obj.row_loss.graphable(data), method  # a graph on CUDA
        leaves = obj.groups[0]

        def loss_and_grads(d):
            loss = obj.row_loss(d, idx)
            return loss.detach(), torch.autograd.grad(loss.sum(), leaves)

        with fast_path(True):
            fast, static = loss_and_grads(data), loss_and_grads(replace(data, static=True))
        with fast_path(False):
            ref = loss_and_grads(data)
        assert ref[0].abs().sum() > 0 and all(g.abs().sum() > 0 for g in ref[1]), method
        for got in (fast, static):
            torch.testing.assert_close(got[0], ref[0], atol=1e-5, rtol=1e-5, msg=method)
            for a, b in zip(got[1], ref[1]):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=method)
    assert data.prefixes  # LTV ran the positions after its frozen prefix alone


def test_the_fast_lane_freezes_only_what_no_write_reaches(tiny):
    ad = tv.adapt(tiny)
    data = prepare_data(ad, SMALL, SMALL.examples[:12], 0)
    objs = _objectives(ad, data)
    q_min = int(data.batch.query_pos.min())
    assert objs["ltv"].row_loss.lane(data) == (q_min - 1, True)  # positions (-2, -1): from the query's neighbour
    assert objs["prefix"].row_loss.lane(data) == objs["lora_rank1"].row_loss.lane(data) == (0, False)
    # the same site twice: not distinct, so no frozen prefix and no graph (the writes must filter and accumulate)
    twice, _ = ltv_objective(ad, data, [(1,)], (-1, "query"), config=CFG)
    assert twice.row_loss.lane(data) == (q_min, False) and not twice.row_loss.graphable(data)


@pytest.mark.parametrize("which", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("method", [m for m in METHODS if m != "ltv"])
def test_prompt_tuning_and_lora_curves_equal_the_hooked_path(make_arch, which, method):
    model, _ = make_arch(which)
    fast, ref = _both(lambda: train_peft(model, SMALL, method, layer=1, steps=6, batch_size=8, eval_every=2))
    assert len(fast["curve"]) == len(ref["curve"]) == 6
    assert abs(fast["train_loss_end"] - fast["train_loss_start"]) > 1e-3  # the parameters moved
    for key in ("curve", "val_curve"):
        torch.testing.assert_close(torch.tensor(fast[key]), torch.tensor(ref[key]), atol=1e-5, rtol=1e-5)
    for name, value in ref["params"].items():
        torch.testing.assert_close(fast["params"][name], value, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", ["llama", "gemma2", "gpt_neox"])
def test_forked_sweep_equals_one_copy_per_layer(make_arch, which):
    model, _ = make_arch(which)
    ad = tv.adapt(model)
    data = prepare_data(ad, SMALL, SMALL.examples[:12], 0)
    groups = [(2,), (0,), (1,), (0,)]  # out of order, a layer twice
    idx = torch.arange(1, 9)
    got = {}
    for fork in (True, False):
        obj, _ = ltv_objective(ad, data, groups, (-1,), config=CFG, fork=fork)
        loss = obj.row_loss(data, idx)
        grads = torch.autograd.grad(loss.sum(), [ps[0] for ps in obj.groups])
        got[fork] = (loss.detach(), grads)
    torch.testing.assert_close(got[True][0], got[False][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(got[True][1], got[False][1]):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_forked_sweep_vectors_equal_single_runs(tiny):
    cfg = LTVConfig(steps=6, batch_size=8, eval_every=2, lr=3e-2)  # zero init: no per-group random draws
    sweep = learn_layer_sweep(tiny, SMALL, layers=(2, 0), config=cfg, progress=False)
    for tvec, layer in zip(sweep, (2, 0)):
        assert tvec.vectors.abs().sum() > 0
        one = learn_task_vector(tiny, SMALL, layers=(layer,), config=cfg, progress=False)
        torch.testing.assert_close(tvec.vectors, one.vectors, atol=1e-5, rtol=1e-5)


def _nan_at_step(model, bad: int, monkeypatch, check_every: int):
    """A one-parameter objective whose loss turns NaN at step ``bad``; fit's error and last good value."""
    monkeypatch.setattr(training.loop, "check_every", lambda device: check_every)
    data = prepare_data(tv.adapt(model), SMALL, SMALL.examples[:8], 0)
    p = torch.tensor([2.0], requires_grad=True)
    calls = []

    def row_loss(d, idx):
        calls.append(1)
        loss = (p**2).expand(1, len(idx))
        return loss * float("nan") if len(calls) > bad else loss

    obj = training.Objective([[p]], [0.1], [0.0], row_loss, lambda: [p.detach().clone()])
    with pytest.raises(TrainingDiverged) as e:
        training.fit(obj, data, steps=20, batch_size=4, generator=torch.Generator().manual_seed(0))
    return str(e.value), e.value.last_good[0], len(calls)


def test_deferred_divergence_checks_report_what_per_step_checks_report(tiny, monkeypatch):
    message, good, calls = _nan_at_step(tiny, 7, monkeypatch, 1)
    deferred, deferred_good, deferred_calls = _nan_at_step(tiny, 7, monkeypatch, 5)
    assert "at step 7" in message and message == deferred
    assert calls == 8 and deferred_calls == 10  # per step: stops at once; deferred: at the next check
    torch.testing.assert_close(deferred_good, good, atol=0, rtol=0)
    # the last good value is the one before step 6's update (step 6 is the last finite step): 7 AdamW steps
    # of size ~0.1 from 2.0 would give ~1.3, six give ~1.4
    assert 1.35 < float(good) < 1.45


def _graph_eager_hooked(make_arch, make_tokenizer, train):
    """The tiny Llama on CUDA and ``train(model)`` with its step in a CUDA graph, eager, and on the hooked path."""
    _, ref = make_arch("llama")
    gpu = tv.wrap(copy.deepcopy(ref), make_tokenizer(), "tiny-cuda", device="cuda")
    runs = {}
    for name, fp in (("graph", dict(cuda_graphs=True)), ("eager", dict(cuda_graphs=False)), ("hooked", {})):
        with fast_path(name != "hooked", **fp), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs[name] = train(gpu)
        assert not [w for w in caught if "could not be captured" in str(w.message)]  # the graph was used
    return gpu, runs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_step_equals_eager_step(make_arch, make_tokenizer):
    gpu, runs = _graph_eager_hooked(make_arch, make_tokenizer,
                                    lambda m: learn_task_vector(m, SMALL, layers=(1,), config=CFG, progress=False))
    # the graph path runs other shapes (full width, fixed label slots) than the eager ones, so float rounding
    # differs at ~1e-7; its optimizer (GraphAdamW) updates as the eager AdamW does, bit for bit: losses to 1e-5
    # (with torch's capturable AdamW they moved by 6e-5 within 6 steps on an H200)
    for other in ("eager", "hooked"):
        torch.testing.assert_close(runs["graph"].vectors, runs[other].vectors, atol=1e-5, rtol=1e-4)
        for a, b in zip(runs["graph"].curve, runs[other].curve):
            assert abs(a["loss"] - b["loss"]) <= 1e-5 and abs(a.get("val_loss", 0) - b.get("val_loss", 0)) <= 1e-5
    # a sweep (forked run, frozen prefix) captured too, against the hooked path
    with fast_path(True, cuda_graphs=True):
        sweep = learn_layer_sweep(gpu, SMALL, layers=(2, 0, 1), config=CFG, progress=False)
    with fast_path(False):
        ref_sweep = learn_layer_sweep(gpu, SMALL, layers=(2, 0, 1), config=CFG, progress=False)
    for a, b in zip(sweep, ref_sweep):
        torch.testing.assert_close(a.vectors, b.vectors, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", [m for m in METHODS if m != "ltv"])
def test_prompt_tuning_and_lora_graph_steps_equal_eager_steps(make_arch, make_tokenizer, method):
    _, runs = _graph_eager_hooked(make_arch, make_tokenizer,
                                  lambda m: train_peft(m, SMALL, method, layer=1, steps=6, batch_size=8, eval_every=2))
    for other in ("eager", "hooked"):
        for key in ("curve", "val_curve"):
            torch.testing.assert_close(torch.tensor(runs["graph"][key]), torch.tensor(runs[other][key]), atol=1e-5,
                                       rtol=1e-5)
        for name, value in runs[other]["params"].items():
            torch.testing.assert_close(runs["graph"]["params"][name], value, atol=1e-5, rtol=1e-4)


def test_frozen_prefix_run_equals_the_full_run_on_every_architecture(make_arch, arch):
    model, _ = make_arch(arch)
    ad = tv.adapt(model)
    tokens = torch.randint(2, 90, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        resid = ad.residual(tokens, 1)
        full = ad.run_blocks(resid, 1)
        prefix = ad.prefix_kv(resid, 1, 6)
        suffix = ad.run_blocks(resid[:, 6:], 1, prefix=prefix)
        twice = ad.run_blocks(resid[:, 6:].repeat(2, 1, 1), 1, prefix=prefix)  # two copies of the rows
        picked = ad.run_blocks(resid[[2, 0], 6:], 1, prefix=prefix.rows(torch.tensor([2, 0])))
    assert suffix.shape == (3, 5, ad.d_model)
    torch.testing.assert_close(suffix, full[:, 6:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(twice, full[:, 6:].repeat(2, 1, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(picked, full[[2, 0], 6:], atol=1e-5, rtol=1e-5)


def test_frozen_prefix_needs_the_fast_path(tiny):
    ad = tv.adapt(tiny)
    resid = ad.residual(torch.randint(2, 90, (2, 8)), 0)
    with pytest.raises(ValueError, match="cut 8 must lie inside the sequence"):
        ad.prefix_kv(resid, 0, 8)
    prefix = ad.prefix_kv(resid, 0, 4)
    with fast_path(False), pytest.raises(RuntimeError, match="needs the fast path"):
        ad.run_blocks(resid[:, 4:], 0, prefix=prefix)
