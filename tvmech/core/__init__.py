"""The bottom layer: the TransformerLens adapter (the only code that imports TransformerLens), model loading, the
fast-path switch and files.

Everything above reaches a model through :class:`~tvmech.core.adapter.Adapter` (:func:`adapt` wraps any
TransformerLens model): hook names, per-head weights, running blocks ``a..b`` from a residual stream.
:func:`load_model` returns the embedded default model (or a GGUF, a Hugging Face folder, a TransformerLens
name), wrapped as a TransformerLens bridge.
"""

from tvmech.core.adapter import Adapter, adapt
from tvmech.core.fast import fast_path, set_fast_path
from tvmech.core.models import DEFAULT_MODEL, GEMMA3_MODEL, ModelNotAvailable, default_gguf_path, load_model, wrap

__all__ = ["load_model", "wrap", "DEFAULT_MODEL", "GEMMA3_MODEL", "ModelNotAvailable", "default_gguf_path",
           "Adapter", "adapt", "fast_path", "set_fast_path"]
