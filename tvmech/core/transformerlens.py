"""The one module that imports TransformerLens.

Everything else in tvmech reaches a TransformerLens model through :class:`tvmech.core.adapter.Adapter` (which
calls the model's own API: ``hooks``, ``hook_dict``, ``start_at_layer``, ``blocks``) and reaches the library
itself through the functions here: wrapping a Hugging Face model (:func:`boot`), the names and architectures it
knows, its ``FactoredMatrix`` class, and telling a bridge component from a plain module. The imports are made
inside the functions, so importing tvmech does not import TransformerLens until a model is wrapped.
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


__all__ = ["is_bridge_component", "official_model_names", "supported_architectures", "boot", "factored_matrix"]
