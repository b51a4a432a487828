"""Calling Hugging Face decoder layers directly: the arguments the model passes them, and the keys and values
of a frozen prefix.

:func:`record_layer_calls` runs the Hugging Face forward once with every decoder layer replaced by a recorder,
so each layer's extra arguments (masks, rotary embeddings, position ids, cache positions) are exactly what
the model itself computes, for any architecture; :func:`batched` widens them from one row to a batch.

Frozen prefix. When a pass changes the residual stream only at positions ``>= cut`` (a task vector at the
query), positions ``< cut`` of every block are those of the clean run (causal attention), and a block needs
from them only their keys and values. :class:`PrefixKV` holds those for blocks ``start..L-1`` (computed once,
without gradients, by running the blocks on the first ``cut`` positions with a collecting cache); the pass then
runs positions ``cut..`` alone, each attention layer reading ``[prefix keys | new keys]`` through a cache object
whose ``update`` concatenates (:func:`prefix_cache`). Same numbers to float rounding, ``cut / width`` less work.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class _Recorded(Exception):
    """Raised by the last recorder: everything after the decoder layers is skipped."""


def record_layer_calls(model: Any, tokens: Tensor, cache: Any = None) -> list[tuple[tuple, dict[str, Any]]]:
    """``(args, kwargs)`` of every decoder-layer call in a forward pass of ``tokens`` through the
    Hugging Face model, with the layers themselves skipped (each passes its input on unchanged; the
    last stops the pass): the embedding and the per-layer masks and rotary embeddings, nothing else.
    With ``cache`` (a Hugging Face cache already holding keys and values of earlier positions), the calls of
    a pass continuing after them: masks, positions and rotary embeddings of the new positions."""
    blocks = list(model.blocks)
    calls: list[Any] = [None] * len(blocks)

    def recorder(i: int) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if not args:
                args, kwargs = (kwargs.pop("hidden_states"),), kwargs
            calls[i] = (args, kwargs)
            if i == len(blocks) - 1:
                raise _Recorded
            return args[0]
        return forward

    # the layers' own hooks (an intervention attached on the fast path) stay out of the recording
    hooked = [m for b in blocks for m in (b, getattr(b, "original_component", None)) if m is not None]
    saved = [(m._forward_pre_hooks, m._forward_hooks) for m in hooked]
    for i, block in enumerate(blocks):  # an instance attribute, set past the bridge's attribute passthrough
        object.__setattr__(block, "forward", recorder(i))
    for m in hooked:
        m._forward_pre_hooks, m._forward_hooks = type(m._forward_pre_hooks)(), type(m._forward_hooks)()
    try:
        if cache is None:
            model.original_model(input_ids=tokens, use_cache=False)
        else:
            hf = model.original_model
            name = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
            hf(input_ids=tokens, use_cache=True, **{name: cache})
    except _Recorded:
        pass
    finally:
        for block in blocks:
            block.__dict__.pop("forward", None)
        for m, (pre, post) in zip(hooked, saved):
            m._forward_pre_hooks, m._forward_hooks = pre, post
    if any(c is None for c in calls):
        raise RuntimeError("the Hugging Face forward did not call every decoder layer once; "
                           "this architecture's layer loop is not supported by the suffix path")
    return calls


def batched(value: Any, batch: int) -> Any:
    """Expand tensors recorded with batch size 1 (masks, rotary tables, position ids) to ``batch`` rows."""
    if isinstance(value, Tensor):
        return value.expand(batch, *value.shape[1:]) if value.ndim >= 2 and value.shape[0] == 1 else value
    if isinstance(value, tuple):
        return tuple(batched(v, batch) for v in value)
    if isinstance(value, dict):
        return {k: batched(v, batch) for k, v in value.items()}
    return value


def _cache_base() -> type:
    from transformers.cache_utils import DynamicCache
    return DynamicCache


def swap_cache(args: tuple, kwargs: dict[str, Any], cache: Any) -> tuple[tuple, dict[str, Any]]:
    """A recorded layer call with its cache argument (keyword ``cache`` / ``past_key_values``, or positional, by
    architecture and version) replaced by ``cache``."""
    base = _cache_base()
    found = [k for k, v in kwargs.items() if isinstance(v, base)]
    at = [i for i, v in enumerate(args) if isinstance(v, base)]
    if not found and not at:
        raise RuntimeError("this architecture's decoder layers received no cache argument: the frozen-prefix path "
                           "cannot pass them the prefix's keys and values")
    return (tuple(cache if i in at else v for i, v in enumerate(args)),
            {k: cache if k in found else v for k, v in kwargs.items()})


def filled_cache(n_layers: int, n_kv: int, d_head: int, length: int, device: torch.device, dtype: torch.dtype) -> Any:
    """A Hugging Face ``DynamicCache`` (full-attention layers) holding ``length`` zero positions per layer: what
    :func:`record_layer_calls` needs to record the calls of positions after them."""
    cache = _cache_base()()
    for layer in range(n_layers):
        z = torch.zeros(1, n_kv, length, d_head, device=device, dtype=dtype)
        cache.update(z, z, layer)
    return cache


class PrefixKV:
    """Keys and values (``[rows, n_kv, cut, d_head]`` per layer, as the attention stores them: after rotary
    embeddings) of the first ``cut`` positions of a clean run, at blocks ``start..``."""

    def __init__(self, keys: dict[int, Tensor], values: dict[int, Tensor], cut: int, start: int):
        self.keys, self.values, self.cut, self.start = keys, values, cut, start

    def rows(self, idx: Tensor) -> PrefixKV:
        """The prefix of rows ``idx``."""
        return PrefixKV({l: k[idx] for l, k in self.keys.items()}, {l: v[idx] for l, v in self.values.items()},
                        self.cut, self.start)


def collecting_cache() -> Any:
    """A cache object that keeps what each layer's attention hands it (the prefix run)."""

    class Collect(_cache_base()):
        def __init__(self) -> None:
            super().__init__()
            self.kv: dict[int, tuple[Tensor, Tensor]] = {}

        def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any):
            self.kv[layer_idx] = (key_states.detach(), value_states.detach())
            return key_states, value_states

    return Collect()


def prefix_cache(prefix: PrefixKV) -> Any:
    """A cache object whose ``update`` returns ``[prefix | new]`` keys and values (the prefix repeated when the
    batch holds several copies of its rows); nothing is stored, so one object serves any number of passes."""

    class Prepend(_cache_base()):
        def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any):
            pk, pv = prefix.keys[layer_idx], prefix.values[layer_idx]
            reps = key_states.shape[0] // pk.shape[0]
            if reps != 1:
                pk, pv = pk.repeat(reps, 1, 1, 1), pv.repeat(reps, 1, 1, 1)
            return (torch.cat((pk.to(key_states.dtype), key_states), -2),
                    torch.cat((pv.to(value_states.dtype), value_states), -2))

    return Prepend()


__all__ = ["record_layer_calls", "batched", "swap_cache", "filled_cache", "PrefixKV", "collecting_cache",
           "prefix_cache"]
