import math

import pytest
import torch

import tvmech as tv
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.learned import LTVConfig, TrainingDiverged, learn_layer_sweep, learn_task_vector

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:40], TASK.template)
CFG = LTVConfig(steps=12, batch_size=8, eval_every=4, lr=1e-2)


def test_save_load_roundtrip_is_bit_exact(tiny, tmp_path):
    vec = TaskVector.for_model(tiny, torch.randn(2, 1, 64), (0, 2), task="t", method="ltv", metrics={"acc": 0.5})
    vec.save(tmp_path / "v")
    back = TaskVector.load(tmp_path / "v", tiny)
    assert torch.equal(back.vectors, vec.vectors) and back.layers == (0, 2) and back.metrics == {"acc": 0.5}
    assert (tmp_path / "v.safetensors").is_file() and (tmp_path / "v.json").is_file()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        vec.save(tmp_path / "v")


def test_loading_onto_another_model_fails(tiny, tmp_path, make_tokenizer, make_tiny_hf):
    from tvmech.core.models import wrap

    tok = make_tokenizer()
    other = wrap(make_tiny_hf(d_model=32, vocab=len(tok)), tok, "other")
    TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,)).save(tmp_path / "v")
    with pytest.raises(ValueError, match="d_model 64; the model has 32"):
        TaskVector.load(tmp_path / "v", other)


def test_ltv_training_lowers_the_loss_and_records_its_curve(tiny):
    vec = learn_task_vector(tiny, SMALL, layers=(1,), config=CFG, progress=False)
    assert vec.vectors.shape == (1, 1, 64) and len(vec.curve) == 12
    first, last = vec.curve[0]["loss"], vec.curve[-1]["loss"]
    assert last < first
    assert math.isfinite(vec.metrics["best_val_loss"]) and vec.method == "ltv"


def test_layer_sweep_matches_per_layer_loop(tiny):
    sweep = learn_layer_sweep(tiny, SMALL, (0, 2), config=CFG, progress=False)
    for layer, vec in zip((0, 2), sweep):
        alone = learn_task_vector(tiny, SMALL, layers=(layer,), config=CFG, progress=False)
        assert vec.layers == (layer,)
        assert torch.allclose(vec.vectors, alone.vectors, atol=1e-4), layer


def test_scale_aware_lr_uses_the_residual_norm(tiny):
    a = learn_task_vector(tiny, SMALL, layers=(1,), config=LTVConfig(steps=1, lr=1e-3), progress=False)
    b = learn_task_vector(tiny, SMALL, layers=(1,), config=LTVConfig.paper(steps=1), progress=False)
    assert b.metrics["lr_effective"] == 1e-3 and a.metrics["lr_effective"] > 1e-3


def test_nan_stops_training_and_keeps_last_good(tiny):
    cfg = LTVConfig(steps=5, batch_size=4, lr=float("1e30"), lr_unit="absolute", eval_every=100)
    with pytest.raises(TrainingDiverged, match="at step") as err:
        learn_task_vector(tiny, SMALL, layers=(1,), config=cfg, progress=False)
    assert err.value.last_good and all(torch.isfinite(v.vectors).all() for v in err.value.last_good)


def test_empty_training_split_and_bad_config(tiny):
    with pytest.raises(ValueError, match="training split is empty"):
        learn_task_vector(tiny, SMALL, train=(), layers=(1,), config=CFG, progress=False)
    with pytest.raises(ValueError, match="lr_unit 'bogus'"):
        LTVConfig(lr_unit="bogus")
    with pytest.raises(ValueError, match="layer 7 is out of range"):
        learn_task_vector(tiny, SMALL, layers=(7,), config=CFG, progress=False)


