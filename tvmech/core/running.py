"""Running a slice of a model's blocks on a residual stream: the suffix path every algorithm of tvmech runs.

:meth:`BlockRunner.run_blocks` runs blocks ``start .. stop-1`` on the input of block ``start``. A
``HookedTransformer`` does this natively (``start_at_layer``); the bridge's own ``start_at_layer`` still executes
the blocks below the start, so on a bridge the blocks are called one by one, each with the arguments the Hugging
Face model itself would pass it (:meth:`BlockRunner.layer_kwargs`, recorded from the model's own forward). On the
hooked path the bridge's blocks run (their TransformerLens hook points fire as in a full forward pass); on the fast
path (:meth:`tvmech.core.native.NativeView.fast`) the Hugging Face layers themselves. A frozen prefix
(:meth:`BlockRunner.prefix_kv`, :mod:`tvmech.core.layers`) lets a pass run only the positions after it.
``BlockRunner`` is a part of :class:`tvmech.core.adapter.Adapter` (``self.model``: the wrapped model).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.layers import (
    PrefixKV,
    batched,
    collecting_cache,
    filled_cache,
    prefix_cache,
    record_layer_calls,
    swap_cache,
)


class BlockRunner:
    """Running blocks of :class:`~tvmech.core.adapter.Adapter` (see the module docstring)."""

    def residual(self, tokens: Int[Tensor, "batch pos"], layer: int) -> Float[Tensor, "batch pos d_model"]:
        """Residual stream entering block ``layer`` (``layer == n_layers``: the final stream)."""
        layer = self.check_layer(layer, allow_final=True)
        tokens = tokens.to(self.device)
        if not self.is_bridge:
            return self.model(tokens, stop_at_layer=layer)
        return self.run_blocks(self.embed(tokens), 0, layer)

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The input of block 0, exactly as the Hugging Face model computes it (token embeddings, learned
        position embeddings, embedding scales: whatever the architecture does before its first layer).

        Block 0's hooks do not fire here, so that ``run_blocks(embed(t), 0, l)`` fires each hook once.
        """
        tokens = tokens.to(self.device)
        if not self.is_bridge:
            return self.model(tokens, stop_at_layer=0)
        args, _ = record_layer_calls(self.model, tokens)[0]
        return args[0]

    def layer_kwargs(self, layer: int, seq_len: int, past: int | None = None) -> tuple[tuple, dict[str, Any]]:
        """The arguments (besides the hidden states) that the Hugging Face model passes to decoder layer
        ``layer`` for an unpadded sequence of ``seq_len`` tokens: causal / sliding-window masks, rotary
        embeddings, position ids. Recorded from the model's own forward, with batch size 1, and kept per
        (length, past, device, dtype), so architectures need no hand-built inputs. With ``past`` (an int),
        the call of ``seq_len`` new positions after ``past`` cached ones, its cache argument included (a
        placeholder that :meth:`run_blocks` replaces)."""
        key = (seq_len, past, str(self.device), str(self.dtype))
        cache = self.model.__dict__.setdefault("_tvmech_layer_kwargs", {})
        # what a CUDA graph captured must outlive it: entries read during a capture are never evicted
        pinned = self.model.__dict__.setdefault("_tvmech_layer_kwargs_pinned", {})
        if key in pinned:
            return pinned[key][layer]
        if key not in cache:
            if len(cache) >= 64:
                cache.pop(next(iter(cache)))
            tokens = torch.zeros(1, seq_len, dtype=torch.long, device=self.device)
            kv = None if past is None else filled_cache(self.n_layers, self.n_kv_heads, self.d_head, past,
                                                        self.device, self.dtype)
            with torch.no_grad():
                cache[key] = [(args[1:], kw) for args, kw in record_layer_calls(self.model, tokens, kv)]
        if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            pinned[key] = cache[key]
        return cache[key][layer]

    def run_blocks(
        self, resid: Float[Tensor, "batch pos d_model"], start: int, stop: int | None = None, *,
        prefix: PrefixKV | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Run blocks ``start .. stop-1`` on ``resid`` (the input of block ``start``).

        Hook points inside those blocks fire as in a full forward pass. Only the blocks in the
        slice are computed, which is what makes suffix-only training cheap. Each block gets the
        arguments the Hugging Face model itself would pass it (:meth:`layer_kwargs`). With ``prefix``
        (:meth:`prefix_kv`; fast path only), ``resid`` holds positions ``prefix.cut..`` alone, and each
        attention reads the prefix's keys and values for the positions before them.
        """
        stop = self.n_layers if stop is None else stop
        start, stop = self.check_layer(start, allow_final=True), self.check_layer(stop, allow_final=True)
        if start >= stop:
            return resid
        if not self.fast():
            if prefix is not None:
                raise RuntimeError("a frozen prefix needs the fast path (a bridge, the switch on, no "
                                   "TransformerLens hooks attached)")
            if not self.is_bridge:
                return self.model(resid, start_at_layer=start, stop_at_layer=stop)
            return self._run_layers(resid, start, stop, None)
        with self.native(), self.sdpa():
            return self._run_layers(resid, start, stop, prefix)

    def run_block(self, resid: Float[Tensor, "batch pos d_model"], layer: int, *, prefix: PrefixKV | None = None
                  ) -> Float[Tensor, "batch pos d_model"]:
        """Block ``layer`` alone on ``resid`` (its input); the fast path when :meth:`fast` allows it."""
        return self.run_blocks(resid, layer, layer + 1, prefix=prefix)

    def _run_layers(self, resid: Tensor, start: int, stop: int, prefix: PrefixKV | None) -> Tensor:
        batch, pos, _ = resid.shape
        h = resid
        kv = None if prefix is None else prefix_cache(prefix)
        for layer in range(start, stop):  # inside native(): the Hugging Face layers themselves
            args, kwargs = self.layer_kwargs(layer, pos, None if prefix is None else prefix.cut)
            args, kwargs = batched(args, batch), batched(kwargs, batch)
            if kv is not None:
                args, kwargs = swap_cache(args, kwargs, kv)
            out = self.model.blocks[layer](h, *args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def prefix_kv(self, resid: Float[Tensor, "batch pos d_model"], start: int, cut: int) -> PrefixKV:
        """Keys and values of positions ``0..cut-1`` at blocks ``start..L-1`` of the clean run from ``resid`` (the
        input of block ``start``), without gradients: what :meth:`run_blocks` needs to run positions ``cut..``
        alone. Fast path only (the Hugging Face attention fills the cache)."""
        start = self.check_layer(start)
        if not 0 < cut < resid.shape[1]:
            raise ValueError(f"cut {cut} must lie inside the sequence (1..{resid.shape[1] - 1})")
        if not self.fast():
            raise RuntimeError("prefix_kv needs the fast path (a bridge, the switch on, no TransformerLens hooks)")
        collect = collecting_cache()
        with torch.no_grad(), self.native():
            h = resid[:, :cut]
            for layer in range(start, self.n_layers):
                args, kwargs = self.layer_kwargs(layer, cut, 0)
                args, kwargs = swap_cache(batched(args, h.shape[0]), batched(kwargs, h.shape[0]), collect)
                out = self.model.blocks[layer](h, *args, **kwargs)
                h = out[0] if isinstance(out, tuple) else out
        keys = {l: collect.kv[l][0] for l in range(start, self.n_layers)}
        values = {l: collect.kv[l][1] for l in range(start, self.n_layers)}
        return PrefixKV(keys, values, cut, start)


__all__ = ["BlockRunner"]
