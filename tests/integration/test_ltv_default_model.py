"""Learned task vectors on the real default model (slow)."""

import pytest
import torch

import tvmech as tv
from tvmech.methods.learned import LTVConfig, learn_task_vector

pytestmark = pytest.mark.slow


def test_ltv_at_layer_15_beats_zero_shot_and_approaches_icl(default_model, tmp_path):
    task = tv.builtin_task("antonym")
    sp = task.splits(0)
    test = sp.test[:40]
    vec = learn_task_vector(default_model, task, layers=(15,), config=LTVConfig(steps=80), progress=False)
    zero = tv.evaluate(default_model, task, test, 0).accuracy
    icl = tv.evaluate(default_model, task, test, 5, sp.train).accuracy
    ltv = tv.evaluate(default_model, task, test, 0, intervention=vec).accuracy
    assert ltv > zero + 0.3 and ltv >= icl - 0.1, (zero, icl, ltv)
    assert 20 < vec.metrics["norm"] < 150  # scale-aware lr moved the vector a residual-sized distance
    vec.save(tmp_path / "antonym_l15")
    again = tv.evaluate(default_model, task, test, 0,
                        intervention=tv.TaskVector.load(tmp_path / "antonym_l15", default_model))
    assert again.accuracy == ltv


@pytest.mark.slow
def test_the_same_weights_loaded_by_their_gguf_path_accept_the_vector(default_model, tmp_path):
    from tvmech.core.adapter import adapt
    from tvmech.core.weights import default_gguf_path
    from tvmech.interventions.task_vector import TaskVector

    by_path = tv.load_model(str(default_gguf_path()))
    assert adapt(by_path).name != adapt(default_model).name
    assert adapt(by_path).fingerprint() == adapt(default_model).fingerprint()
    vec = TaskVector.for_model(default_model, torch.zeros(1, 1, 576), (15,))
    vec.save(tmp_path / "v")
    assert TaskVector.load(tmp_path / "v", by_path).layers == (15,)
