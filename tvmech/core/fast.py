"""The fast-path switch: which way the hot loops run a model.

On a ``TransformerBridge`` every submodule call passes through TransformerLens's hook dispatch, which on a
GPU costs more than the arithmetic of a small model. The **fast path** calls the Hugging Face decoder layers
themselves (the bridge's components taken out, :meth:`tvmech.core.adapter.Adapter.native`) and attaches an
intervention as plain PyTorch hooks on those modules (:func:`tvmech.interventions.engine.attached`); the
**hooked path** (TransformerLens hooks on the bridge) stays the reference, and the way for everything the
fast path does not cover: a model with TransformerLens hooks attached (a capture, a user's own hook), points
that have no Hugging Face module (``attn_in``, ``q_in`` ...), ``HookedTransformer``. Both give the same
numbers (tested to 1e-5 in float32 on every architecture of the test matrix).

The switch is on by default; ``TVMECH_FAST_PATH=0`` in the environment turns it off for a process, and
``with tvmech.fast_path(False): ...`` for a block (a reference run). ``cuda_graphs`` (default on) lets the
training loop capture its step in a CUDA graph on CUDA devices (see :mod:`tvmech.core.optim`).

The fast path runs the very modules the bridge runs, with the same eager attention, so its numbers are
bit-identical to the hooked path's (tested): switching paths (a hook attached for one pass and not for the
next) adds no numerical noise to a difference of two runs. ``sdpa=True`` (or ``TVMECH_SDPA=1``) swaps in
PyTorch's fused attention on the fast path, where no pattern is read: about 1e-7 relative difference, and
not for soft-capped attention (Gemma-2); off by default (see ``benchmarks/RESULTS.md`` for what it buys).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class _Switch:
    enabled: bool = os.environ.get("TVMECH_FAST_PATH", "1").strip().lower() not in ("0", "false", "no", "off")
    cuda_graphs: bool = os.environ.get("TVMECH_CUDA_GRAPHS", "1").strip().lower() not in ("0", "false", "no", "off")
    sdpa: bool = os.environ.get("TVMECH_SDPA", "0").strip().lower() in ("1", "true", "yes", "on")


SWITCH = _Switch()


def fast_path_enabled() -> bool:
    """Whether the hot loops may take the fast path (see the module docstring)."""
    return SWITCH.enabled


def cuda_graphs_enabled() -> bool:
    """Whether training steps on CUDA may be captured in CUDA graphs (only with the fast path on)."""
    return SWITCH.enabled and SWITCH.cuda_graphs


def sdpa_enabled() -> bool:
    """Whether the fast path runs PyTorch's fused attention instead of the model's eager attention."""
    return SWITCH.enabled and SWITCH.sdpa


def set_fast_path(enabled: bool, *, cuda_graphs: bool | None = None, sdpa: bool | None = None) -> None:
    """Turn the fast path (and, optionally, CUDA-graph capture and SDPA attention) on or off for the process."""
    for name, v in (("enabled", enabled), ("cuda_graphs", cuda_graphs), ("sdpa", sdpa)):
        if not (isinstance(v, bool) or (v is None and name != "enabled")):
            raise TypeError(f"set_fast_path: {name} must be True or False, got {v!r}")
    SWITCH.enabled = enabled
    if cuda_graphs is not None:
        SWITCH.cuda_graphs = cuda_graphs
    if sdpa is not None:
        SWITCH.sdpa = sdpa


@contextlib.contextmanager
def fast_path(enabled: bool = True, *, cuda_graphs: bool | None = None, sdpa: bool | None = None
              ) -> Iterator[None]:
    """Context manager: the fast path on (``True``) or off (``False``: the hooked reference path) inside the
    block; ``cuda_graphs`` and ``sdpa`` likewise. The previous settings come back on exit."""
    before = (SWITCH.enabled, SWITCH.cuda_graphs, SWITCH.sdpa)
    set_fast_path(enabled, cuda_graphs=cuda_graphs, sdpa=sdpa)
    try:
        yield
    finally:
        SWITCH.enabled, SWITCH.cuda_graphs, SWITCH.sdpa = before


__all__ = ["fast_path", "set_fast_path", "fast_path_enabled", "cuda_graphs_enabled", "sdpa_enabled"]
