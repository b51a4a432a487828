"""Issue 13, arguments: integer-like layers/positions/heads accepted (bool refused), a single integer where a
sequence is taken, clear messages for everything else; model sources that look like paths; the closest
model names."""

import numpy as np
import pytest
import torch

import tvmech as tv
from tvmech.core.checks import (
    ArgumentTypeError,
    as_int,
    as_ints,
    check_bool,
    check_fits_context,
    check_float,
    check_int,
    closest_names,
)
from tvmech.core.models import _looks_like_path
from tvmech.experiments.common import check_layers


@pytest.mark.parametrize("value", [2, np.int64(2), np.int32(2), torch.tensor(2), torch.tensor(2, dtype=torch.int32),
                                   np.array(2), range(5)[2]])
def test_as_int_accepts_integral_types(value):
    out = as_int(value, "layer")
    assert out == 2 and type(out) is int


@pytest.mark.parametrize("value", [True, False, np.True_, torch.tensor(True), 1.5, 2.0, np.float64(2), "2", None,
                                   torch.tensor(2.0), torch.tensor([2]), [2]])
def test_as_int_refuses_everything_else(value):
    with pytest.raises(ArgumentTypeError, match=r"^layer must be an integer, got .+ \(\w+\)$"):
        as_int(value, "layer")
    with pytest.raises(TypeError):  # also a ValueError, like the range errors of the same arguments
        as_int(value, "layer")


def test_as_int_message_names_value_and_type():
    with pytest.raises(TypeError, match=r"layer must be an integer, got 1\.5 \(float\)"):
        as_int(1.5, "layer")
    with pytest.raises(ValueError, match=r"layer must be an integer, got True \(bool\)"):
        as_int(True, "layer")


@pytest.mark.parametrize("value, want", [
    (15, (15,)), (np.int64(15), (15,)), (torch.tensor(15), (15,)), ((1, 2), (1, 2)), ([np.int64(1), 2], (1, 2)),
    (range(3), (0, 1, 2)), (torch.tensor([3, 4]), (3, 4)), (np.array([5, -1]), (5, -1)), ((-1, -2), (-1, -2)),
    ((), ()),
])
def test_as_ints_single_or_sequence(value, want):
    out = as_ints(value, "layer")
    assert out == want and all(type(x) is int for x in out)


@pytest.mark.parametrize("value, message", [
    ("12", r"layers must be an integer or a sequence of integers, got '12' \(str\)"),
    (True, r"layer must be an integer, got True \(bool\)"),
    ((1, True), r"layer must be an integer, got True \(bool\)"),
    ([1, 2.5], r"layer must be an integer, got 2\.5 \(float\)"),
    (torch.tensor([1.0]), r"layer must be an integer, got tensor\(1\.\) \(Tensor\)"),
    (None, r"layer must be an integer, got None \(NoneType\)"),
])
def test_as_ints_refusals(value, message):
    with pytest.raises(ArgumentTypeError, match=message):
        as_ints(value, "layer")


def test_number_checks():
    assert check_int(np.int64(3), "steps", minimum=1) == 3
    with pytest.raises(ValueError, match=r"steps must be >= 1 \(an integer\), got 0"):
        check_int(0, "steps", minimum=1)
    assert check_float(np.float32(0.5), "lr", minimum=0, inclusive=False) == 0.5
    for bad in (float("nan"), float("inf"), 0.0):
        with pytest.raises(ValueError, match=r"lr must be a finite number > 0"):
            check_float(bad, "lr", minimum=0, inclusive=False)
    assert check_float(float("inf"), "lr", minimum=0, finite=False) == float("inf")
    with pytest.raises(ValueError, match=r"lr must be a number \(not NaN\) > 0, got nan"):
        check_float(float("nan"), "lr", minimum=0, inclusive=False, finite=False)
    with pytest.raises(TypeError, match=r"lr must be a number, got '1' \(str\)"):
        check_float("1", "lr")
    assert check_bool(np.True_, "flag") is True
    with pytest.raises(TypeError, match=r"flag must be True or False, got 1 \(int\)"):
        check_bool(1, "flag")


def test_fits_context_message():
    check_fits_context(["abc"], [3], 3)
    check_fits_context(["abc" * 100], [300], None)  # unknown context: nothing checked
    with pytest.raises(ValueError, match=r"prompt 7 \('abcdef.*\.\.\.'\) is 70 tokens long, longer than the model's "
                                         r"context of 64 tokens"):
        check_fits_context(["x", "abcdef" * 20], [1, 70], 64, indices=[3, 7])


