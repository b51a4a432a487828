"""Control vectors in and out: llama.cpp's control-vector GGUF (which repeng also writes), repeng's and
steering-vectors' vectors, as :class:`~tvmech.interventions.task_vector.TaskVector` s.

The convention, exactly. llama.cpp (``--control-vector``, ``llama_apply_adapter_cvec``) adds the tensor
``direction.{k}`` (1-D, float32, ``n_embd`` values) to the *output* of block ``k`` (0-based; ``k >= 1``: the loader
refuses ``direction.0``, block 0's output cannot be steered) at *every* token, prompt and generated alike:

    h_{k+1}[t] = block_k(h_k)[t] + direction.k          for every position t,

where ``h_l`` is tvmech's ``blocks.{l}.hook_resid_pre`` (``h_{k+1}`` = ``blocks.{k}.hook_resid_post``). So a
control vector is a TaskVector with ``positions=("all",)``, ``mode="add"``, and ``point="resid_post"`` at layer
``k`` or, the same site, ``point="resid_pre"`` at layer ``k + 1``. repeng (``ControlVector.directions[k]``,
added to the output of ``model.layers[k]`` at every token) and steering-vectors (``SteeringVector
.layer_activations[k]`` with ``layer_type="decoder_block"``, a forward hook on decoder layer ``k``, every token by
default) use the same numbering. Vectors at one position (e.g. the query), at ``resid_pre`` of layers 0 and 1,
at other points (``attn_out``, ``mlp_out``), with ``mode="replace"`` or one per batch row cannot be written as a
control vector: :func:`to_control_vector` refuses them, naming why.

The GGUF file: ``general.architecture = "controlvector"``, ``controlvector.model_hint`` (the model type, not
read by llama.cpp), ``controlvector.layer_count`` (the number of direction tensors), one ``direction.{k}`` per
layer, plus ``tvmech.task_vector`` (a JSON string: the TaskVector's fields, its fingerprint and the SHA-256 of its
tensor) so a tvmech vector comes back with every field and bit for bit; llama.cpp ignores that key. Other
producers' files carry no fingerprint, so, as :meth:`TaskVector.load` does, they load only with
``strict=False``; a width or a layer that does not fit the model is always refused.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.core.io import atomic_write_bytes
from tvmech.interventions.sites import ALL, every_position

ARCH = "controlvector"
META_KEY = "tvmech.task_vector"
SV_LAYER_TYPES = ("decoder_block",)  # steering-vectors layer types that are a block's output


def cvec_layer(point: str, layer: int) -> int:
    """The ``k`` of ``direction.{k}`` for an all-positions vector added at ``blocks.{layer}.hook_{point}``.

    Raises:
        ValueError: a point other than ``resid_post``/``resid_pre``, or a site llama.cpp cannot steer (``k < 1``).
    """
    if point not in ("resid_post", "resid_pre"):
        raise ValueError(f"a vector at {point!r} cannot be a control vector: llama.cpp adds to a block's output "
                         "(tvmech's resid_post of layer k, or resid_pre of layer k + 1), not inside a block")
    k = layer if point == "resid_post" else layer - 1
    if k < 1:
        what = "the embedding" if k < 0 else "the output of block 0"
        raise ValueError(f"{point} of layer {layer} is {what}: llama.cpp never steers it (direction.0 is refused); "
                         f"use layer {2 if point == 'resid_pre' else 1} or later")
    return k


def control_directions(tv) -> dict[int, Tensor]:
    """``{k: direction.k}`` (float32, ``[d_model]``) of a TaskVector; refuses one that is not a control vector."""
    inj = tv.injection
    if not every_position(inj.positions):
        raise ValueError(f"this vector is added at positions {inj.positions}, but llama.cpp adds a control vector at "
                         f"every token: only positions=({ALL!r},) can be exported (train one with "
                         f"learn_task_vector(..., positions={ALL!r}, point='resid_post'))")
    if inj.mode != "add":
        raise ValueError(f"mode {inj.mode!r} cannot be a control vector: llama.cpp adds it (mode='add')")
    if inj.per_row:
        raise ValueError("a vector per batch row cannot be a control vector (one vector per layer)")
    out = {}
    for i, layer in enumerate(inj.layers):
        out[cvec_layer(inj.point, layer)] = inj.vector_at(i)[0].detach().float().cpu().contiguous()
    return out


def to_control_vector(tv, path: str | Path, *, hint: str = "", overwrite: bool = False) -> Path:
    """Write ``tv`` as llama.cpp's control-vector GGUF (see the module docstring).

    Args:
        tv: a TaskVector at every position, added at ``resid_post`` (layer >= 1) or ``resid_pre`` (layer >= 2).
        path: the ``.gguf`` file to write (atomically).
        hint: ``controlvector.model_hint`` (cosmetic: llama.cpp does not read it; default: the TaskVector's model
            name).
        overwrite: replace an existing file.

    Returns:
        The path written.
    """
    import gguf

    from tvmech.interventions.task_vector import tensor_sha256

    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    directions = control_directions(tv)
    vectors = tv.vectors.detach().float().cpu().contiguous()  # GGUF holds float32 (tvmech's vectors are)
    meta = {**{k: v for k, v in asdict(tv).items() if k != "vectors"}, "shape": list(vectors.shape),
            "checksum": tensor_sha256(vectors)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp) / "cvec.gguf"
        writer = gguf.GGUFWriter(str(tmp_path), ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint or tv.model_name or "unknown")
        writer.add_uint32(f"{ARCH}.layer_count", len(directions))
        writer.add_string(META_KEY, json.dumps(meta, sort_keys=True))
        for k in sorted(directions):
            writer.add_tensor(f"direction.{k}", directions[k].numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        atomic_write_bytes(path, tmp_path.read_bytes())
    return path


def read_gguf(path: Path) -> tuple[dict[int, Tensor], str, dict | None]:
    """``(directions, model_hint, tvmech metadata or None)`` of a control-vector GGUF, checked as llama.cpp's
    loader checks it (``direction.{k}`` names, 1-D float32 tensors of one width)."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf raises ValueError/struct errors for files that are not GGUF
        raise ValueError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from e

    def text(key: str) -> str | None:
        f = reader.get_field(key)
        return None if f is None else bytes(f.parts[-1]).decode("utf-8")

    arch = text("general.architecture")
    if arch is not None and arch != ARCH:
        raise ValueError(f"{path} is a GGUF of architecture {arch!r}, not a control vector ({ARCH!r}): a model file?")
    directions: dict[int, Tensor] = {}
    for t in reader.tensors:
        head, _, idx = t.name.partition(".")
        if head != "direction" or not idx.isdigit():
            raise ValueError(f"{path}: tensor {t.name!r} is not named direction.<layer>")
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise ValueError(f"{path}: {t.name} is {t.tensor_type.name} of shape {list(t.shape)}; llama.cpp needs a "
                             "1-D F32 tensor")
        directions[int(idx)] = torch.from_numpy(np.array(t.data, dtype=np.float32, copy=True))
    meta = text(META_KEY)
    return directions, text(f"{ARCH}.model_hint") or "", None if meta is None else json.loads(meta)


