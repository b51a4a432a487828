"""Control vectors (issue 27): the every-position site, export to llama.cpp's GGUF and back bit for bit, and
import of repeng's and steering-vectors' files (fixtures made with those libraries: tests/data/control_vectors)."""

import dataclasses
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

import tvmech as tv
from tvmech.interventions import Injection, generate
from tvmech.interventions.control_vectors import cvec_layer, read_gguf
from tvmech.interventions.sites import resolve_positions
from tvmech.interventions.task_vector import TaskVector

DATA = Path(__file__).parents[2] / "data" / "control_vectors"


def expected() -> dict[int, torch.Tensor]:
    """The fixtures' vectors (see tests/data/control_vectors/make.py)."""
    rng = np.random.default_rng(0)
    return {layer: torch.from_numpy(rng.standard_normal(64).astype(np.float32)) for layer in (1, 2)}


def _logits(model, ids, inj=None):
    with torch.no_grad():
        return model.run_with_hooks(ids, fwd_hooks=inj.hooks(tv.adapt(model), ids.shape[1] - 1) if inj else [])


def test_every_position_is_every_absolute_index_and_resid_post_is_the_next_resid_pre(make_arch64, arch):
    model = make_arch64(arch)
    ad = tv.adapt(model)
    ids = ad.tokenizer("The cat sat on", add_special_tokens=False, return_tensors="pt")["input_ids"]
    v = torch.randn(1, 1, ad.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    every = _logits(model, ids, Injection(v, (1,), ("all",), "resid_post"))
    spelled = _logits(model, ids, Injection(v, (1,), tuple(range(ids.shape[1])), "resid_post"))
    next_pre = _logits(model, ids, Injection(v, (2,), ("all",), "resid_pre"))
    clean = _logits(model, ids)
    torch.testing.assert_close(every, spelled, rtol=0, atol=1e-10)
    torch.testing.assert_close(every, next_pre, rtol=0, atol=1e-10)
    assert (every[0, 0] - clean[0, 0]).abs().max() > 1e-3  # the first token is written too (a -1 vector would not)


def test_every_position_reaches_generated_tokens_with_and_without_the_cache(tiny):
    v = torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(3)) * 4
    inj = Injection(v, (1,), ("all",), "resid_post")
    cached = generate(tiny, "abcab", 12, intervention=inj)[0].new_ids
    assert cached == generate(tiny, "abcab", 12, intervention=inj, use_cache=False)[0].new_ids
    query_only = Injection(v, (1,), (-1,), "resid_post")
    assert cached != generate(tiny, "abcab", 12, intervention=query_only)[0].new_ids


def test_all_is_alone_and_has_no_index(tiny):
    with pytest.raises(ValueError, match="give it alone"):
        Injection(torch.zeros(1, 1, 64), (1,), ("all", -1))
    with pytest.raises(ValueError, match="not one index per row"):
        resolve_positions(("all",), torch.tensor([3]), 4)


@pytest.mark.parametrize("layers, point, shared", [((1, 2), "resid_post", False), ((2,), "resid_pre", False),
                                                   ((1, 2), "resid_post", True)])
def test_round_trip_is_bit_for_bit_with_every_field(tiny, tmp_path, layers, point, shared):
    n = 1 if shared else len(layers)
    vec = TaskVector.for_model(tiny, torch.randn(n, 1, 64), layers, ("all",), point=point, task="t", method="ltv",
                               metrics={"best_val_loss": 0.5}, config={"lr": 3e-4})
    path = vec.to_control_vector(tmp_path / "v.gguf")
    back = TaskVector.from_control_vector(path, tiny)
    assert torch.equal(back.vectors, vec.vectors) and back.vectors.dtype == vec.vectors.dtype
    for f in dataclasses.fields(TaskVector):
        if f.name != "vectors":
            assert getattr(back, f.name) == getattr(vec, f.name), f.name
    directions, hint, _ = read_gguf(path)  # llama.cpp's numbering: the block whose output is steered
    assert sorted(directions) == sorted(cvec_layer(point, layer) for layer in layers)
    assert hint == vec.model_name


def test_the_gguf_has_llama_cpps_layout(tiny, tmp_path):
    vec = TaskVector.for_model(tiny, torch.randn(2, 1, 64), (1, 2), ("all",), point="resid_post")
    reader = gguf.GGUFReader(str(vec.to_control_vector(tmp_path / "v.gguf")))
    assert bytes(reader.get_field("general.architecture").parts[-1]).decode() == "controlvector"
    assert int(reader.get_field("controlvector.layer_count").parts[-1][0]) == 2
    assert reader.get_field("controlvector.model_hint") is not None
    got = {t.name: (t.tensor_type, list(t.shape)) for t in reader.tensors}
    assert got == {f"direction.{k}": (gguf.GGMLQuantizationType.F32, [64]) for k in (1, 2)}


