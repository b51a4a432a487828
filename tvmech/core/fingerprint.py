"""The weight digest that saved vectors are fingerprinted with, computed where the weights are.

Sketch. Each tensor ``t`` is read as float32 values (so a bfloat16 model and its exact float32 copy agree, as
before) and its bytes, as signed 8-bit integers, are cut into rows of ``K = 4096`` (the last row zero-padded;
the shape is hashed beside it, so the padding is unambiguous). A level maps the rows ``x_r`` to ``x_r R``,
``R`` a fixed ``K × 16`` matrix of int8 values drawn from SHA-256 in counter mode (no RNG library involved);
the products are exact int32 (``|Σ| ≤ K·128·128 = 2^26``), so the result does not depend on the device, the
summation order or how the tensor is split. Its int32 bytes are the next level's input (64× fewer bytes), with
a fresh ``R`` each level, until at most ``K·16`` bytes are left; those are hashed with SHA-256 on the host,
with the tensor's name and shape, in key order. The GPU reads each weight once (two int8 matmuls per chunk);
the host sees kilobytes per tensor.

Why other weights are refused. Two different inputs to a level differ in some row by ``d ≠ 0`` (entries in
``-255..255``). For each column ``j``, fixing every entry of ``R`` but one ``R_ij`` with ``d_i ≠ 0``, at most one
of its 256 values makes ``d · R_j = 0``; the 16 columns are independent, so the rows collide with probability
``≤ 2^-128`` over ``R``. By the union bound over the ``≤ 6`` levels, two fixed, different sets of weights share
a digest with probability ``≤ 6 · 2^-128`` (plus a SHA-256 collision). ``R`` is public and fixed: this guards
against mistakes (another checkpoint, a fine-tune, a quantized copy), not against weights crafted to collide,
which the host SHA-256 of every byte (:func:`legacy_weights_sha256`, the format before) resisted.

Same weights, another name or path: neither enters the digest (only parameter names inside the model, shapes
and values), so a model loaded by another path, or split by ``device_map`` (offloaded tensors are read back
through accelerate), gives the same digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor

K = 4096  # bytes per row of a level
COLS = 16  # columns of R: a level shrinks its input K / (4 · COLS) = 64 times
CHUNK = 1 << 28  # bytes of float32 values per matmul (bounds the temporary memory: ~2 × 256 MiB)
SEED = b"tvmech.weights.sketch/1"
_MATRICES: dict[tuple[int, str], Tensor] = {}


def sketch_matrix(level: int, device: torch.device) -> Tensor:
    """The ``[K, COLS]`` int8 matrix ``R`` of ``level``: bytes of SHA-256(SEED | level | counter)."""
    key = (level, str(device))
    if key not in _MATRICES:
        n = K * COLS
        data = b"".join(hashlib.sha256(SEED + f"|{level}|{i}".encode()).digest() for i in range(-(-n // 32)))[:n]
        R = torch.frombuffer(bytearray(data), dtype=torch.int8).reshape(K, COLS)
        _MATRICES[key] = R.to(device)
    return _MATRICES[key]


def exact_rows_times(x: Tensor, R: Tensor) -> Tensor:
    """``x @ R`` for int8 ``x [m, K]`` and ``R [K, COLS]``, exactly, as int32: ``torch._int_mm`` where the
    device has it, else float64 (exact too: every partial sum is an integer below ``2^26``)."""
    if x.shape[0] > 16:
        try:
            return torch._int_mm(x, R)
        except (RuntimeError, NotImplementedError):
            pass
    Rd = R.double()
    return torch.cat([(x[s : s + 4096].double() @ Rd).to(torch.int32) for s in range(0, x.shape[0], 4096)])


def _level(data: Tensor, level: int) -> Tensor:
    """One level on the flat int8 ``data``: rows of ``K`` (zero-padded) times ``R``, as flat int8 bytes."""
    pad = -data.numel() % K
    if pad:
        data = torch.cat([data, data.new_zeros(pad)])
    rows = data.view(-1, K)
    R = sketch_matrix(level, data.device)
    step = CHUNK // K
    out = [exact_rows_times(rows[s : s + step], R) for s in range(0, rows.shape[0], step)]
    return torch.cat(out).reshape(-1).view(torch.int8)


def tensor_sketch(t: Tensor) -> bytes:
    """The digest bytes of one tensor (see the module docstring), computed on ``t``'s device."""
    flat = t.detach().reshape(-1)
    step = CHUNK // 4
    parts = [_level(flat[s : s + step].to(torch.float32).contiguous().view(torch.int8), 0)
             for s in range(0, flat.numel(), step)]  # level 0 on float32 chunks; rows never straddle two chunks
    data = torch.cat(parts) if parts else flat.new_zeros(0, dtype=torch.int8)
    level = 1
    while data.numel() > K * COLS:
        data = _level(data, level)
        level += 1
    return data.cpu().numpy().tobytes()


def named_tensors(module: torch.nn.Module) -> Iterator[tuple[str, Tensor]]:
    """The state dict in key order, offloaded (meta) tensors read back through their accelerate hook."""
    for name, t in sorted(module.state_dict().items()):
        yield name, (onloaded(module, name) if t.device.type == "meta" else t)


def weights_digest(module: torch.nn.Module) -> str:
    """``"sketch1:<hex>"``: SHA-256 over each tensor's name, shape and :func:`tensor_sketch`, in key order."""
    h = hashlib.sha256()
    for name, t in named_tensors(module):
        h.update(f"{name}|{tuple(t.shape)}|".encode())
        h.update(tensor_sketch(t))
    return "sketch1:" + h.hexdigest()


def legacy_weights_sha256(module: torch.nn.Module) -> str:
    """The digest before the sketch: SHA-256 of names, shapes and float32 bytes of every tensor, on the host
    (reads every byte on the CPU: minutes for billions of weights; kept to check vectors saved with it)."""
    h = hashlib.sha256()
    for name, t in named_tensors(module):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}|{tuple(t.shape)}|".encode())
        h.update(t.numpy())  # (a contiguous buffer: no copy)
    return h.hexdigest()


def onloaded(root: torch.nn.Module, name: str) -> Tensor:
    """The value of the offloaded tensor ``name`` of ``root``, materialised through its module's accelerate hook
    (on the hook's execution device: the sketch is the same on every device)."""
    from accelerate.utils import align_module_device

    owner_name, _, leaf = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    with align_module_device(owner):
        return getattr(owner, leaf).detach().clone()


def weights_version(module: torch.nn.Module) -> tuple:
    """What the cached digest is keyed by: each tensor's identity, storage and version counter (bumped by
    every in-place change through torch, optimiser steps and ``load_state_dict`` included; writes through
    ``.data`` or NumPy views are not seen), whatever names the module tree gives them (the bridge's components
    wrap the Hugging Face modules; :meth:`~tvmech.core.native.NativeView.native` takes them out). ``None`` where a
    tensor has no counter (inference mode)."""
    key = {}
    for t in list(module.parameters()) + list(module.buffers()):
        try:
            version = t._version
        except RuntimeError:  # inference tensors keep no version counter
            version = None
        try:
            ptr = t.data_ptr() if t.device.type != "meta" else 0
        except RuntimeError:  # offloaded by accelerate: a tensor without storage (its weights live elsewhere)
            ptr = 0
        key[id(t)] = (id(t), ptr, version)
    return tuple(sorted(key.values()))


__all__ = ["K", "COLS", "sketch_matrix", "exact_rows_times", "tensor_sketch", "weights_digest",
           "legacy_weights_sha256", "weights_version", "onloaded", "named_tensors"]
