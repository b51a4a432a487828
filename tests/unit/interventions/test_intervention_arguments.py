"""Issue 13, arguments of the interventions: numpy / 0-d tensor integers act exactly like ints, a single
integer is taken where a sequence is, bool and non-integers are refused with a message naming them."""

import numpy as np
import pytest
import torch

import tvmech as tv
from tvmech.analysis.evaluation import final_residual
from tvmech.data.prompts import encode
from tvmech.interventions.head_patch import HeadPatch
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import Context, resolve_positions


def _batch(tiny, n=4):
    task = tv.builtin_task("capitalize")
    prompts = tv.make_prompts(task, task.examples[:n], 1, task.examples[n:40], seed=2)
    return encode(tiny.tokenizer, task, prompts)


def _final(tiny, batch, inj):
    with torch.no_grad():
        return final_residual(tiny, batch, inj)


def _vec(tiny, seed=0):
    return torch.randn(tv.adapt(tiny).d_model, generator=torch.Generator().manual_seed(seed)) * 5


@pytest.mark.parametrize("layer", [np.int64(1), torch.tensor(1), np.array(1), 1])
def test_integer_like_layers_act_like_the_int(tiny, layer):
    b = _batch(tiny)
    want = _final(tiny, b, Injection.single(_vec(tiny), 1, -2))
    for inj in (Injection.single(_vec(tiny), layer, np.int64(-2)),
                Injection(_vec(tiny)[None, None], (layer,), (torch.tensor(-2),)),
                Injection(_vec(tiny)[None, None], layer, -2)):  # a single int for layers and positions
        assert inj.layers == (1,) and inj.positions == (-2,) and all(type(x) is int for x in inj.layers)
        assert torch.equal(_final(tiny, b, inj), want)


def test_layer_and_position_sequences_of_numpy_ints(tiny):
    b = _batch(tiny)
    vectors = torch.randn(2, 2, tv.adapt(tiny).d_model)
    want = _final(tiny, b, Injection(vectors, (0, 2), (-2, -1)))
    got = _final(tiny, b, Injection(vectors, np.array([0, 2]), torch.tensor([-2, -1])))
    assert torch.equal(got, want)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(layers=True), TypeError, r"layer must be an integer, got True \(bool\)"),
    (dict(layers=(0, True)), TypeError, r"layer must be an integer, got True \(bool\)"),
    (dict(layers=1.0), TypeError, r"layer must be an integer, got 1\.0 \(float\)"),
    (dict(layers="0"), TypeError, r"layers must be an integer or a sequence of integers, got '0' \(str\)"),
    (dict(layers=0, positions=-1.5), TypeError, r"position must be an integer, got -1\.5 \(float\)"),
    (dict(layers=0, rows=(0, 2.5)), TypeError, r"row must be an integer, got 2\.5 \(float\)"),
    (dict(layers=0, rows=(0, 1, 2)), ValueError, r"rows \(0, 1, 2\) is not a valid \(start, stop\) slice"),
])
def test_bad_injection_arguments(tiny, kwargs, error, message):
    with pytest.raises(error, match=message):
        Injection(torch.zeros(1, 1, tv.adapt(tiny).d_model), **kwargs)


def test_numpy_layer_out_of_range_names_it(tiny):
    with pytest.raises(ValueError, match=r"layer 15 is out of range for this model: valid layers are 0\.\.2"):
        Injection.single(torch.zeros(tv.adapt(tiny).d_model), np.int64(15)).hooks(tiny)


def test_resolve_positions_single_int_and_negative_positions():
    q = torch.tensor([4, 6])
    assert torch.equal(resolve_positions(-1, q, 7), torch.tensor([[4], [6]]))
    assert torch.equal(resolve_positions(np.int64(-2), q, 7), resolve_positions((-2,), q, 7))
    assert torch.equal(resolve_positions((torch.tensor(0), -1), q, 7), torch.tensor([[0, 4], [0, 6]]))
    with pytest.raises(TypeError, match=r"position must be an integer, got True \(bool\)"):
        resolve_positions((True,), q, 7)


def test_context_normalises_integer_like_values():
    ctx = Context(query_pos=np.int64(3), offset=torch.tensor(0))
    assert ctx.query_pos == 3 and type(ctx.query_pos) is int and ctx.offset == 0 and type(ctx.offset) is int
    assert torch.equal(ctx.queries(2, 5, torch.device("cpu")), torch.tensor([3, 3]))
    with pytest.raises(TypeError, match=r"query position must be an integer, got 2\.5 \(float\)"):
        Context(query_pos=2.5)


def test_head_patch_integer_like_arguments_act_like_ints(tiny):
    b = _batch(tiny)
    want = _final(tiny, b, HeadPatch(1, [2]))
    for patch in (HeadPatch(np.int64(1), 2), HeadPatch(torch.tensor(1), np.array([2])),
                  HeadPatch(1, torch.tensor([2])), HeadPatch(1, (np.int64(2),), positions=np.int64(-1))):
        assert patch.layer == 1 and type(patch.layer) is int and patch.heads.tolist() == [2]
        assert torch.equal(_final(tiny, b, patch), want)


@pytest.mark.parametrize("kwargs, message", [
    (dict(layer=True, heads=[0]), r"layer must be an integer, got True \(bool\)"),
    (dict(layer=0, heads=[True]), r"head must be an integer, got True \(bool\)"),
    (dict(layer=0, heads=torch.tensor([1.0])), r"head must be an integer, got tensor\(1\.\) \(Tensor\)"),
    (dict(layer=0, heads=[0], positions=(0.5,)), r"position must be an integer, got 0\.5 \(float\)"),
])
def test_bad_head_patch_arguments(kwargs, message):
    with pytest.raises(TypeError, match=message):
        HeadPatch(**kwargs)