# ----------------------------------------------------------------- the adapter and the experiments' layer checks
def test_check_layer_accepts_integral_types(tiny):
    ad = tv.adapt(tiny)
    for layer in (1, np.int64(1), torch.tensor(1), np.array(1)):
        assert ad.check_layer(layer) == 1 and type(ad.check_layer(layer)) is int
        assert ad.hook_name(layer) == "blocks.1.hook_resid_pre"
    assert ad.check_layer(np.int64(3), allow_final=True) == 3
    with pytest.raises(ValueError, match=r"layer 3 is out of range.*0\.\.2"):
        ad.check_layer(np.int64(3))


@pytest.mark.parametrize("layer, message", [
    (True, r"layer must be an integer, got True \(bool\)"),
    (1.5, r"layer must be an integer, got 1\.5 \(float\)"),
    (torch.tensor(1.0), r"layer must be an integer, got tensor\(1\.\) \(Tensor\)"),
    ("1", r"layer must be an integer, got '1' \(str\)"),
])
def test_check_layer_refuses_non_integers(tiny, layer, message):
    with pytest.raises(TypeError, match=message):
        tv.adapt(tiny).check_layer(layer)


def test_residual_with_numpy_layer_equals_int(tiny):
    ad = tv.adapt(tiny)
    tokens = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(ad.residual(tokens, np.int64(2)), ad.residual(tokens, 2))
    assert torch.equal(ad.run_blocks(ad.residual(tokens, 1), torch.tensor(1), np.int64(3)),
                       ad.run_blocks(ad.residual(tokens, 1), 1, 3))


def test_context_length(tiny, make_arch):
    assert tv.adapt(tiny).n_ctx == 512  # the tiny Llama's max_position_embeddings
    assert tv.adapt(make_arch("gpt2")[0]).n_ctx == 256  # GPT-2's n_positions


def test_check_layers_single_int_and_types():
    assert check_layers(2, 3, "geometry layer") == (2,)
    assert check_layers((np.int64(0), torch.tensor(2)), 3, "geometry layer") == (0, 2)
    with pytest.raises(TypeError, match=r"geometry layer must be an integer, got 1\.5 \(float\)"):
        check_layers((1.5,), 3, "geometry layer")  # was silently truncated to 1
    with pytest.raises(TypeError, match=r"geometry layer must be an integer, got True \(bool\)"):
        check_layers((True,), 3, "geometry layer")
    with pytest.raises(ValueError, match=r"layer\(s\) \[5\] out of range for a 3-layer model"):
        check_layers(np.int64(5), 3, "geometry layer")


# ----------------------------------------------------------------- model sources
@pytest.mark.parametrize("source", ["./my_model_dir", "~/no/such/model", "/no/such/model", "a/b/c"])
def test_missing_path_says_it_does_not_exist(source):
    with pytest.raises(FileNotFoundError, match=rf"model path '{source}' does not exist.*Valid sources"):
        tv.load_model(source)


def test_path_in_an_existing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model path 'models/mine' does not exist"):
        tv.load_model("models/mine")
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(ValueError, match=r"'weights.bin' is a file but not a \.gguf file"):
        tv.load_model("weights.bin")


def test_looks_like_path():
    assert _looks_like_path("./x") and _looks_like_path("~/x") and _looks_like_path("/x") and _looks_like_path("a/b/c")
    assert not _looks_like_path("gpt2") and not _looks_like_path("meta-llama/Llama-2-7b-hf")


def test_unknown_name_lists_the_closest_names():
    with pytest.raises(ValueError, match=r"unknown model 'llama-2-7b'.*closest names: meta-llama/Llama-2-7b-hf"):
        tv.load_model("llama-2-7b")
    with pytest.raises(ValueError, match=r"unknown model 'gpt-99'.*closest names: gpt2"):
        tv.load_model("gpt-99")


def test_closest_names_are_sorted_by_similarity():
    valid = ["aaa", "abc", "gpt2", "gpt2-medium", "zzz"]
    assert closest_names("gpt-2", valid, n=2) == ["gpt2", "gpt2-medium"]
    assert closest_names("GPT2", valid, n=1) == ["gpt2"]
    assert closest_names("llama", ["a/llama", "b/xxxxx"], n=1) == ["a/llama"]
