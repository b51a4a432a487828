"""Damaged model files: a GGUF is checked (magic, version, size against its tensor table) before it is
dequantized, and a damaged dequantized cache entry is rebuilt with a warning. The GGUF files here are tiny
ones written with the ``gguf`` package."""

import json
import re
import struct

import numpy as np
import pytest
import torch

from tvmech.core import models
from tvmech.core.gguf_check import gguf_problem, safetensors_problem


@pytest.fixture
def tiny_gguf(tmp_path):
    import gguf

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_token_list(["a", "b", "c"])
    w.add_tensor("token_embd.weight", np.arange(48, dtype=np.float32).reshape(12, 4))
    w.add_tensor("output_norm.weight", np.ones(4, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _cut(path, n_bytes, name="cut.gguf"):
    out = path.with_name(name)
    out.write_bytes(path.read_bytes()[:n_bytes])
    return out


def test_a_complete_gguf_has_no_problem(tiny_gguf):
    assert gguf_problem(tiny_gguf) is None
    assert gguf_problem(models.default_gguf_path()) is None


def test_a_truncated_gguf_names_its_size_and_the_size_its_tensor_table_needs(tiny_gguf):
    size = tiny_gguf.stat().st_size  # the writer pads the last tensor (8 bytes of float16) to 32 bytes
    problem = gguf_problem(_cut(tiny_gguf, size - 30))
    m = re.fullmatch(rf"it is {size - 30} bytes long but its tensor table needs (\d+) "
                     r"\(tensor 'output_norm.weight' ends there\): it is truncated", problem)
    assert m and size - 30 < int(m.group(1)) <= size
    assert gguf_problem(_cut(tiny_gguf, size - 20)) is None  # only padding lost
    assert "inside its header" in gguf_problem(_cut(tiny_gguf, 40))


def test_bad_magic_and_unsupported_version_are_named(tiny_gguf, tmp_path):
    data = tiny_gguf.read_bytes()
    (tmp_path / "m.gguf").write_bytes(b"GGML" + data[4:])
    assert "does not start with the GGUF magic bytes (found b'GGML')" in gguf_problem(tmp_path / "m.gguf")
    (tmp_path / "v.gguf").write_bytes(data[:4] + struct.pack("<I", 99) + data[8:])
    assert gguf_problem(tmp_path / "v.gguf") == "GGUF version 99 is not supported (readable: (2, 3))"


def test_load_model_refuses_a_truncated_gguf_before_dequantizing(tiny_gguf, tmp_path, monkeypatch):
    def never(*a, **k):
        raise AssertionError("dequantized a damaged file")

    monkeypatch.setattr(models, "_dequantize", never)
    cut = _cut(tiny_gguf, tiny_gguf.stat().st_size - 30, "half.gguf")
    with pytest.raises(ValueError, match=r"the GGUF file '.*half\.gguf' is damaged: .* it is truncated\. "
                                         r"Re-download it"):
        models.load_hf(str(cut), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_a_damaged_package_gguf_names_the_reinstall_command(tiny_gguf, tmp_path, monkeypatch):
    cut = _cut(tiny_gguf, 30)
    monkeypatch.setattr(models, "default_gguf_path", lambda: cut)
    monkeypatch.delenv("TVMECH_DEFAULT_GGUF", raising=False)
    with pytest.raises(ValueError, match=r"--force-reinstall"):
        models.load_hf(None, cache_dir=tmp_path / "cache")


def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(tiny_gguf, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    cache = tmp_path / "cache"
    target = models.gguf_cache_dir(tiny_gguf, cache)
    target.mkdir(parents=True)
    (target / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(100)}, str(target / "model.safetensors"))
    assert safetensors_problem(target / "model.safetensors") is None
    blob = (target / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(blob[:-50])
    n = len(blob)
    assert safetensors_problem(target / "model.safetensors") == (f"model.safetensors is {n - 50} bytes long but its "
                                                                 f"header describes {n}")

    rebuilt = []

    class Model:
        pass

    def dequantize(path, where):
        rebuilt.append(where)
        assert not where.exists()  # the damaged entry is gone
        return Model(), "tok"

    monkeypatch.setattr(models, "_dequantize", dequantize)
    with pytest.warns(UserWarning, match=r"cache entry .* is damaged \(model\.safetensors is \d+ bytes long but its "
                                         r"header describes \d+\); rebuilding it from .*tiny\.gguf"):
        models._load_gguf(tiny_gguf, cache)
    assert rebuilt == [target]
    assert [p.name for p in cache.iterdir()] == []  # nothing left behind (the fake dequantizer wrote nothing)