def read_layer_dict(source: Any, what: str) -> dict[int, Tensor]:
    """``{layer: vector}`` from a mapping of integer (or integer-string) keys to 1-D tensors or arrays."""
    if not isinstance(source, dict) or not source:
        raise ValueError(f"{what} holds {type(source).__name__}, not a non-empty dict of layer -> vector")
    out = {}
    for k, v in source.items():
        if not (isinstance(k, int) or (isinstance(k, str) and k.isdigit())) or isinstance(k, bool):
            raise ValueError(f"{what}: key {k!r} is not a layer number")
        v = torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v).detach().cpu()
        if v.ndim != 1 or not v.is_floating_point():
            raise ValueError(f"{what}: layer {k} holds a {v.dtype} tensor of shape {list(v.shape)}, not one vector")
        out[int(k)] = v.float()
    return out


def read_source(source: Any) -> tuple[dict[int, Tensor], str, dict | None]:
    """``(directions, hint, tvmech metadata)`` of a file (``.gguf``; ``.safetensors`` or ``.pt``/``.pth`` holding
    ``{layer: vector}``), a repeng ``ControlVector`` or a steering-vectors ``SteeringVector`` (in memory)."""
    if hasattr(source, "layer_activations"):  # steering-vectors' SteeringVector
        kind = getattr(source, "layer_type", "decoder_block")
        if kind not in SV_LAYER_TYPES:
            raise ValueError(f"a steering vector of layer_type {kind!r} is not added to a block's output; only "
                             f"{SV_LAYER_TYPES} can be imported")
        return read_layer_dict(dict(source.layer_activations), "the steering vector"), "", None
    if hasattr(source, "directions"):  # repeng's ControlVector
        hint = str(getattr(source, "model_type", ""))
        return read_layer_dict(dict(source.directions), "the control vector"), hint, None
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"control vector {path}: no such file")
    if path.suffix == ".gguf":
        return read_gguf(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            kind = (f.metadata() or {}).get("layer_type", "decoder_block")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if kind not in SV_LAYER_TYPES:
            raise ValueError(f"{path}: layer_type {kind!r} is not a block's output; only {SV_LAYER_TYPES} import")
        return read_layer_dict(tensors, str(path)), "", None
    if path.suffix in (".pt", ".pth"):
        try:  # tensors and plain containers only: never unpickles arbitrary objects
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a plain {{layer: tensor}} dict ({type(e).__name__}); a pickled "
                             "SteeringVector object is not loaded (unpickling runs code): save "
                             "sv.layer_activations instead, or pass the SteeringVector object itself") from e
        return read_layer_dict(obj, str(path)), "", None
    raise ValueError(f"{path}: unknown control-vector file type {path.suffix!r}; valid: .gguf (llama.cpp, repeng), "
                     ".safetensors or .pt/.pth holding {layer: vector} (steering-vectors' layer_activations)")


