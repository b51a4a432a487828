"""The native fast path: the Hugging Face modules behind a ``TransformerBridge``, called directly.

On a bridge every submodule call passes through TransformerLens's hook dispatch. :meth:`NativeView.native` takes
the bridge's components out for the duration of a block, so that the wrapped Hugging Face model runs as Hugging
Face wrote it (KV-cache decoding, the fast path of :mod:`tvmech.core.fast`); :meth:`NativeView.native_module`
names the module behind a block, its attention, its MLP or its output projection (where an intervention attaches
its PyTorch hooks on that path); :meth:`NativeView.fast` says whether a pass started now takes the fast path, and
:attr:`NativeView.offloaded` whether weights are copied in at every call (then nothing may be captured in a CUDA
graph). ``NativeView`` is a part of :class:`tvmech.core.adapter.Adapter` (``self.model``: the wrapped model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from tvmech.core.fast import fast_path_enabled, sdpa_enabled
from tvmech.core.placement import offloaded
from tvmech.core.transformerlens import is_bridge_component

PARTS = ("block", "attn", "mlp", "o")


class NativeView:
    """The native fast path of :class:`~tvmech.core.adapter.Adapter` (see the module docstring)."""

    @property
    def offloaded(self) -> bool:
        """Whether accelerate offloaded some of the model's weights (``"cpu"`` or ``"disk"`` in its device map,
        :func:`tvmech.core.placement.offloaded`): they are copied to the execution device at every call, so no
        CUDA graph may capture a pass."""
        return offloaded(self.model.original_model if self.is_bridge else self.model)

    @contextlib.contextmanager
    def sdpa(self) -> Iterator[bool]:
        """PyTorch's fused attention (``scaled_dot_product_attention``) instead of eager attention inside the
        block when :func:`tvmech.core.fast.sdpa_enabled` (off by default), on the fast path, where no attention
        pattern is read; not for soft-capped attention logits (Gemma-2). Yields whether it is on."""
        configs = self.model.__dict__.get("_tvmech_configs")
        if configs is None:
            found = [self.model.original_model.config, *(getattr(m, "config", None) for m in self.model.modules())]
            configs = list({id(c): c for c in found if hasattr(c, "_attn_implementation")}.values())
            self.model.__dict__["_tvmech_configs"] = configs
        before = [c._attn_implementation for c in configs]
        on = sdpa_enabled() and all(b == "eager" for b in before) and not any(
            getattr(c, "attn_logit_softcapping", None) for c in configs)
        if on:
            for c in configs:
                c._attn_implementation = "sdpa"
        try:
            yield on
        finally:
            for c, b in zip(configs, before):
                c._attn_implementation = b

    @contextlib.contextmanager
    def native(self) -> Iterator[Any]:
        """The wrapped Hugging Face model with the bridge's components taken out for the duration of the
        block (yielded): plain PyTorch modules, so that Hugging Face's own code runs as Hugging Face wrote it
        (KV-cache decoding, the fast path). TransformerLens hooks do not fire inside. Re-entrant; the swaps
        are found once per model and then cost a few dictionary writes."""
        if not self.is_bridge:
            raise TypeError("native() needs a TransformerBridge (the HookedTransformer has no Hugging Face model)")
        state = self.model.__dict__
        if state.get("_tvmech_native_depth", 0):
            state["_tvmech_native_depth"] += 1
            try:
                yield self.model.original_model
            finally:
                state["_tvmech_native_depth"] -= 1
            return
        if "_tvmech_swaps" not in state:
            # resolved while the bridge is whole: inside, model.blocks holds the Hugging Face layers
            state["_tvmech_parts"] = {(l, part): self.native_module(l, part)
                                      for l in range(self.n_layers) for part in PARTS}
            state["_tvmech_swaps"] = _bridge_swaps(self.model.original_model)
        swaps = state["_tvmech_swaps"]
        for module, name, _, original in swaps:
            module._modules[name] = original
        state["_tvmech_native_parts"], state["_tvmech_native_depth"] = state["_tvmech_parts"], 1
        try:
            yield self.model.original_model
        finally:
            state.pop("_tvmech_native_parts", None)
            state["_tvmech_native_depth"] = 0
            for module, name, child, _ in reversed(swaps):
                module._modules[name] = child

    def hooks_attached(self) -> bool:
        """Whether any TransformerLens hook is attached to the model (then the fast path is not taken)."""
        points = self.model.__dict__.get("_tvmech_hook_points")
        if points is None:
            points = list({id(hp): hp for hp in self.model.hook_dict.values()}.values())
            self.model.__dict__["_tvmech_hook_points"] = points
        return any(hp._forward_hooks or hp._forward_pre_hooks or hp._backward_hooks for hp in points)

    def fast(self) -> bool:
        """Whether a pass started now takes the fast path: a bridge, the switch on
        (:mod:`tvmech.core.fast`), no TransformerLens hook attached."""
        return self.is_bridge and fast_path_enabled() and not self.hooks_attached()

    def native_module(self, layer: int, part: str) -> torch.nn.Module:
        """The Hugging Face module behind block ``layer`` (``"block"``), its attention (``"attn"``), its
        MLP (``"mlp"``) or its attention output projection (``"o"``): what :meth:`native` exposes."""
        layer = self.check_layer(layer)
        if part not in PARTS:
            raise ValueError(f"part {part!r} is not valid; choose one of {PARTS}")
        resolved = self.model.__dict__.get("_tvmech_native_parts")
        if resolved is not None:
            return resolved[layer, part]
        component = block = self.model.blocks[layer]
        # attn / mlp: the module whose output TransformerLens calls hook_attn_out / hook_mlp_out, e.g.
        # "ln1_post.hook_out", the norm after attention on Gemma; o: the attention output projection
        alias = getattr(block, "hook_aliases", {}).get(f"hook_{part}_out", f"{part}.hook_out")
        path = {"block": [], "o": ["attn", "o"]}.get(part, alias.split(".")[:-1])
        for name in path:
            component = getattr(component, name, None)
        if component is None:
            raise ValueError(f"block {layer} has no {part!r} component")
        return hf_module(component)


def hf_module(m: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module behind a bridge component (the module itself otherwise)."""
    return getattr(m, "original_component", None) or m


def _bridge_swaps(root: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module, torch.nn.Module]]:
    """``(parent, name, bridge component, Hugging Face module)`` for every bridge component under ``root``,
    outermost first (found with the bridge whole; nothing is changed)."""
    swaps = []

    def walk(module: torch.nn.Module) -> None:
        for name, child in list(module.named_children()):
            original = getattr(child, "original_component", None) if is_bridge_component(child) else None
            if original is not None:
                swaps.append((module, name, child, original))
                walk(original)
            else:
                walk(child)

    walk(root)
    return swaps


__all__ = ["NativeView", "PARTS", "hf_module"]
