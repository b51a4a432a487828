"""Synthetic ICL (issue 6): tasks and formats, the model's hook points, training with the TVP-loss,
checkpoints and resumption, analyses, bad input. All on tiny models trained on the CPU."""

from __future__ import annotations

import pytest
import torch

from tvmech import Injection
from tvmech.synthetic import (
    ModelConfig,
    SyntheticModel,
    SyntheticTask,
    TrainConfig,
    cluster_sharpness,
    offset_text_task,
    train,
    tv_prompting,
)
from tvmech.synthetic.analysis import mean_error, robustness, vector_geometry
from tvmech.synthetic.icl_tasks import ARROW, VALUE0
from tvmech.synthetic.pretraining import captured, read_query, step_batches, write_query

TINY = ModelConfig(n_layers=2, d_model=32, n_heads=2, d_mlp=64, seed=0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["offset", "linear", "sinusoid"])
def test_sampler_is_seeded_and_follows_its_rule(name):
    task = SyntheticTask(name)
    a, b = task.sample(8, 3, gen(1)), task.sample(8, 3, gen(1))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    assert not torch.equal(a.xs, task.sample(8, 3, gen(2)).xs)
    if name == "offset":
        assert torch.equal(a.ys, (a.xs + a.params.long()) % task.n_values)
    elif name == "linear":
        assert torch.allclose(a.ys, torch.einsum("bnd,bd->bn", a.xs, a.params), atol=1e-5)
    else:
        p = a.params
        assert torch.allclose(a.ys, p[:, :1] * torch.sin(p[:, 1:2] * a.xs[..., 0] + p[:, 2:3]), atol=1e-5)


def test_label_noise_spares_the_query_and_ood_moves_it():
    task = SyntheticTask("offset", n_values=16, n_offsets=8)
    b = task.sample(512, 5, gen(), label_noise=1.0)
    assert torch.equal(b.ys[:, -1], b.clean_ys[:, -1])
    assert (b.ys[:, :-1] != b.clean_ys[:, :-1]).float().mean() > 0.8  # 15/16 of random labels differ
    o = task.sample(512, 5, gen(), ood=True)
    assert (o.xs[:, :-1] < 8).all() and (o.xs[:, -1] >= 8).all()


def test_discrete_format_matches_the_text_task_for_tvmech_tools():
    task = SyntheticTask("offset", n_values=16, n_offsets=8)
    model = SyntheticModel(task, TINY)
    b = task.sample(1, 2, gen(), params=task.fixed_params(3, 1))
    seq = task.sequence(b)
    text = offset_text_task(task, 3)
    demos = [text.examples[int(x)] for x in b.xs[0, :-1]]
    prompt = text.template.prompt(demos, str(int(b.xs[0, -1])))
    ids = model.bridge.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids == seq[0].tolist() and seq[0, -1] == ARROW
    assert seq[0, task.pred_positions(3)[:-1] + 1].tolist() == (b.ys[0, :-1] + VALUE0).tolist()


@pytest.mark.parametrize("name", ["offset", "linear"])
def test_block_hooks_fire_so_injection_works(name):
    task = SyntheticTask(name)
    model = SyntheticModel(task, TINY)
    seq = task.sequence(task.sample(4, 2, gen()))
    base = model(seq)
    seen = []
    with model.adapter.hooks([(model.adapter.hook_name(1), lambda x, hook=None: seen.append(x.shape))]):
        model(seq)
    assert seen == [torch.Size([4, seq.shape[1], 32])]
    v = torch.randn(32) * 5
    with Injection.single(v, 1, position=-1).apply(model.bridge):
        injected = model(seq)
    assert torch.allclose(injected[:, :-1], base[:, :-1], atol=1e-5)  # causal: earlier positions untouched
    assert not torch.allclose(injected[:, -1], base[:, -1], atol=1e-3)


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_tvp_write_sets_the_query_state_and_carries_gradients_into_both_passes(mode):
    """The TVP path through the engine: θ read (in the graph) from the context pass, written per row at the
    query of the query-only pass; the written state is θ (or h + θ), and the loss reaches θ and the
    parameters of the blocks below the layer through it."""
    task = SyntheticTask("linear", dim=3)
    model = SyntheticModel(task, TINY).trainable(True)
    batch, query = step_batches(task, TrainConfig(batch_size=4, n_demos=2), 0)
    read = read_query(1, int(task.pred_positions(3)[-1]), detach=False)
    model(task.sequence(batch, with_query_label=True), read)
    theta = captured(read, 1)
    assert theta.shape == (4, 32) and theta.requires_grad
    q_seq, q_pos = task.query_sequence(query), int(task.pred_positions(1)[-1])
    clean, seen = read_query(1, q_pos), read_query(1, q_pos)
    with torch.no_grad():
        model(q_seq, clean)
    out = model(q_seq, write_query(theta, 1, q_pos, mode) + seen)
    expected = theta if mode == "replace" else captured(clean, 1) + theta
    assert torch.allclose(captured(seen, 1), expected.detach(), atol=1e-6)
    (g_theta,) = torch.autograd.grad(model.head(out[:, q_pos]).sum(), [theta])  # the query pass reads θ
    read_in = model.named_tensors()["read_in.weight"]
    (g_context,) = torch.autograd.grad(theta, [read_in], g_theta)  # ... and θ the context pass
    assert g_theta.abs().max() > 0 and g_context.abs().max() > 0


