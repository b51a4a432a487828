"""LTVConfig.released(): the reported recipe's fields, the pooled splits, the linear schedule (eager and in the
graph optimizer alike) and early stopping on validation accuracy."""

import pytest
import torch

import tvmech as tv
from tvmech.core.optim import GraphAdamW
from tvmech.methods.learned import LTVConfig, learn_task_vector, pooled_splits

TASK = tv.builtin_task("capitalize")


def test_released_fields_as_reported():
    c = LTVConfig.released()
    assert (c.lr, c.lr_unit, c.weight_decay, c.batch_size, c.steps, c.eval_every, c.patience) == \
        (5e-3, "absolute", 0.01, 1, 1000, 100, 2)
    assert (c.init, c.init_scale, c.first_token_only, c.k, c.lr_schedule, c.select_on) == \
        ("uniform", 0.1, True, 0, "linear", "accuracy")
    assert (c.pool, c.pool_train_share) == (1000, 0.6)
    assert LTVConfig.released(steps=50).steps == 50
    # the fields added for it stay out of a default config's record (saved vectors keep matching)
    assert set(LTVConfig().record()) == set(LTVConfig.__dataclass_fields__) - {"lr_schedule", "select_on", "pool",
                                                                               "pool_train_share"}
    assert c.record()["select_on"] == "accuracy"
    with pytest.raises(ValueError, match="select_on"):
        LTVConfig(select_on="f1")
    with pytest.raises(ValueError, match="pool_train_share"):
        LTVConfig(pool_train_share=1.0)


def test_pooled_splits_take_what_exists_and_leave_the_test_out():
    sp = TASK.splits(0)
    train, val = pooled_splits(TASK, 0, 1000, 0.6)
    n = len(sp.train) + len(sp.val)  # fewer than 1,000 exist: all of them
    assert len(train) + len(val) == n and len(train) == round(0.6 * n)
    assert not {e.input for e in train + val} & {e.input for e in sp.test}
    small_train, small_val = pooled_splits(TASK, 0, 10, 0.6)
    assert (len(small_train), len(small_val)) == (6, 4)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))])
def test_graph_adamw_schedule_equals_adamw_with_lambdalr(device):
    g = torch.Generator().manual_seed(0)
    init = torch.randn(5, generator=g).to(device)
    grads = [torch.randn(5, generator=g).to(device) for _ in range(6)]
    schedule = lambda t: 1 - t / 6  # noqa: E731
    out = []
    for graph in (False, True):
        p = init.clone().requires_grad_(True)
        groups = [{"params": [p], "lr": 0.1, "weight_decay": 0.5}]
        opt = GraphAdamW(groups, max_steps=6, lr_lambda=schedule) if graph else torch.optim.AdamW(groups)
        sched = None if graph else torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        for gr in grads:
            p.grad = gr.clone()
            opt.step()
            if sched is not None:
                sched.step()
        out.append(p.detach())
    assert torch.allclose(out[0], out[1], atol=1e-6)
    assert not torch.allclose(out[0], init)


def test_released_recipe_trains_and_stops_on_validation_accuracy(tiny):
    small = tv.Task("capitalize", TASK.examples[:40], TASK.template)
    cfg = LTVConfig.released(steps=12, eval_every=2, patience=1)
    vec = learn_task_vector(tiny, small, layers=(1,), config=cfg, progress=False)
    scored = [r["val_score"] for r in vec.curve if "val_score" in r]
    assert scored and all(-1 <= s <= 0 for s in scored)
    assert vec.metrics["best_val_accuracy"] == pytest.approx(-min(scored))
    sp = small.splits(0)
    assert vec.metrics["n_train"] + vec.metrics["n_val"] == len(sp.train) + len(sp.val)
    if vec.metrics["stopped_early"]:  # patience 1: stopped at the first evaluation without improvement
        assert vec.metrics["steps_run"] < 12 and scored[-1] >= min(scored[:-1])