def from_control_vector(source: Any, model, *, strict: bool = True, task: str = "", method: str = ""):
    """A TaskVector (``positions=("all",)``, ``point="resid_post"``, layers ``k``) from a control vector.

    Args:
        source: a file (see :func:`read_source`) or a repeng/steering-vectors object.
        model: the model the vector is for: its width and layers are checked, and a tvmech file's fingerprint.
        strict: ``False`` accepts a file without a tvmech fingerprint (every file tvmech did not write).
        task, method: recorded on an imported (non-tvmech) vector.

    Returns:
        The TaskVector; a file written by :func:`to_control_vector` comes back with all of its fields.

    Raises:
        ValueError: a width or layer that does not fit ``model``; a tvmech file whose tensors do not match its
            checksum; no fingerprint (with ``strict``); a fingerprint of other weights.
    """
    from tvmech.interventions.task_vector import TaskVector, tensor_sha256

    ad = adapt(model)
    directions, hint, meta = read_source(source)
    if not directions:
        raise ValueError(f"{source} holds no direction tensors")
    widths = {int(v.numel()) for v in directions.values()}
    if widths != {ad.d_model}:
        raise ValueError(f"{source} holds vectors of width {sorted(widths)}; {ad.name} has d_model {ad.d_model}")
    bad = [k for k in directions if not 0 <= k < ad.n_layers]
    if bad:
        raise ValueError(f"{source} steers block(s) {sorted(bad)}; {ad.name} has blocks 0..{ad.n_layers - 1}")
    if meta is not None:
        tv = _restore(directions, meta, source, TaskVector, tensor_sha256)
    else:
        if strict:
            raise ValueError(f"{source} carries no tvmech fingerprint, so it cannot be checked against the model's "
                             "weights (only its width and layers); pass strict=False to import it")
        layers = sorted(directions)
        tv = TaskVector(torch.stack([directions[k] for k in layers])[:, None], tuple(layers), (ALL,),
                        point="resid_post", model_name=hint, d_model=ad.d_model, task=task, method=method)
    if strict and not tv.fingerprint:
        raise ValueError(f"{source} has no fingerprint, so it cannot be checked against a model; pass strict=False "
                         "to import it anyway")
    tv.check_model(ad)
    tv.injection.check(ad)
    return tv


