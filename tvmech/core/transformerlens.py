"""The one module that imports TransformerLens.

Everything else in tvmech reaches a TransformerLens model through :class:`tvmech.core.adapter.Adapter` (which
calls the model's own API: ``hooks``, ``hook_dict``, ``start_at_layer``, ``blocks``) and reaches the library
itself through the functions here: wrapping a Hugging Face model (:func:`boot`), the names and architectures it
knows, its ``FactoredMatrix`` class, and telling a bridge component from a plain module. The imports are made
inside the functions, so importing tvmech does not import TransformerLens until a model is wrapped.

TransformerLens's own analysis tools (``transformer_lens.tools.analysis``, TransformerLens >= 4.3, bridge models)
are reached through the thin wrappers at the end (:func:`jacobian_lens_at`, :func:`attribution_head_scores`,
:func:`logit_readout`, :func:`logit_lens_final_position`); :mod:`tvmech.analysis.tl_agreement` compares them with
tvmech's own measurements.
"""

from __future__ import annotations

from typing import Any

import torch


def is_bridge_component(module: Any) -> bool:
    """Whether ``module`` is one of the ``TransformerBridge``'s own components (a ``GeneralizedComponent`` wrapping
    a Hugging Face module), not a plain PyTorch module."""
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


def to_tokens(model: Any, text: str) -> list[int]:
    """TransformerLens's tokenization of ``text`` (``model.to_tokens``: a BOS where the model's config prepends
    one), as a list of ids."""
    return [int(t) for t in model.to_tokens(text)[0].tolist()]


def jacobian_lens_at(model: Any, text: str, source_layer: int, position: int, *, dim_batch: int = 64) -> torch.Tensor:
    """``JacobianLens.fit`` on the one prompt ``text`` with its position set reduced to ``{position}``.

    TransformerLens averages ``Σ_{t' ∈ V, t' ≥ t} ∂h_final[t'] / ∂h_source[t]`` over source positions ``t ∈ V``,
    ``V = [skip_first_positions, seq_len − 1)``, with ``h_source = blocks.{source_layer}.hook_out`` and ``h_final``
    the last block's output (before the final norm). With ``skip_first_positions = position`` and the prompt cut
    to ``position + 2`` tokens (``max_seq_len``), ``V = {position}`` and the lens is the single Jacobian
    ``∂h_final[position] / ∂h_source[position]``.

    Args:
        model: a ``TransformerBridge`` with raw weights, in eval mode.
        text: the prompt (tokenized by :func:`to_tokens`); it needs at least ``position + 2`` tokens.
        source_layer: the block whose output is differentiated (``0 .. n_layers − 2``).
        position: the token position.
        dim_batch: output coordinates per backward pass (speed only).

    Returns:
        ``[d_model, d_model]`` float32 on the CPU.
    """
    from transformer_lens.tools.analysis import JacobianLens

    n = model.to_tokens(text).shape[1]
    if not 0 <= position <= n - 2:
        raise ValueError(f"position {position} needs a token after it; {text!r} has {n} tokens (valid: 0..{n - 2})")
    lens = JacobianLens.fit(model, [text], corpus="tvmech.analysis.tl_agreement", source_layers=[source_layer],
                            dim_batch=dim_batch, max_seq_len=position + 2, skip_first_positions=position,
                            show_progress=False)
    return lens.jacobians[source_layer].float()


class _embedding_grad:
    """Temporarily let the input embedding's weight require a gradient, so that a forward pass of a frozen model
    (tvmech freezes every parameter) builds the graph ``attribution_patch`` differentiates through."""

    def __init__(self, model: Any) -> None:
        self.weight = model.original_model.get_input_embeddings().weight
        self.flag = self.weight.requires_grad

    def __enter__(self) -> None:
        self.weight.requires_grad_(True)

    def __exit__(self, *exc: Any) -> None:
        self.weight.requires_grad_(self.flag)


def attribution_head_scores(model: Any, clean: torch.Tensor, corrupt: torch.Tensor,
                            metric: Any) -> torch.Tensor:
    """TransformerLens's node attribution patching, per attention head: ``attribution_patch`` (node granularity)
    scores every head at every position with ``(z_clean − z_corrupt) · ∂metric/∂z`` (gradient on the corrupt run,
    mean over the pairs); the scores of one head are summed over positions here.

    Args:
        model: a ``TransformerBridge`` in eval mode.
        clean, corrupt: ``[batch, seq]`` token ids, paired row by row (equal lengths).
        metric: single-example logits ``[1, seq, d_vocab]`` -> scalar tensor.

    Returns:
        ``[n_layers, n_heads]`` float64 on the CPU.
    """
    from transformer_lens.tools.analysis import attribution_patch

    with _embedding_grad(model), torch.enable_grad():
        result = attribution_patch(model, clean, corrupt, metric)
    heads = [n for n in result.node_scores if n.kind == "attn_head_out"]
    scores = torch.zeros(model.cfg.n_layers, 1 + max(n.head for n in heads), dtype=torch.float64)
    for node in heads:
        scores[node.layer, node.head] += result.node_scores[node]
    return scores


def logit_readout(model: Any, vectors: torch.Tensor) -> torch.Tensor:
    """TransformerLens's ``logit_readout``: ``transform(ln_final(v) @ W_U + b_U)`` for every vector (float32)."""
    from transformer_lens.tools.analysis import logit_readout as readout

    return readout(model, vectors).values.float()


def logit_lens_final_position(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """TransformerLens's ``logit_lens`` at the last position of ``tokens`` (no padding): the lens of the stream
    entering every block, then of the final stream, ``[n_layers + 1, batch, d_vocab]`` float32."""
    from transformer_lens.tools.analysis import logit_lens

    return logit_lens(model, tokens).readout.values.float()


__all__ = ["is_bridge_component", "official_model_names", "supported_architectures", "boot", "factored_matrix",
           "to_tokens", "jacobian_lens_at", "attribution_head_scores", "logit_readout", "logit_lens_final_position"]
