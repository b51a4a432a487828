"""The adapter: every algorithm of tvmech talks to a TransformerLens model through :class:`Adapter`, so none of
them branches on whether it holds a ``TransformerBridge`` (TransformerLens >= 3.0, the default wrapper) or a
legacy ``HookedTransformer`` (TransformerLens 3.x only).

The adapter is made of three parts, one module each, all in ``tvmech.core`` (nothing above ``core`` touches
TransformerLens; the library itself is imported by :mod:`tvmech.core.transformerlens` alone):

* this module: identity and hook names: shapes, the tokenizer, device and dtype, a fingerprint of the
  architecture and the weights (for saved vectors), TransformerLens hook names and hooks, each block's parts
  (norms, output projection, MLP: :mod:`tvmech.core.anatomy`) and per-head weights with grouped-query attention
  expanded to one matrix per query head;
* :mod:`tvmech.core.running`: running a slice of blocks on a residual stream (the suffix path), with a frozen
  prefix where asked;
* :mod:`tvmech.core.native`: the native fast path: the Hugging Face modules behind the bridge, whether a pass
  takes that path now, whether the model is offloaded.

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
from jaxtyping import Float
from torch import Tensor

from tvmech.core.anatomy import BlockAnatomy, NormParams, frozen_norm, norm_params, wide
from tvmech.core.checks import as_int
from tvmech.core.fingerprint import legacy_weights_sha256, weights_digest, weights_version
from tvmech.core.native import NativeView, hf_module
from tvmech.core.running import BlockRunner
from tvmech.core.transformerlens import factored_matrix  # noqa: F401 - re-exported (analysis.ov imports it here)

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


WEIGHTS_HASH_ATTR = "tvmech_weights_sha256"  # a file digest set by the loader (GGUF), trusted while unchanged
FINGERPRINT_KEYS = ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_key_value_heads")
FINGERPRINT_PREFIX = "fp2-"  # fingerprints of the sketch digest; those without it (16 hex digits) are legacy


@dataclass(frozen=True)
class Adapter(BlockRunner, NativeView):
    """A thin, stateless view of a TransformerLens model: identity and hook names here, running blocks
    (:class:`~tvmech.core.running.BlockRunner`) and the native fast path (:class:`~tvmech.core.native.NativeView`)
    mixed in (see the module docstring)."""

    model: Any
    """The wrapped TransformerLens model."""

    # ----------------------------------------------------------------- identity and shapes
    @property
    def is_bridge(self) -> bool:
        """Whether the model is a TransformerLens ``TransformerBridge`` (else a ``HookedTransformer``)."""
        return hasattr(self.model, "original_model")

    @property
    def cfg(self) -> Any:
        """The TransformerLens config."""
        return self.model.cfg

    @property
    def n_layers(self) -> int:
        """The number of blocks."""
        return int(self.cfg.n_layers)

    @property
    def middle_layer(self) -> int:
        """The default injection layer: :func:`middle_layer` of :attr:`n_layers` (15 of 30)."""
        return middle_layer(self.n_layers)

    @property
    def d_model(self) -> int:
        """The residual stream's width."""
        return int(self.cfg.d_model)

    @property
    def n_heads(self) -> int:
        """Query heads per block."""
        return int(self.cfg.n_heads)

    @property
    def n_kv_heads(self) -> int:
        """Key/value heads per block (fewer than ``n_heads`` with grouped-query attention)."""
        n_kv = getattr(self.cfg, "n_key_value_heads", None)
        return int(n_kv) if n_kv else self.n_heads

    @property
    def d_head(self) -> int:
        """The width of one head."""
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
        """The model's tokenizer."""
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
        """The parameters' dtype."""
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        """The model's display name."""
        return str(getattr(self.model, "tvmech_name", None) or getattr(self.cfg, "model_name", "model"))

    def _weights_module(self) -> torch.nn.Module:
        return self.model.original_model if self.is_bridge else self.model

    def _cached(self, what: str, compute: Callable[[torch.nn.Module], str]) -> str:
        """``compute(module)`` memoised on the module for as long as its tensors are unchanged
        (:func:`~tvmech.core.fingerprint.weights_version`); a loader's file digest (``WEIGHTS_HASH_ATTR``, the
        GGUF file's SHA-256) stands for both digests while the tensors are those it loaded."""
        module = self._weights_module()
        version = weights_version(module)
        memo = module.__dict__.setdefault("_tvmech_digests", {})
        file_digest = getattr(module, WEIGHTS_HASH_ATTR, None)
        if file_digest is not None:
            memo.setdefault("file", (version, file_digest))  # the version the loader's digest stands for
            if memo["file"] == (version, file_digest):
                return file_digest
        if what not in memo or memo[what][0] != version:
            # the sketch names tensors as Hugging Face does (the bridge's components taken out), whichever
            # TransformerLens version wraps them; the legacy hash as it always did (what the bridge shows)
            plain = self.native() if self.is_bridge and what == "sketch" else contextlib.nullcontext()
            with plain:
                memo[what] = (version, compute(module))
        return memo[what][1]

    def weights_digest(self) -> str:
        """Digest of the model's weights (the Hugging Face state dict as loaded), computed on the weights' own
        devices (:mod:`tvmech.core.fingerprint`) and cached while they are unchanged; for a model loaded from
        a GGUF file, the file's SHA-256 (``"gguf:<hex>"``, set by :func:`tvmech.core.models.load_model`)."""
        return self._cached("sketch", weights_digest)

    def _spec_hash(self, weights: str) -> str:
        spec = {k: getattr(self.cfg, k, None) for k in FINGERPRINT_KEYS}
        spec["weights"] = weights
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def fingerprint(self) -> str:
        """What a saved vector depends on: the architecture numbers and the weights' digest (not the model's
        name or path, so the same weights loaded another way match): ``"fp2-"`` and 16 hex digits."""
        return FINGERPRINT_PREFIX + self._spec_hash(self.weights_digest())

    def legacy_fingerprint(self) -> str:
        """The fingerprint before ``fp2-`` (host SHA-256 of every weight: slow on large models; cached)."""
        return self._spec_hash(self._cached("legacy", legacy_weights_sha256))

    def matches_fingerprint(self, fingerprint: str) -> bool:
        """Whether a saved vector's ``fingerprint`` is this model's: the current form, or a legacy one (16 hex
        digits, vectors saved before ``fp2-``), checked against :meth:`legacy_fingerprint` only then."""
        if fingerprint == self.fingerprint():
            return True
        return not fingerprint.startswith(FINGERPRINT_PREFIX) and fingerprint == self.legacy_fingerprint()

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
        reader = hf_module(block._modules.get("ln2") or block._modules["mlp"])
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
            found[layer, name] = norm_params(hf_module(m))
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
        """``[n_layers, n_heads, d_model, d_head]`` value weights, key/value heads repeated per query head."""
        return self._expand_kv(self.model.W_V)

    W_O = property(lambda self: self.model.W_O, doc="[n_layers, n_heads, d_head, d_model]")
    W_U = property(lambda self: self.model.W_U, doc="[d_model, d_vocab]")


_NORMS = ("ln1", "ln2", "ln1_post", "ln2_post")


def _part(block: torch.nn.Module, name: str, x: Tensor) -> Tensor:
    """The Hugging Face module behind ``block.<name>`` applied to ``x`` (``x`` when the block has none)."""
    m = block._modules.get(name)
    return x if m is None else hf_module(m)(x)


def middle_layer(n_layers: int) -> int:
    """The default injection layer of a model with ``n_layers`` blocks: ``n_layers // 2`` (15 of 30)."""
    return n_layers // 2


def adapt(model: Any) -> Adapter:
    """Wrap a TransformerLens model (bridge or ``HookedTransformer``) or pass an Adapter through."""
    if isinstance(model, Adapter):
        return model
    if not hasattr(model, "cfg") or not hasattr(model, "hooks"):
        raise TypeError(f"expected a TransformerLens model (TransformerBridge or HookedTransformer), "
                        f"got {type(model).__name__}")
    return Adapter(model)