def llama_cpp_buffer(path: str | Path, n_layers: int, strength: float = 1.0) -> np.ndarray:
    """The float32 buffer llama.cpp's C API takes (``llama_apply_adapter_cvec``/``llama_set_adapter_cvec``): the
    directions of blocks ``1..n_layers-1`` back to back, block 1 first, zeros where the file has none, each times
    ``strength`` (what ``common_control_vector_load`` builds from a file; llama-cpp-python has no loader)."""
    directions, _, _ = read_gguf(Path(path))
    if not directions:
        raise ValueError(f"{path} holds no direction tensors")
    if min(directions) < 1 or max(directions) >= n_layers:
        raise ValueError(f"{path} steers blocks {sorted(directions)}; llama.cpp steers blocks 1..{n_layers - 1}")
    d = next(iter(directions.values())).numel()
    buf = np.zeros((n_layers - 1, d), dtype=np.float32)
    for k, v in directions.items():
        buf[k - 1] = v.numpy() * np.float32(strength)
    return buf.reshape(-1)


def apply_to_llama(llm, path: str | Path | None, strength: float = 1.0) -> None:
    """Set the control vector of a llama-cpp-python ``Llama`` to the file at ``path`` (``None``: clear it), on every
    block it steers; the equivalent of ``llama-cli --control-vector-scaled path strength``.

    Raises:
        RuntimeError: llama.cpp refused it (e.g. a width other than the model's).
    """
    import ctypes

    import llama_cpp

    fn = getattr(llama_cpp, "llama_set_adapter_cvec", None) or llama_cpp.llama_apply_adapter_cvec
    ctx, n_layers, n_embd = llm._ctx.ctx, llama_cpp.llama_model_n_layer(llm._model.model), llm.n_embd()
    if path is None:
        rc = fn(ctx, None, 0, n_embd, -1, -1)
    else:
        buf = llama_cpp_buffer(path, n_layers, strength)
        llm._cvec = buf  # llama.cpp copies it, but keep it alive for the call's duration in any case
        rc = fn(ctx, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), buf.size, n_embd, 1, n_layers)
    if rc != 0:
        raise RuntimeError(f"llama.cpp refused the control vector {path} (code {rc}); the model has n_embd {n_embd}")


def _restore(directions: dict[int, Tensor], meta: dict, source: Any, cls, sha):
    """The TaskVector a tvmech-written GGUF came from, checked against its recorded checksum."""
    meta = dict(meta)
    checksum, shape = meta.pop("checksum", None), meta.pop("shape", None)
    ks = [cvec_layer(meta.get("point", "resid_pre"), layer) for layer in meta.get("layers", ())]
    if sorted(ks) != sorted(directions):
        raise ValueError(f"{source}: its tvmech record names blocks {sorted(ks)}, its tensors {sorted(directions)} "
                         "(edited after export?)")
    vectors = torch.stack([directions[k] for k in ks])[:, None]
    if shape is not None and list(shape[:2]) == [1, 1]:
        vectors = vectors[:1]
    if checksum != sha(vectors):
        raise ValueError(f"the direction tensors of {source} do not match the checksum its tvmech record holds: the "
                         "vectors were edited after export")
    meta["layers"], meta["positions"] = tuple(meta["layers"]), tuple(meta.get("positions", (ALL,)))
    return cls(vectors=vectors, **meta)


__all__ = ["ARCH", "cvec_layer", "control_directions", "to_control_vector", "read_gguf", "read_source",
           "from_control_vector", "llama_cpp_buffer", "apply_to_llama"]
