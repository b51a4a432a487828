"""Issue 13, arguments of LTV training: every LTVConfig field validated with a message naming the field, the
value and what is valid; integer-like / single-int layers and positions; prompts longer than the context."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import tvmech as tv
from tvmech.data.tasks import Example
from tvmech.methods.learned import LTVConfig, learn_layer_sweep, learn_task_vector

TASK = tv.builtin_task("capitalize")
SMALL = tv.Task("capitalize", TASK.examples[:24], TASK.template)
CFG = LTVConfig(steps=2, batch_size=4, eval_every=1, lr=1e-2)


@pytest.mark.parametrize("field, value, error, message", [
    ("eval_every", 0, ValueError, r"LTVConfig\.eval_every must be >= 1 \(an integer\), got 0"),
    ("eval_every", 2.0, TypeError, r"LTVConfig\.eval_every must be an integer, got 2\.0 \(float\)"),
    ("weight_decay", -1, ValueError, r"LTVConfig\.weight_decay must be a finite number >= 0, got -1"),
    ("weight_decay", math.inf, ValueError, r"LTVConfig\.weight_decay must be a finite number >= 0, got inf"),
    ("lr", math.nan, ValueError, r"LTVConfig\.lr must be a number \(not NaN\) > 0, got nan"),
    ("lr", 0, ValueError, r"LTVConfig\.lr must be a number \(not NaN\) > 0, got 0"),
    ("lr", -1e-3, ValueError, r"LTVConfig\.lr must be a number \(not NaN\) > 0, got -0\.001"),
    ("lr", -math.inf, ValueError, r"LTVConfig\.lr must be a number \(not NaN\) > 0, got -inf"),
    ("lr", "1e-3", TypeError, r"LTVConfig\.lr must be a number, got '1e-3' \(str\)"),
    ("lr", True, TypeError, r"LTVConfig\.lr must be a number, got True \(bool\)"),
    ("steps", 2.5, TypeError, r"LTVConfig\.steps must be an integer, got 2\.5 \(float\)"),
    ("steps", True, TypeError, r"LTVConfig\.steps must be an integer, got True \(bool\)"),
    ("steps", 0, ValueError, r"LTVConfig\.steps must be >= 1 \(an integer\), got 0"),
    ("batch_size", 0, ValueError, r"LTVConfig\.batch_size must be >= 1 \(an integer\), got 0"),
    ("batch_size", "8", TypeError, r"LTVConfig\.batch_size must be an integer, got '8' \(str\)"),
    ("init_scale", -1.0, ValueError, r"LTVConfig\.init_scale must be a finite number >= 0, got -1\.0"),
    ("init_scale", math.nan, ValueError, r"LTVConfig\.init_scale must be a finite number >= 0, got nan"),
    ("first_token_only", 1, TypeError, r"LTVConfig\.first_token_only must be True or False, got 1 \(int\)"),
    ("first_token_only", "yes", TypeError, r"LTVConfig\.first_token_only must be True or False, got 'yes'"),
    ("patience", 0, ValueError, r"LTVConfig\.patience must be >= 1 \(an integer\), got 0"),
    ("patience", 1.5, TypeError, r"LTVConfig\.patience must be an integer, got 1\.5 \(float\)"),
    ("seed", -1, ValueError, r"LTVConfig\.seed must be >= 0 \(an integer\), got -1"),
    ("seed", 0.5, TypeError, r"LTVConfig\.seed must be an integer, got 0\.5 \(float\)"),
    ("k", -1, ValueError, r"LTVConfig\.k must be >= 0 \(an integer\), got -1"),
    ("k", False, TypeError, r"LTVConfig\.k must be an integer, got False \(bool\)"),
    ("lr_unit", "bogus", ValueError, r"LTVConfig\.lr_unit 'bogus' is not valid; choose one of \('resid_norm', "),
    ("init", "normal", ValueError, r"LTVConfig\.init 'normal' is not valid; choose one of \('zeros', 'uniform'\)"),
    ("lr_schedule", "cosine", ValueError, r"LTVConfig\.lr_schedule 'cosine' is not valid; choose one of \('constant'"),
    ("select_on", "f1", ValueError, r"LTVConfig\.select_on 'f1' is not valid; choose one of \('loss', 'accuracy'\)"),
    ("pool", 1, ValueError, r"LTVConfig\.pool must be >= 2 \(an integer\), got 1"),
    ("pool_train_share", 1.5, ValueError, r"LTVConfig\.pool_train_share 1\.5 is not valid: it must be in \(0, 1\)"),
])
def test_every_field_is_validated(field, value, error, message):
    with pytest.raises(error, match=message):
        LTVConfig(**{field: value})


def test_every_field_has_a_bad_value_above():
    tested = {p[0] for p in test_every_field_is_validated.pytestmark[0].args[1]}
    assert tested == {f.name for f in dataclasses.fields(LTVConfig)}


def test_infinite_lr_is_accepted_and_diverges(tiny):
    assert LTVConfig(lr=math.inf).lr == math.inf  # a documented way to force divergence (tests use it)
    with pytest.raises(tv.TrainingDiverged, match="at step 1"):
        learn_task_vector(tiny, SMALL, layers=1, config=dataclasses.replace(CFG, lr=math.inf), progress=False)


def test_numpy_numbers_become_python_numbers():
    cfg = LTVConfig(lr=np.float32(0.5), steps=np.int64(3), batch_size=torch.tensor(4), patience=np.int32(2),
                    first_token_only=np.True_, weight_decay=0, eval_every=np.int64(1), seed=np.int64(7),
                    k=np.int64(0), init_scale=1)
    assert cfg == LTVConfig(lr=0.5, steps=3, batch_size=4, patience=2, first_token_only=True, weight_decay=0.0,
                            eval_every=1, seed=7, k=0, init_scale=1.0)
    assert type(cfg.steps) is int and type(cfg.lr) is float and type(cfg.first_token_only) is bool
    json.dumps(dataclasses.asdict(cfg))  # saved with every task vector
    assert LTVConfig.paper(steps=np.int64(5)).steps == 5


def _same(a, b):
    assert a.layers == b.layers and a.positions == b.positions
    assert all(type(x) is int for x in (*a.layers, *a.positions))
    torch.testing.assert_close(a.vectors, b.vectors)


def test_integer_like_and_single_layers_train_the_same_vector(tiny):
    want = learn_task_vector(tiny, SMALL, layers=(1,), config=CFG, progress=False)
    _same(learn_task_vector(tiny, SMALL, layers=np.int64(1), positions=np.int64(-1), config=CFG, progress=False),
          want)
    _same(learn_task_vector(tiny, SMALL, layers=1, positions=-1, config=CFG, progress=False), want)
    _same(learn_task_vector(tiny, SMALL, layers=torch.tensor([1]), config=CFG, progress=False), want)
    sweep = learn_layer_sweep(tiny, SMALL, np.array([1]), positions=(np.int64(-1),), config=CFG, progress=False)
    _same(sweep[0], want)
    _same(learn_layer_sweep(tiny, SMALL, 1, config=CFG, progress=False)[0], want)


@pytest.mark.parametrize("kwargs, message", [
    (dict(layers=True), r"layer must be an integer, got True \(bool\)"),
    (dict(layers=(1.0,)), r"layer must be an integer, got 1\.0 \(float\)"),
    (dict(layers=1, positions=(1.5,)), r"position must be an integer, got 1\.5 \(float\)"),
])
def test_bad_layer_arguments(tiny, kwargs, message):
    with pytest.raises(TypeError, match=message):
        learn_task_vector(tiny, SMALL, config=CFG, progress=False, **kwargs)
    if "positions" not in kwargs:
        with pytest.raises(TypeError, match=message):
            learn_layer_sweep(tiny, SMALL, kwargs["layers"], config=CFG, progress=False)


def test_a_string_position_must_name_a_role(tiny):
    with pytest.raises(ValueError, match=r"position '-1' is not a role: valid roles are query, input_first"):
        learn_task_vector(tiny, SMALL, layers=1, positions="-1", config=CFG, progress=False)


def test_numpy_layer_out_of_range_is_named(tiny):
    with pytest.raises(ValueError, match=r"layer 15 is out of range for this model: valid layers are 0\.\.2"):
        learn_task_vector(tiny, SMALL, layers=np.int64(15), config=CFG, progress=False)


def test_training_prompt_longer_than_the_context_is_refused(tiny):
    train = [*SMALL.examples[:7], Example("q" * 600, "Q")]  # 600+ characters: tokens, > 512 positions
    with pytest.raises(ValueError, match=r"training prompt 7 \('.*qqq\.\.\.'\) is \d+ tokens long, longer than "
                                         r"the model's context of 512 tokens"):
        learn_task_vector(tiny, SMALL, train, SMALL.examples[8:12], layers=1, config=CFG, progress=False)
    with pytest.raises(ValueError, match=r"validation prompt 1 .* longer than the model's context of 512"):
        learn_task_vector(tiny, SMALL, SMALL.examples[:8], [SMALL.examples[9], Example("q" * 600, "Q")], layers=1,
                          config=CFG, progress=False)