@pytest.mark.parametrize("name", ["offset", "linear"])
def test_training_on_the_fast_path_equals_the_hooked_path_bit_for_bit(name, monkeypatch):
    """The read of θ and its write at the query run as PyTorch hooks on the Hugging Face layers (fast path) or as
    TransformerLens hooks (reference): the same loss curve and the same trained weights, exactly."""
    import contextlib

    from tvmech import fast_path
    from tvmech.interventions import engine

    taken, attached = [], engine.attached

    @contextlib.contextmanager
    def recorded(*args):
        with attached(*args) as fast:
            taken.append(fast)
            yield fast

    monkeypatch.setattr(engine, "attached", recorded)

    task = SyntheticTask(name, n_values=8, n_offsets=4) if name == "offset" else SyntheticTask(name, dim=3)
    cfg = TrainConfig(steps=4, batch_size=8, tvp_weight=1.0, tvp_layer=1, n_demos=3, log_every=1, seed=1)
    runs = {}
    for fast in (True, False):
        with fast_path(fast):
            runs[fast] = train(SyntheticModel(task, TINY), cfg, progress=False)
        assert set(taken) == {fast} and len(taken) == 2 * 4  # two passes per step, all on the path asked for
        taken.clear()
    fast, hooked = runs[True], runs[False]
    assert fast.curve == hooked.curve and len(fast.curve) == 4 and fast.curve[0] != fast.curve[-1]
    for (k, a), b in zip(fast.model.named_tensors().items(), hooked.model.named_tensors().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("every_step", [True, False])
def test_a_non_finite_loss_stops_training_naming_its_step(monkeypatch, tmp_path, every_step):
    """Read back every step (CPU) or only at the logs and saves (a read interval longer than the run): either way
    the error names the step whose loss was not finite, and no checkpoint holds an update made from it."""
    from tvmech.synthetic import pretraining as training

    real, calls = training.losses, []

    def losses(*args, **kw):
        icl, tvp = real(*args, **kw)
        calls.append(1)
        return (icl * float("nan"), tvp) if len(calls) == 3 else (icl, tvp)

    monkeypatch.setattr(training, "losses", losses)
    monkeypatch.setattr(training, "check_every", lambda device: 1 if every_step else 1000)
    task = SyntheticTask("linear", dim=3)
    cfg = TrainConfig(steps=8, batch_size=4, tvp_layer=1, n_demos=2, log_every=4, seed=0)
    with pytest.raises(RuntimeError, match="at step 2;"):
        train(SyntheticModel(task, TINY), cfg, checkpoint=tmp_path / "ck", save_every=4, progress=False)
    assert len(calls) == (3 if every_step else 4) and not (tmp_path / "ck").exists()


def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path):
    task = SyntheticTask("linear", dim=3)
    cfg = TrainConfig(steps=6, batch_size=8, tvp_weight=0.5, tvp_layer=1, n_demos=3, log_every=1, seed=3)
    straight = train(SyntheticModel(task, TINY), cfg, progress=False)
    half = TrainConfig(**{**cfg.__dict__, "steps": 3})
    train(SyntheticModel(task, TINY), half, checkpoint=tmp_path / "ck", progress=False)
    resumed = train(SyntheticModel(task, ModelConfig(**{**TINY.__dict__, "seed": 9})), cfg,
                    checkpoint=tmp_path / "ck", resume=True, progress=False)
    for (k, a), b in zip(straight.model.named_tensors().items(), resumed.model.named_tensors().values()):
        assert torch.equal(a, b), k
    assert resumed.curve == straight.curve and len(resumed.curve) == 6
    loaded, meta = SyntheticModel.load(tmp_path / "ck")
    seq = task.sequence(task.sample(2, 2, gen()))
    assert meta["step"] == 6 and torch.equal(loaded(seq), resumed.model(seq))
    with pytest.raises(ValueError, match="differs"):
        train(SyntheticModel(task, TINY), TrainConfig(**{**cfg.__dict__, "lr": 0.5}), checkpoint=tmp_path / "ck",
              resume=True, progress=False)


