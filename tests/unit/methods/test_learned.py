"""LTV on the engine: row-group injections equal the hand-rolled hook they replaced, and the batched
layer sweep equals the per-layer loop."""

import pytest
import torch

import tvmech as tv
from tvmech.interventions.sites import resolve_positions
from tvmech.methods.learned import LTVConfig, learn_layer_sweep, learn_task_vector, ltv_objective
from tvmech.methods.training import prepare_data, row_nll, take_rows

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)
CFG = LTVConfig(steps=8, batch_size=8, eval_every=3, lr=1e-2)


def _reference_hooks(ad, params, layers, positions, rows_per_group, query_pos):
    """The index_put hook learned.py used before the engine: params[g][i] added at layers[g][i] to group g."""
    by_layer = {}
    for g, ls in enumerate(layers):
        for i, layer in enumerate(ls):
            by_layer.setdefault(layer, []).append((g, i))

    def make(sites):
        def hook(x, hook=None):
            rows, cols, vals = [], [], []
            for g, i in sites:
                sl = slice(g * rows_per_group, (g + 1) * rows_per_group)
                idx = resolve_positions(positions, query_pos[sl], x.shape[1])
                r = torch.arange(sl.start, sl.stop)[:, None].expand_as(idx)
                v = params[g][0 if params[g].shape[0] == 1 else i].expand(len(positions), -1)
                rows.append(r.reshape(-1))
                cols.append(idx.reshape(-1))
                vals.append(v[None].expand(idx.shape[0], -1, -1).reshape(-1, x.shape[-1]))
            return x.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(vals).to(x.dtype), accumulate=True)

        return hook

    return [(ad.hook_name(layer), make(sites)) for layer, sites in by_layer.items()]


@pytest.mark.parametrize("groups,shared", [([(0,), (1,), (2,)], False), ([(0, 2), (1, 2)], False),
                                           ([(0, 1)], True)])
def test_row_group_injections_equal_the_old_hook(tiny, groups, shared):
    ad = tv.adapt(tiny)
    positions = (-2, -1)
    data = prepare_data(ad, SMALL, SMALL.examples[:10], 0)
    cfg = LTVConfig(init="uniform", init_scale=3.0, lr_unit="absolute")
    obj, _ = ltv_objective(ad, data, groups, positions, shared=shared, config=cfg)
    idx = torch.arange(2, 7)
    got = obj.row_loss(data, idx)
    (grad_new,) = torch.autograd.grad(got.sum(), obj.groups[-1])
    resid, batch = take_rows(data, idx, len(groups))
    params = [ps[0] for ps in obj.groups]
    hooks = _reference_hooks(ad, params, groups, positions, len(idx), batch.query_pos)
    with ad.hooks(hooks):
        final = ad.run_blocks(resid, 0)
    mask = batch.label_mask
    nll = torch.nn.functional.cross_entropy(ad.unembed(final[mask]), batch.targets[mask], reduction="none")
    want = torch.zeros(len(batch)).index_add(0, mask.nonzero()[:, 0], nll) / mask.sum(1)
    (grad_old,) = torch.autograd.grad(want.sum(), obj.groups[-1])
    assert torch.allclose(got.flatten(), want, atol=1e-6)
    assert torch.allclose(grad_new, grad_old, atol=1e-6)
    plain = row_nll(ad, resid, batch, 0)
    assert not torch.allclose(plain, want, atol=1e-3)  # the vectors do change the loss


def test_layer_sweep_equals_the_per_layer_loop(tiny):
    sweep = learn_layer_sweep(tiny, SMALL, (0, 1, 2), config=CFG, progress=False)
    for layer, vec in zip((0, 1, 2), sweep):
        alone = learn_task_vector(tiny, SMALL, layers=(layer,), config=CFG, progress=False)
        assert vec.layers == (layer,) and vec.metrics["steps_run"] == alone.metrics["steps_run"]
        assert torch.allclose(vec.vectors, alone.vectors, atol=1e-5), layer
        assert vec.metrics["best_val_loss"] == pytest.approx(alone.metrics["best_val_loss"], abs=1e-5)
        assert vec.metrics["lr_effective"] == pytest.approx(alone.metrics["lr_effective"], rel=1e-6)


def test_curve_and_metrics(tiny):
    vec = learn_task_vector(tiny, SMALL, layers=(1,), config=CFG, progress=False)
    assert [r["step"] for r in vec.curve] == list(range(8))
    assert [r["step"] for r in vec.curve if "val_loss" in r] == [2, 5, 7]
    assert vec.metrics["best_val_loss"] == min(r["val_loss"] for r in vec.curve if "val_loss" in r)
    assert set(vec.metrics) == {"best_val_loss", "steps_run", "stopped_early", "lr_effective", "lr_per_layer", "norm",
                                "n_train", "n_val"}


def test_bad_sites(tiny):
    with pytest.raises(ValueError, match="hook point 'z' is not supported here"):
        learn_task_vector(tiny, SMALL, layers=(1,), point="z", config=CFG, progress=False)
    with pytest.raises(ValueError, match="position -40 is out of range"):
        learn_task_vector(tiny, SMALL, layers=(1,), positions=(-40,), config=CFG, progress=False)
