"""The shared training loop: batch order, divergence, early stopping and the best-by-validation
values, on a toy objective and on every method that uses it (LTV, prompt tuning, rank-1 LoRA)."""

import math

import pytest
import torch

import tvmech as tv
from tvmech.data.prompts import Batch
from tvmech.methods.learned import LTVConfig, learn_task_vector
from tvmech.methods.peft_training import METHODS, train_peft
from tvmech.methods.training import BatchOrder, Objective, TrainData, TrainingDiverged, fit

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)


def _toy_data(n: int) -> TrainData:
    z = torch.zeros(n, 1, dtype=torch.long)
    return TrainData(torch.zeros(n, 1, 1), Batch(z, z[:, 0], z[:, 0], z, z[:, 0] + 1), 0)


def _toy(target_train: float, target_val: float):
    """θ pulled towards ``target_train``; the validation rows score the distance to ``target_val``."""
    theta = torch.zeros(1, requires_grad=True)

    def row_loss(d: TrainData, idx):
        target = target_val if len(d.batch) == 3 else target_train
        return ((theta - target) ** 2).expand(len(idx))[None]

    return theta, Objective([[theta]], [0.1], [0.0], row_loss, lambda: [theta.detach().clone()])


def test_batch_order_is_the_seeded_permutation_walk():
    gen, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    order = BatchOrder(10, 4, gen)
    perm, got = torch.randperm(10, generator=ref), []
    want = [perm[0:4], perm[4:8]]
    perm = torch.randperm(10, generator=ref)
    want += [perm[0:4], perm[4:8]]
    got = [order.next() for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    with pytest.raises(ValueError, match="batch_size >= 1"):
        BatchOrder(5, 0, gen)


def test_best_values_are_kept_and_patience_stops():
    theta, obj = _toy(1.0, -1.0)  # every step away from the validation target
    run = fit(obj, _toy_data(8), steps=50, batch_size=4, generator=torch.Generator().manual_seed(0),
              val=_toy_data(3), eval_every=2, patience=3)
    assert run.stopped_early and run.steps_run == 8  # evaluations at steps 1 (best), 3, 5, 7
    assert run.best_val[0] == pytest.approx(float(run.curve[1]["val_loss"]))
    assert abs(float(run.best[0])) < abs(float(run.final[0]))
    assert [r["step"] for r in run.curve if "val_loss" in r] == [1, 3, 5, 7]


def test_without_validation_the_final_values_are_kept():
    theta, obj = _toy(1.0, -1.0)
    run = fit(obj, _toy_data(8), steps=5, batch_size=4, generator=torch.Generator().manual_seed(0), patience=1)
    assert not run.stopped_early and run.steps_run == 5 and math.isinf(run.best_val[0])
    assert torch.equal(run.best[0], theta.detach()) and len(run.step_times_s) == 5


def test_divergence_raises_with_the_last_good_values():
    theta = torch.zeros(1, requires_grad=True)
    calls = []

    def row_loss(d, idx):
        calls.append(theta.detach().clone())
        loss = (theta - 1) ** 2
        return (loss * (float("nan") if len(calls) == 3 else 1.0)).expand(len(idx))[None]

    obj = Objective([[theta]], [0.1], [0.0], row_loss, lambda: [theta.detach().clone()], ["toy"])
    with pytest.raises(TrainingDiverged, match="at step 2 \\(toy\\)") as err:
        fit(obj, _toy_data(4), steps=5, batch_size=2, generator=torch.Generator().manual_seed(0),
            on_diverge=lambda vals: [v * 10 for v in vals])
    # the values of the last step with a finite loss (step 1, before its update), wrapped by on_diverge
    assert torch.equal(err.value.last_good[0], calls[1] * 10) and not torch.equal(calls[1], calls[2])


def test_bad_loop_settings():
    _, obj = _toy(1.0, 0.0)
    kw = dict(generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        fit(obj, _toy_data(4), steps=0, batch_size=2, **kw)
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        fit(obj, _toy_data(4), steps=2, batch_size=2, patience=0, **kw)
    with pytest.raises(ValueError, match="learning rates must be positive"):
        Objective([[torch.zeros(1)]], [0.0], [0.0], lambda d, i: None, list)
    with pytest.raises(ValueError, match="patience must be >= 1"):
        LTVConfig(patience=0)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_diverges_cleanly(tiny, method):
    # an infinite step makes the parameters non-finite after the first step: caught before the second
    with pytest.raises(TrainingDiverged, match=f"{method}: loss became .* at step 1") as err:
        train_peft(tiny, SMALL, method, layer=1, steps=6, batch_size=4, lr=float("inf"))
    last = err.value.last_good[0]
    values = last.values() if isinstance(last, dict) else [last]
    assert all(torch.isfinite(v).all() for v in values)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_stops_early_on_validation(tiny, method):
    # lr 1e-30: the parameters cannot move, so the validation loss never improves after the first evaluation
    run = train_peft(tiny, SMALL, method, layer=1, steps=20, batch_size=4, lr=1e-30, eval_every=1, patience=2)
    assert run["steps_run"] == 3 and len(run["curve"]) == 3 and len(run["val_curve"]) == 3
    assert run["val_loss_end"] == pytest.approx(run["val_curve"][0][1], abs=1e-6)


def test_ltv_stops_early_on_validation(tiny):
    cfg = LTVConfig(steps=20, batch_size=4, lr=1e-30, lr_unit="absolute", eval_every=1, patience=2)
    vec = learn_task_vector(tiny, SMALL, layers=(1,), config=cfg, progress=False)
    assert vec.metrics["steps_run"] == 3 and all("val_loss" in r for r in vec.curve)


def test_validation_keeps_the_best_parameters(tiny):
    run = train_peft(tiny, SMALL, "lora_rank1", layer=1, steps=8, batch_size=8, lr=1e-2, eval_every=2)
    best_step, best = min(run["val_curve"], key=lambda sv: sv[1])
    assert run["val_loss_end"] == pytest.approx(best, abs=1e-5)  # the returned parameters are the best ones
    with pytest.raises(ValueError, match="patience needs eval_every"):
        train_peft(tiny, SMALL, "ltv", layer=1, steps=2, patience=1)