@pytest.mark.parametrize("kw, match", [
    (dict(positions=(-1,)), "every token"),
    (dict(positions=("all",), point="resid_pre", layers=(1,)), "output of block 0"),
    (dict(positions=("all",), point="resid_pre", layers=(0,)), "the embedding"),
    (dict(positions=("all",), point="resid_post", layers=(0,)), "output of block 0"),
    (dict(positions=("all",), point="attn_out"), "inside a block"),
    (dict(positions=("all",), mode="replace"), "mode 'replace'"),
])
def test_vectors_llama_cpp_cannot_express_are_refused(tiny, tmp_path, kw, match):
    kw = {"layers": (1,), "point": "resid_post", **kw}
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64), **kw)
    with pytest.raises(ValueError, match=match):
        vec.to_control_vector(tmp_path / "v.gguf")
    assert not (tmp_path / "v.gguf").exists()


def test_an_edited_export_is_refused(tiny, tmp_path):
    vec = TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,), ("all",), point="resid_post")
    path = vec.to_control_vector(tmp_path / "v.gguf")
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x40  # a bit of the last direction value
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        TaskVector.from_control_vector(path, tiny)


@pytest.mark.parametrize("name", ["repeng-0.4.0.gguf", "steering-vectors-0.12.2.pt",
                                  "steering-vectors-0.12.2.safetensors"])
def test_repeng_and_steering_vectors_files_import(tiny, name):
    with pytest.raises(ValueError, match="no tvmech fingerprint"):
        TaskVector.from_control_vector(DATA / name, tiny)
    vec = TaskVector.from_control_vector(DATA / name, tiny, strict=False, task="style")
    exp = expected()
    assert vec.layers == (1, 2) and vec.positions == ("all",) and vec.point == "resid_post" and vec.task == "style"
    assert torch.equal(vec.vectors, torch.stack([exp[1], exp[2]])[:, None])
    assert vec.model_name == ("llama" if name.endswith(".gguf") else "")


def test_in_memory_repeng_and_steering_vectors_objects_import(tiny):
    @dataclasses.dataclass
    class SteeringVector:  # steering-vectors' fields (layer_activations, layer_type)
        layer_activations: dict
        layer_type: str = "decoder_block"

    @dataclasses.dataclass
    class ControlVector:  # repeng's fields (model_type, directions)
        model_type: str
        directions: dict

    exp = expected()
    for obj in (SteeringVector(exp), ControlVector("llama", {k: v.numpy() for k, v in exp.items()})):
        vec = TaskVector.from_control_vector(obj, tiny, strict=False)
        assert torch.equal(vec.vectors[:, 0], torch.stack([exp[1], exp[2]]))
    with pytest.raises(ValueError, match="layer_type 'mlp'"):
        TaskVector.from_control_vector(SteeringVector(exp, "mlp"), tiny, strict=False)


def test_bad_files_are_refused_with_what_is_wrong(tiny, tmp_path):
    torch.save({1: torch.zeros(32)}, tmp_path / "narrow.pt")
    with pytest.raises(ValueError, match="width \\[32\\]; .* d_model 64"):
        TaskVector.from_control_vector(tmp_path / "narrow.pt", tiny, strict=False)
    torch.save({7: torch.zeros(64)}, tmp_path / "deep.pt")
    with pytest.raises(ValueError, match="block\\(s\\) \\[7\\]; .* blocks 0..2"):
        TaskVector.from_control_vector(tmp_path / "deep.pt", tiny, strict=False)
    torch.save(_Pickled(), tmp_path / "object.pt")  # a pickled object is never unpickled
    with pytest.raises(ValueError, match="not loaded"):
        TaskVector.from_control_vector(tmp_path / "object.pt", tiny, strict=False)
    with pytest.raises(ValueError, match="unknown control-vector file type"):
        (tmp_path / "v.npy").write_bytes(b"x")
        TaskVector.from_control_vector(tmp_path / "v.npy", tiny, strict=False)
    other = TaskVector.for_model(tiny, torch.randn(1, 1, 64), (1,), ("all",), point="resid_post")
    other.fingerprint = "0" * 16
    with pytest.raises(ValueError, match="fingerprint"):
        TaskVector.from_control_vector(other.to_control_vector(tmp_path / "o.gguf"), tiny)


class _Pickled:
    layer_activations = {1: torch.zeros(64)}


def test_ltv_trains_a_control_vector(tiny, tmp_path):
    task = tv.builtin_task("capitalize")
    cfg = tv.LTVConfig(steps=3, batch_size=4, eval_every=3)
    ex = task.examples
    vec = tv.learn_task_vector(tiny, task, ex[:8], ex[8:12], layers=(1,), positions="all", point="resid_post",
                               config=cfg, progress=False)
    assert vec.positions == ("all",) and float(vec.vectors.norm()) > 0
    back = TaskVector.from_control_vector(vec.to_control_vector(tmp_path / "ltv.gguf"), tiny)
    assert torch.equal(back.vectors, vec.vectors)