def test_a_checkpoint_is_one_atomic_unit_and_older_three_file_checkpoints_still_load(tmp_path, monkeypatch):
    """A crash after the checkpoint's single write (before the readable JSON copy) still loads the new step with
    its own weights: metadata and weights cannot disagree."""
    import json

    from safetensors.torch import save as st_save

    import tvmech.synthetic.model as sm

    task = SyntheticTask("linear", dim=3)
    model = SyntheticModel(task, TINY)
    model.save(tmp_path / "ck", state={"step": 5})
    with torch.no_grad():
        next(iter(model.named_tensors().values())).add_(1.0)
    monkeypatch.setattr(sm, "write_json", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "ck", state={"step": 10})
    assert json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["step"] == 5  # the stale readable copy
    loaded, meta = SyntheticModel.load(tmp_path / "ck")
    assert meta["step"] == 10
    for (k, a), b in zip(model.named_tensors().items(), loaded.named_tensors().values()):
        assert torch.equal(a, b), k
    old = tmp_path / "old"  # the format of earlier checkpoints: weights alone, metadata in checkpoint.json
    old.mkdir()
    (old / "model.safetensors").write_bytes(st_save({k: v.detach().contiguous() for k, v in
                                                     model.named_tensors().items()}))
    (old / "checkpoint.json").write_text((tmp_path / "ck" / "checkpoint.json").read_text())
    assert SyntheticModel.load(old)[1]["step"] == 5


def test_tvp_loss_makes_task_vector_prompting_work_at_the_prescribed_layer():
    """The test that fails if the TVP-loss did nothing: same seed, budget and data, only λ differs."""
    task = SyntheticTask("offset", n_values=16, n_offsets=8)
    mcfg = ModelConfig(n_layers=3, d_model=48, n_heads=4, d_mlp=96, seed=0)
    errs, icl = {}, {}
    for lam in (0.0, 1.0):
        cfg = TrainConfig(steps=300, batch_size=32, lr=2e-3, tvp_weight=lam, tvp_layer=2, n_demos=4, seed=0)
        model = train(SyntheticModel(task, mcfg), cfg, progress=False).model
        rows = tv_prompting(model, [2], n=256, n_demos=4, seed=1)
        errs[lam], icl[lam] = mean_error(rows, "task_vector", 2), mean_error(rows, "icl")
        random_err = mean_error(rows, "random", 2)
    print("task-vector prompting error at layer 2:", errs, "ICL error:", icl)
    assert errs[1.0] < errs[0.0] - 0.2
    assert errs[1.0] < random_err - 0.2  # the vector carries the task, not just any state


def test_cluster_sharpness_is_one_for_perfect_clusters_and_small_for_noise():
    cls = torch.arange(4).repeat_interleave(25)
    centers = torch.randn(4, 16) * 10
    assert cluster_sharpness(centers[cls], cls) == pytest.approx(1.0)
    assert cluster_sharpness(torch.randn(100, 16, generator=gen()), cls) < 0.1
    assert 0.5 < cluster_sharpness(centers[cls] + torch.randn(100, 16, generator=gen()), cls) < 1.0


def test_analyses_return_one_row_per_method_and_layer():
    task = SyntheticTask("sinusoid")
    model = SyntheticModel(task, TINY)
    rows = tv_prompting(model, n=16, n_demos=2)
    assert {(r["method"], r["layer"]) for r in rows} == {("icl", None), ("zero_shot", None)} | {
        (m, l) for m in ("task_vector", "shuffled", "random") for l in (0, 1)}
    points, scores = vector_geometry(model, [1], n=16, n_demos=2)
    assert len(points) == 16 and [s["layer"] for s in scores] == [1]
    rob = robustness({"m": model}, 1, n=16, n_demos=2)
    assert [r["condition"] for r in rob] == ["clean", "label_noise_0.25", "label_noise_0.5", "ood_query"]


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="unknown synthetic task 'regression'.*offset, linear, sinusoid"):
        SyntheticTask("regression")
    with pytest.raises(ValueError, match="λ must be a finite number >= 0, got -0.5"):
        TrainConfig(tvp_weight=-0.5)
    with pytest.raises(ValueError, match="at least one complete example.*n_demos=0"):
        TrainConfig(n_demos=0)
    with pytest.raises(ValueError, match="at least one complete example"):
        SyntheticTask("linear").sample(4, 0)
    with pytest.raises(ValueError, match="tvp_layer 2 is out of range for a 2-layer model: valid layers are 0..1"):
        train(SyntheticModel(SyntheticTask("offset"), TINY), TrainConfig(steps=1, tvp_layer=2), progress=False)
    with pytest.raises(ValueError, match="tvp_mode"):
        TrainConfig(tvp_mode="swap")
    with pytest.raises(FileNotFoundError, match="checkpoint.json"):
        SyntheticModel.load("/nonexistent/dir")
