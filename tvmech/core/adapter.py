"""The one place that touches the TransformerLens API.

Every algorithm in tvmech talks to a model through :class:`Adapter`, so none of them branches on
whether it holds a ``TransformerBridge`` (TransformerLens >= 3.0, the default wrapper) or a legacy
``HookedTransformer`` (TransformerLens 3.x only). What differs between the two lives here:

* running a slice of blocks on a residual stream (``start_at_layer``): ``HookedTransformer`` does
  this natively; the bridge's own ``start_at_layer`` still executes the blocks below the start, so
  for the bridge the blocks are called one by one (their hook points fire as usual);
* per-head weights with grouped-query attention expanded to one matrix per query head;
* a fingerprint of the architecture and the weights for saved vectors.

Conventions. Tokens are right-padded, so position ``p`` of every row is the ``p``-th token of that
prompt and padding never influences real positions under the causal mask. ``resid`` tensors are
``[batch, pos, d_model]``; ``layer`` ``l`` means the input of block ``l`` (``hook_resid_pre``), and
``l == n_layers`` means the final residual stream, before the final norm.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.anatomy import BlockAnatomy, NormParams, frozen_norm, norm_params, wide
from tvmech.core.checks import as_int
from tvmech.core.fast import fast_path_enabled, sdpa_enabled
from tvmech.core.layers import (
    PrefixKV,
    batched,
    collecting_cache,
    filled_cache,
    prefix_cache,
    record_layer_calls,
    swap_cache,
)

HookFn = Callable[[Tensor, Any], Tensor | None]
HOOK_POINTS = ("resid_pre", "resid_post")
# activation hooks shared by TransformerBridge (as aliases) and HookedTransformer, relative to blocks.{l}
ACTIVATIONS = {
    "z": "attn.hook_z",  # [batch, pos, n_heads, d_head], per-head attention-weighted values
    "pattern": "attn.hook_pattern",  # [batch, n_heads, query_pos, key_pos]
    "attn_out": "hook_attn_out",  # [batch, pos, d_model]
    "mlp_out": "hook_mlp_out",  # [batch, pos, d_model]
    "resid_mid": "hook_resid_mid",  # [batch, pos, d_model]
    "ln1": "ln1.hook_normalized",  # attention input after the norm (before its weight in the bridge)
}


WEIGHTS_HASH_ATTR = "tvmech_weights_sha256"  # where a model's weight hash is memoised


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 of ``module``'s state dict: names, shapes and float32 bytes, in key order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        if t.device.type == "meta":  # offloaded by accelerate (device_map with "disk" / "cpu"): read it back
            t = _onloaded(module, name)
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}|{tuple(t.shape)}|".encode())
        h.update(t.numpy())  # (a contiguous buffer: no copy)
    return h.hexdigest()


def _onloaded(root: torch.nn.Module, name: str) -> Tensor:
    """The value of the offloaded tensor ``name`` of ``root``, materialised through its module's accelerate hook."""
    from accelerate.utils import align_module_device

    owner_name, _, leaf = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    with align_module_device(owner):
        return getattr(owner, leaf).detach().to("cpu").clone()


