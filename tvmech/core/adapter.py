"""The one place that touches the TransformerLens API.

Every algorithm in tvmech talks to a model through :class:`Adapter`, so none of them branches on
whether it holds a ``TransformerBridge`` (TransformerLens >= 3.0, the default wrapper) or a legacy
``HookedTransformer`` (TransformerLens 3.x only). What differs between the two lives here:

* running a slice of blocks on a residual stream (``start_at_layer``): ``HookedTransformer`` does
  this natively; the bridge's own ``start_at_layer`` still executes the blocks below the start, so
  for the bridge the blocks are called one by one (their hook points fire as usual);
* per-head weights with grouped-query attention expanded to one matrix per query head;
* a fingerprint that identifies the model's weights-layout for saved vectors.

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
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def name(self) -> str:
        return str(getattr(self.model, "tvmech_name", None) or getattr(self.cfg, "model_name", "model"))

    def fingerprint(self) -> str:
        """Hash of the architecture numbers that a saved vector depends on."""
        keys = ("n_layers", "d_model", "n_heads", "d_head", "d_vocab", "n_key_value_heads")
        spec = {k: getattr(self.cfg, k, None) for k in keys}
        spec["name"] = self.name
        return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]

    # ----------------------------------------------------------------- hooks
    def hook_name(self, layer: int, point: str = "resid_pre") -> str:
        """``blocks.{layer}.hook_{point}``; validates both."""
        self.check_layer(layer)
        if point not in HOOK_POINTS:
            raise ValueError(f"hook point {point!r} is not supported; valid: {', '.join(HOOK_POINTS)}")
        return f"blocks.{layer}.hook_{point}"

    def act_name(self, layer: int, which: str) -> str:
        """Hook name of an activation inside block ``layer`` (keys of ``ACTIVATIONS``)."""
        self.check_layer(layer)
        if which not in ACTIVATIONS:
            raise ValueError(f"activation {which!r} is not known; valid: {', '.join(ACTIVATIONS)}")
        return f"blocks.{layer}.{ACTIVATIONS[which]}"

    def check_layer(self, layer: int, *, allow_final: bool = False) -> int:
        top = self.n_layers if allow_final else self.n_layers - 1
        if not isinstance(layer, int) or not 0 <= layer <= top:
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
        self.check_layer(layer, allow_final=True)
        tokens = tokens.to(self.device)
        if not self.is_bridge:
            return self.model(tokens, stop_at_layer=layer)
        return self.run_blocks(self.embed(tokens), 0, layer)

    def embed(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        """The input of block 0 (token + learned position embeddings where the model has them).

        Unlike ``model(tokens, stop_at_layer=0)`` on the bridge, this does not fire block 0's input
        hooks, so that ``run_blocks(embed(t), 0, l)`` fires each hook exactly once.
        """
        tokens = tokens.to(self.device)
        if not self.is_bridge:
            return self.model(tokens, stop_at_layer=0)
        h = self.model.embed(tokens)
        if getattr(self.cfg, "positional_embedding_type", None) == "standard":
            h = h + self.model.pos_embed(tokens)
        return h

    def run_blocks(
        self, resid: Float[Tensor, "batch pos d_model"], start: int, stop: int | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """Run blocks ``start .. stop-1`` on ``resid`` (the input of block ``start``).

        Hook points inside those blocks fire as in a full forward pass. Only the blocks in the
        slice are computed, which is what makes suffix-only training cheap.
        """
        stop = self.n_layers if stop is None else stop
        self.check_layer(start, allow_final=True)
        self.check_layer(stop, allow_final=True)
        if start >= stop:
            return resid
        if not self.is_bridge:
            return self.model(resid, start_at_layer=start, stop_at_layer=stop)
        batch, pos, _ = resid.shape
        kwargs = self._block_kwargs(resid, batch, pos)
        h = resid
        for layer in range(start, stop):
            out = self.model.blocks[layer](h, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        return h

    def _block_kwargs(self, resid: Tensor, batch: int, pos: int) -> dict[str, Any]:
        """Arguments a Hugging Face decoder layer expects: causal mask and rotary embeddings."""
        mask = torch.full((pos, pos), torch.finfo(resid.dtype).min, device=resid.device, dtype=resid.dtype)
        mask = mask.triu(1)[None, None].expand(batch, 1, pos, pos)
        position_ids = torch.arange(pos, device=resid.device)[None].expand(batch, pos)
        kwargs: dict[str, Any] = {"attention_mask": mask, "position_ids": position_ids}
        rotary = getattr(getattr(self.model.original_model, "model", None), "rotary_emb", None)
        if rotary is not None:
            kwargs["position_embeddings"] = rotary(resid, position_ids)
        return kwargs

    def input_norm(self, layer: int, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """Block ``layer``'s attention-input norm (``ln1``, with its weight) applied to ``x``: the values of
        head h are ``input_norm(l, resid) @ W_V[l, h]``."""
        return self.model.blocks[self.check_layer(layer)].ln1(x)

    def unembed(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        """Final norm then unembedding: the logit lens applied to any residual-stream vector."""
        return self.model.unembed(self.final_norm(resid))

    def final_norm(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The final norm (``ln_final``) applied to residual-stream vectors."""
        return self.model.ln_final(resid)

    # ----------------------------------------------------------------- weights
    def _expand_kv(self, w: Tensor) -> Tensor:
        """Repeat key/value-head weights so that query head ``h`` uses kv head ``h // group``."""
        if w.shape[1] == self.n_heads:
            return w
        return w.repeat_interleave(self.n_heads // w.shape[1], dim=1)

    @property
    def W_V(self) -> Float[Tensor, "n_layers n_heads d_model d_head"]:
        return self._expand_kv(self.model.W_V)

    @property
    def W_O(self) -> Float[Tensor, "n_layers n_heads d_head d_model"]:
        return self.model.W_O

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.model.W_U


def factored_matrix() -> type:
    """TransformerLens's ``FactoredMatrix`` class (exported at the top level of TransformerLens 2.x-4.x)."""
    from transformer_lens import FactoredMatrix

    return FactoredMatrix


def adapt(model: Any) -> Adapter:
    """Wrap a TransformerLens model (bridge or ``HookedTransformer``) or pass an Adapter through."""
    if isinstance(model, Adapter):
        return model
    if not hasattr(model, "cfg") or not hasattr(model, "hooks"):
        raise TypeError(
            f"expected a TransformerLens model (TransformerBridge or HookedTransformer), got {type(model).__name__}"
        )
    return Adapter(model)