def test_vanilla_tv_is_icl_minus_zero_shot_mean(tiny):
    from tvmech.methods.vanilla import mean_query_state, vanilla_task_vector

    sp = SMALL.splits(0)
    add = vanilla_task_vector(tiny, SMALL, 1, k=2, n=6)
    rep = vanilla_task_vector(tiny, SMALL, 1, k=2, n=6, mode="replace")
    zs = mean_query_state(tiny, SMALL, tv.make_prompts(SMALL, sp.train[:6], 0), 1)
    assert torch.allclose(rep.vectors[0, 0] - zs, add.vectors[0, 0], atol=1e-5)
    assert add.mode == "add" and rep.mode == "replace" and add.layers == (1,)


def test_function_vector_heads_and_indirect_effect_definition(tiny):
    """The batched CIE equals patching one head by hand; the FV is the sum of the top heads' outputs."""
    from tvmech.data.prompts import encode
    from tvmech.methods.function_vectors import function_vector, function_vector_heads, indirect_effects, mean_head_z

    ad = tv.adapt(tiny)
    sp = SMALL.splits(0)
    prompts = tv.make_prompts(SMALL, sp.train[:3], 2, sp.train, seed=1, shuffle_labels=True)
    z_mean = mean_head_z(tiny, SMALL, tv.make_prompts(SMALL, sp.train[:3], 2, sp.train))
    cie = indirect_effects(tiny, SMALL, prompts, z_mean)
    b = encode(ad.tokenizer, SMALL, prompts)
    rows = torch.arange(len(b))

    def prob(hooks):
        with torch.no_grad(), ad.hooks(hooks):
            out = ad.unembed(ad.residual(b.tokens, ad.n_layers)[rows, b.query_pos])
        return torch.softmax(out, -1)[rows, b.label_first]

    def patch(z, hook=None):
        z = z.clone()
        z[rows, b.query_pos, 3] = z_mean[1, 3]
        return z

    manual = (prob([(ad.act_name(1, "z"), patch)]) - prob([])).mean()
    assert torch.allclose(cie[1, 3], manual, atol=1e-5)
    heads = function_vector_heads(tiny, SMALL, k=2, n_prompts=3)
    fv = function_vector(tiny, SMALL, 1, heads, n_heads=2)
    expected = sum(heads.outputs[l, h] for l, h in heads.top(2))
    assert torch.allclose(fv.vectors[0, 0], expected) and fv.metrics["heads"] == heads.top(2)
    with pytest.raises(ValueError, match="n_heads must be in 1..12"):
        function_vector(tiny, SMALL, 1, heads, n_heads=0)


def test_shuffled_labels_keep_inputs_and_permute_outputs():
    sp = TASK.splits(0)
    plain = tv.make_prompts(TASK, sp.test[:5], 4, sp.train, seed=3)
    shuf = tv.make_prompts(TASK, sp.test[:5], 4, sp.train, seed=3, shuffle_labels=True)
    for a, b in zip(plain, shuf):
        qa = [blk.split("\n")[0] for blk in a.text.split("\n\n")]
        qb = [blk.split("\n")[0] for blk in b.text.split("\n\n")]
        aa = sorted(blk.split("\n")[1] for blk in a.text.split("\n\n")[:-1])
        ab = sorted(blk.split("\n")[1] for blk in b.text.split("\n\n")[:-1])
        assert qa == qb and aa == ab
    assert any(a.text != b.text for a, b in zip(plain, shuf))


def test_multi_layer_vectors_get_their_own_layers_step_size(tiny):
    """Each layer's step size is lr x that layer's query residual norm, not the lowest layer's."""
    from tvmech.methods.training import prepare_data, query_norm

    ad = tv.adapt(tiny)
    vec = learn_task_vector(tiny, SMALL, layers=(0, 2), config=LTVConfig(steps=3, lr=1e-3), progress=False)
    data = prepare_data(ad, SMALL, SMALL.splits(0).train, 0)
    expected = [1e-3 * query_norm(ad, data, layer) for layer in (0, 2)]
    assert vec.metrics["lr_per_layer"] == pytest.approx(expected, rel=1e-4)
    assert expected[1] > 2 * expected[0]  # the embedding scale is far below the upper layers'
    moved = vec.vectors.norm(dim=-1).flatten()
    assert moved[1] > moved[0]  # the upper vector moved further, in proportion to its layer's scale