@dataclass(frozen=True)
class Adapter:
    """A thin, stateless view of a TransformerLens model."""

    model: Any

    # ----------------------------------------------------------------- identity and shapes
    @property
    def is_bridge(self) -> bool:
        return hasattr(self.model, "original_model")

    @property
    def cfg(self) -> Any:
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def n_heads(self) -> int:
        return int(self.cfg.n_heads)

    @property
    def n_kv_heads(self) -> int:
        n_kv = getattr(self.cfg, "n_key_value_heads", None)
        return int(n_kv) if n_kv else self.n_heads

    @property
    def d_head(self) -> int:
        return int(self.cfg.d_head)

    @property
    def n_ctx(self) -> int | None:
        """The model's context length in tokens: the Hugging Face config's ``max_position_embeddings`` (or
        ``n_positions``), else TransformerLens's ``cfg.n_ctx``; ``None`` when neither is known."""
        hf = getattr(getattr(self.model, "original_model", None), "config", None)
        found = [getattr(hf, "max_position_embeddings", None), getattr(hf, "n_positions", None),
                 getattr(self.cfg, "n_ctx", None)]
        return next((n for n in found if isinstance(n, int) and not isinstance(n, bool) and n > 0), None)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def device(self) -> torch.device:
        """Where token ids and the first residual stream go: the first parameter's device (the input embedding's
        device of a model split by ``device_map``, as TransformerLens records it, when that one is offloaded)."""
        first = next(self.model.parameters()).device
        recorded = getattr(self.cfg, "device", None)
        return torch.device(recorded) if first.type == "meta" and recorded else first

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        return str(getattr(self.model, "tvmech_name", None) or getattr(self.cfg, "model_name", "model"))

    def weights_sha256(self) -> str:
        """SHA-256 of the model's weights (the Hugging Face state dict as loaded, each tensor as float32 on the
        CPU, in key order), computed once per model; for a model loaded from a GGUF file, the file's SHA-256
        (``"gguf:<hex>"``, set by :func:`tvmech.core.models.load_model`)."""
        module = self.model.original_model if self.is_bridge else self.model
        digest = getattr(module, WEIGHTS_HASH_ATTR, None)
        if digest is None:
            digest = weights_sha256(module)
            setattr(module, WEIGHTS_HASH_ATTR, digest)
        return digest

    def fingerprint(self) -> str:
        """What a saved vector depends on: the architecture numbers and the hash of the weights (not the
        model's name or path, so the same weights loaded another way match)."""
        keys = ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_key_value_heads")
        spec = {k: getattr(self.cfg, k, None) for k in keys}
        spec["weights"] = self.weights_sha256()
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ----------------------------------------------------------------- hooks
    def hook_name(self, layer: int, point: str = "resid_pre") -> str:
        """``blocks.{layer}.hook_{point}``; validates both."""
        layer = self.check_layer(layer)
        if point not in HOOK_POINTS:
            raise ValueError(f"hook point {point!r} is not supported; valid: {', '.join(HOOK_POINTS)}")
        return f"blocks.{layer}.hook_{point}"

    def act_name(self, layer: int, which: str) -> str:
        """Hook name of an activation inside block ``layer`` (keys of ``ACTIVATIONS``)."""
        layer = self.check_layer(layer)
        if which not in ACTIVATIONS:
            raise ValueError(f"activation {which!r} is not known; valid: {', '.join(ACTIVATIONS)}")
        return f"blocks.{layer}.{ACTIVATIONS[which]}"

    def check_layer(self, layer: int, *, allow_final: bool = False) -> int:
        """``layer`` (any integer: Python, numpy, 0-d tensor; not ``bool``) as an ``int`` in ``0..n_layers-1``
        (``0..n_layers`` with ``allow_final``); ``ArgumentTypeError`` / ``ValueError`` naming it otherwise."""
        top = self.n_layers if allow_final else self.n_layers - 1
        layer = as_int(layer, "layer")
        if not 0 <= layer <= top:
            raise ValueError(f"layer {layer!r} is out of range for this model: valid layers are 0..{top}")
        return layer

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Attach forward hooks for the duration of the block (TransformerLens ``hooks``)."""
        with self.model.hooks(fwd_hooks=list(fwd_hooks)):
            yield

    # ----------------------------------------------------------------- running the model
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
                                      for l in range(self.n_layers) for part in _PARTS}
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
        if part not in _PARTS:
            raise ValueError(f"part {part!r} is not valid; choose one of {_PARTS}")
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
        return getattr(component, "original_component", None) or component

    # ----------------------------------------------------------------- block anatomy
    def anatomy(self, layer: int) -> BlockAnatomy:
        """What block ``layer`` has: input and output norms, parallel attention + MLP, ``b_O``
        (:mod:`tvmech.core.anatomy`); found once per model, from the modules and one probe run of the block."""
        layer = self.check_layer(layer)
        found = self.model.__dict__.setdefault("_tvmech_anatomy", {})
        if layer not in found:
            found[layer] = self._find_anatomy(layer)
        return found[layer]

    def _find_anatomy(self, layer: int) -> BlockAnatomy:
        if not self.is_bridge:  # HookedTransformer (TransformerLens 3.x): its config says
            cfg = self.cfg
            post = bool(getattr(cfg, "use_normalization_before_and_after", False))
            return BlockAnatomy(cfg.normalization_type is not None, cfg.normalization_type is not None, post, post,
                                bool(getattr(cfg, "parallel_attn_mlp", False)), True)
        block = self.model.blocks[layer]
        has = {name: block._modules.get(name) is not None for name in ("ln1", "ln2", "ln1_post", "ln2_post")}
        # parallel: what the MLP (its norm, where it has one) reads is the block's own input
        reader = _hf(block._modules.get("ln2") or block._modules["mlp"])
        seen: dict[str, Tensor] = {}

        def record(module, args, kwargs):
            seen["x"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

        x = torch.randn(1, 2, self.d_model, generator=torch.Generator().manual_seed(0)).to(self.device, self.dtype)
        args, kwargs = self.layer_kwargs(layer, 2)
        handle = reader.register_forward_pre_hook(record, with_kwargs=True)
        try:
            with torch.no_grad(), self.native():
                self.model.blocks[layer](x, *args, **kwargs)
        finally:
            handle.remove()
        o_bias = getattr(self.native_module(layer, "o"), "bias", None) is not None
        return BlockAnatomy(has["ln1"], has["ln2"], has["ln1_post"], has["ln2_post"], torch.equal(seen["x"], x), o_bias)

    def norm(self, layer: int, name: str) -> NormParams | None:
        """Block ``layer``'s norm ``name`` (``ln1``, ``ln2``, ``ln1_post``, ``ln2_post``) as numbers
        (:func:`tvmech.core.anatomy.norm_params`), ``None`` where the block has none."""
        if name not in _NORMS:
            raise ValueError(f"norm {name!r} is not valid; choose one of {_NORMS}")
        m = self.model.blocks[self.check_layer(layer)]._modules.get(name)
        if m is None:
            return None
        found = self.model.__dict__.setdefault("_tvmech_norms", {})
        if (layer, name) not in found:
            found[layer, name] = norm_params(_hf(m))
        return found[layer, name]

    def attention_output(self, layer: int, z: Float[Tensor, "... n_heads d_head"]) -> Float[Tensor, "... d_model"]:
        """``hook_attn_out`` of block ``layer`` from the heads' ``z``: the output projection (``Σ_h z_h W_O[h] +
        b_O``) and the post-attention norm where the block has one (Gemma, OLMo-2); no hook fires."""
        block = self.model.blocks[self.check_layer(layer)]
        a = self.native_module(layer, "o")(z.reshape(*z.shape[:-2], self.n_heads * self.d_head))
        return _part(block, "ln1_post", a)

    def head_outputs(self, layer: int, z: Float[Tensor, "... n_heads d_head"]
                     ) -> tuple[Float[Tensor, "... n_heads d_model"], Float[Tensor, "... d_model"]]:
        """Each head's share of ``hook_attn_out`` and the rest: ``(per_head, rest)`` with ``per_head.sum(-2) + rest
        = attention_output(layer, z)`` (at least float32).

        Without a post-attention norm ``per_head[h] = z_h W_O[h]`` and ``rest = b_O`` (zero without a bias). With
        one (Gemma, OLMo-2), the norm's scale is frozen at the whole output ``a = Σ_h z_h W_O[h] + b_O``
        (:func:`tvmech.core.anatomy.frozen_norm`): ``per_head[h] = N_a(z_h W_O[h])`` and ``rest = N_a(b_O) + β``.
        """
        layer = self.check_layer(layer)
        dtype = wide(z.dtype)
        per_head = torch.einsum("...hd,hdm->...hm", z.to(dtype), self.W_O[layer].to(z.device, dtype))
        bias = getattr(self.native_module(layer, "o"), "bias", None)
        rest = torch.zeros(per_head.shape[:-2] + per_head.shape[-1:], device=z.device, dtype=dtype) if bias is None \
            else bias.detach().to(z.device, dtype).expand(*per_head.shape[:-2], -1)
        post = self.norm(layer, "ln1_post")
        if post is None:
            return per_head, rest
        a = per_head.sum(-2) + rest
        shift = 0 if post.bias is None else post.bias.to(z.device)
        return frozen_norm(post, a, per_head), frozen_norm(post, a, rest) + shift

    def input_norm(self, layer: int, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """Block ``layer``'s attention-input norm (``ln1``, with its weight) applied to ``x`` (the values of head
        h are ``input_norm(l, resid) @ W_V[l, h]``); ``x`` itself where there is none (OLMo-2). The Hugging
        Face module is called, so no hook fires (usable inside a hook)."""
        return _part(self.model.blocks[self.check_layer(layer)], "ln1", x)

    def mlp_output(self, layer: int, resid_mid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """What block ``layer``'s MLP adds to the residual stream (``hook_mlp_out``) when it reads ``resid_mid`` (the
        mid-residual; on a parallel block, the block's input: :attr:`BlockAnatomy.mlp_reads`): norm, MLP and
        post-MLP norm where the block has them (Gemma, OLMo-2); no hook fires."""
        block = self.model.blocks[self.check_layer(layer)]
        return _part(block, "ln2_post", _part(block, "mlp", _part(block, "ln2", resid_mid)))

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Final norm then unembedding (and the final logit soft-cap of models that have one, as in
        Gemma-2): the logit lens applied to any residual-stream vector."""
        logits = self.model.unembed(self.final_norm(resid))
        cfg = getattr(getattr(self.model, "original_model", None), "config", None)
        cap = getattr(cfg, "final_logit_softcapping", None)
        return torch.tanh(logits / cap) * cap if cap else logits

    def final_norm(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The final norm (``ln_final``) applied to residual-stream vectors."""
        return self.model.ln_final(resid)

    # ----------------------------------------------------------------- weights
    def _expand_kv(self, w: Tensor) -> Tensor:
        """Repeat key/value-head weights so that query head ``h`` uses kv head ``h // group``."""
        return w if w.shape[1] == self.n_heads else w.repeat_interleave(self.n_heads // w.shape[1], dim=1)

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._expand_kv(self.model.W_V)

    W_O = property(lambda self: self.model.W_O, doc="[n_layers, n_heads, d_head, d_model]")
    W_U = property(lambda self: self.model.W_U, doc="[d_model, d_vocab]")


_PARTS = ("block", "attn", "mlp", "o")
_NORMS = ("ln1", "ln2", "ln1_post", "ln2_post")


def _hf(m: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face module behind a bridge component (the module itself otherwise)."""
    return getattr(m, "original_component", None) or m


def _part(block: torch.nn.Module, name: str, x: Tensor) -> Tensor:
    """The Hugging Face module behind ``block.<name>`` applied to ``x`` (``x`` when the block has none)."""
    m = block._modules.get(name)
    return x if m is None else _hf(m)(x)


def _bridge_swaps(root: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Module, torch.nn.Module]]:
    """``(parent, name, bridge component, Hugging Face module)`` for every bridge component under ``root``,
    outermost first (found with the bridge whole; nothing is changed)."""
    swaps = []

    def walk(module: torch.nn.Module) -> None:
        for name, child in list(module.named_children()):
            original = getattr(child, "original_component", None) if _is_bridge_component(child) else None
            if original is not None:
                swaps.append((module, name, child, original))
                walk(original)
            else:
                walk(child)

    walk(root)
    return swaps


def _is_bridge_component(module: Any) -> bool:
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent
    return isinstance(module, GeneralizedComponent)


def official_model_names() -> list[str]:
    """The model names TransformerLens knows (they need the Hugging Face hub to load)."""
    try:
        from transformer_lens.supported_models import OFFICIAL_MODEL_NAMES
    except ImportError:  # TransformerLens 3.x
        from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES
    return list(OFFICIAL_MODEL_NAMES)


def supported_architectures() -> list[str]:
    """Hugging Face architecture class names that ``TransformerBridge`` can wrap."""
    from transformer_lens.factories import architecture_adapter_factory
    return sorted(architecture_adapter_factory.SUPPORTED_ARCHITECTURES)


def boot(hf_model: Any, tokenizer: Any, name: str, *, device: str | torch.device, dtype: torch.dtype,
         wrapper: str = "bridge") -> Any:
    """Wrap a Hugging Face causal LM in TransformerLens: ``TransformerBridge`` (``wrapper="bridge"``) or,
    on TransformerLens 3.x, ``HookedTransformer`` (``"hooked"``).

    Raises:
        ValueError: the bridge cannot wrap this architecture (the message lists those it can).
    """
    if wrapper == "hooked":
        try:
            from transformer_lens import HookedTransformer
        except ImportError:
            raise RuntimeError("wrapper='hooked' needs TransformerLens 3.x (4.x removed HookedTransformer); "
                               "use wrapper='bridge'") from None
        return HookedTransformer.from_pretrained_no_processing(name, hf_model=hf_model, tokenizer=tokenizer,
                                                               device=str(device), dtype=dtype)
    from transformer_lens.model_bridge import TransformerBridge

    try:
        return TransformerBridge.boot_transformers(name, hf_model=hf_model, tokenizer=tokenizer, device=device,
                                                   dtype=dtype)
    except ValueError as e:
        if "supported architecture" not in str(e):
            raise
        arch = ", ".join(getattr(hf_model.config, "architectures", None) or [type(hf_model).__name__])
        raise ValueError(f"TransformerBridge cannot wrap {arch}; it supports: {', '.join(supported_architectures())}"
                         ) from None


def factored_matrix() -> type:
    """TransformerLens's ``FactoredMatrix`` class (exported at the top level of TransformerLens 2.x-4.x)."""
    from transformer_lens import FactoredMatrix
    return FactoredMatrix


def adapt(model: Any) -> Adapter:
    """Wrap a TransformerLens model (bridge or ``HookedTransformer``) or pass an Adapter through."""
    if isinstance(model, Adapter):
        return model
    if not hasattr(model, "cfg") or not hasattr(model, "hooks"):
        raise TypeError(f"expected a TransformerLens model (TransformerBridge or HookedTransformer), "
                        f"got {type(model).__name__}")
    return Adapter(model)
