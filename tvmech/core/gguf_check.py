"""Checking a GGUF file before it is dequantized, and a dequantized cache entry before it is loaded.

A GGUF file is ``magic "GGUF" | version (u32) | n_tensors (u64) | n_kv (u64) | n_kv key/value pairs | n_tensors
tensor records (name, n_dims, dims, type, offset) | padding to the alignment | tensor data``. Tensor ``i`` occupies
``[data_start + offset_i, data_start + offset_i + nbytes_i)`` with ``nbytes_i = n_elements_i / block_size *
type_size`` (``gguf.constants.GGML_QUANT_SIZES``), so a complete file is at least as long as the largest such end.
:func:`gguf_problem` reads only the header (no tensor data) and names the first thing that does not hold: a
truncated or overwritten file is caught here instead of as a numpy reshape error deep in the dequantization.

A safetensors file is ``header length (u64) | JSON header | data``, and its header's largest ``data_offsets`` end
must reach the end of the file exactly: :func:`safetensors_problem` checks that.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

SUPPORTED_VERSIONS = (2, 3)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Short(Exception):
    """The file ended inside the header."""


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise _Short
    return data


def _unpack(f: BinaryIO, fmt: str) -> int | float:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    return _read(f, int(_unpack(f, "<Q"))).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int) -> object:
    if kind in _SCALARS:
        return _unpack(f, _SCALARS[kind])
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = int(_unpack(f, "<I")), int(_unpack(f, "<Q"))
        if item in _SCALARS:  # skipped, not decoded: only its length matters here
            _read(f, count * struct.calcsize(_SCALARS[item]))
        else:
            for _ in range(count):
                _value(f, item)
        return None
    raise ValueError(f"unknown metadata value type {kind}")


def gguf_problem(path: str | Path) -> str | None:
    """What is wrong with a GGUF file's header and size, or ``None`` when the header reads and every tensor's
    data lies inside the file.

    Args:
        path: the file.

    Returns:
        ``None``, or a short description (bad magic, unsupported version, a header cut short, a tensor of an
        unknown type, or the file's size against the size its tensor table needs).
    """
    import gguf.constants as gc

    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        try:
            magic = _read(f, 4)
            if magic != b"GGUF":
                return f"it does not start with the GGUF magic bytes (found {magic!r}): not a GGUF file"
            version = int(_unpack(f, "<I"))
            if version not in SUPPORTED_VERSIONS:
                return f"GGUF version {version} is not supported (readable: {SUPPORTED_VERSIONS})"
            n_tensors, n_kv = int(_unpack(f, "<Q")), int(_unpack(f, "<Q"))
            alignment = gc.GGUF_DEFAULT_ALIGNMENT
            for _ in range(n_kv):
                key, kind = _string(f), int(_unpack(f, "<I"))
                value = _value(f, kind)
                if key == "general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            need, last = 0, ""
            for _ in range(n_tensors):
                name = _string(f)
                dims = [int(_unpack(f, "<Q")) for _ in range(int(_unpack(f, "<I")))]
                kind, offset = int(_unpack(f, "<I")), int(_unpack(f, "<Q"))
                try:
                    block, type_size = gc.GGML_QUANT_SIZES[gc.GGMLQuantizationType(kind)]
                except (ValueError, KeyError):
                    return f"tensor {name!r} has an unknown type {kind}"
                n = 1
                for d in dims:
                    n *= d
                if offset + n // block * type_size > need:
                    need, last = offset + n // block * type_size, name
            start = -(-f.tell() // alignment) * alignment
        except _Short:
            return f"the file ends at byte {size}, inside its header: it is truncated"
        except (ValueError, struct.error) as e:
            return f"its header does not parse ({e})"
    if start + need > size:
        return (f"it is {size} bytes long but its tensor table needs {start + need} (tensor {last!r} ends there): "
                "it is truncated")
    return None


def safetensors_problem(path: str | Path) -> str | None:
    """What is wrong with a safetensors file's header and size, or ``None`` when its tensors exactly fill it.

    Args:
        path: the file.

    Returns:
        ``None``, or a short description (missing, header unreadable, or size against the header's offsets).
    """
    path = Path(path)
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            n = int(_unpack(f, "<Q"))
            header = json.loads(_read(f, n))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except (_Short, ValueError, KeyError, TypeError, IndexError):
        return f"{path.name} has no readable safetensors header"
    if 8 + n + end != size:
        return f"{path.name} is {size} bytes long but its header describes {8 + n + end}"
    return None


__all__ = ["SUPPORTED_VERSIONS", "gguf_problem", "safetensors_problem"]
