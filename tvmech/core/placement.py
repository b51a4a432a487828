"""Models placed by Hugging Face accelerate (``load_model(..., device_map=...)``): whether a model is dispatched over
devices or offloaded, where its token ids go, booting a map that TransformerLens refuses, and the memory check
done before loading.

A model is *dispatched* when its ``hf_device_map`` spreads it over several devices or offloads some of it;
*offloaded* when some weights live on the ``"cpu"`` or ``"disk"`` of that map: accelerate copies them to the
execution device at every call, so nothing may capture them in a CUDA graph
(:attr:`tvmech.core.adapter.Adapter.offloaded`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch


def dispatched(hf_model: Any) -> bool:
    """Whether accelerate placed ``hf_model``'s weights (a ``device_map`` over several devices, or offload)."""
    placement = getattr(hf_model, "hf_device_map", None) or {}
    return len({str(v) for v in placement.values()}) > 1 or any(str(v) in ("cpu", "disk") for v in placement.values()
                                                                  if len(placement) > 1)


def offloaded(hf_model: Any) -> bool:
    """Whether some of ``hf_model``'s weights are offloaded by accelerate (``"cpu"`` or ``"disk"`` in its
    ``hf_device_map``): they are copied to the execution device at every call, so nothing may capture them."""
    return any(str(v).lower() in ("cpu", "disk") for v in (getattr(hf_model, "hf_device_map", None) or {}).values())


@contextlib.contextmanager
def hidden_mixed_map(hf_model: Any):
    """Boot a model whose map mixes a GPU with CPU/disk offload with its ``hf_device_map`` out of sight.

    TransformerLens 4.3 refuses such maps as "only verified on CPU-only hardware" (its bridge components
    already run every call under accelerate's ``align_module_device``); tvmech verifies them itself on a GPU
    (``tests/unit/core/test_sharded.py``: CPU-offloaded layers executing on ``cuda:0`` give the single-GPU
    numbers) and boots the bridge on the execution device of the embedding.
    """
    placement = getattr(hf_model, "hf_device_map", None) or {}
    on_gpu = any(str(v).isdigit() or str(v).lower().startswith("cuda") for v in placement.values())
    if not (on_gpu and offloaded(hf_model)):
        yield
        return
    del hf_model.hf_device_map
    try:
        yield
    finally:
        hf_model.hf_device_map = placement


def first_device(hf_model: Any) -> torch.device:
    """The device of the input embedding (where token ids go), for a dispatched model."""
    emb = hf_model.get_input_embeddings()
    hook = getattr(emb, "_hf_hook", None)
    if hook is not None and getattr(hook, "execution_device", None) is not None:
        return torch.device(hook.execution_device)
    return next(emb.parameters()).device


def check_fits(path: Path, placement: dict) -> None:
    """Refuse, before loading, a model larger than ``placement["max_memory"]``'s sum without an offload folder
    (the message names the memory the model needs in its dtype)."""
    budget = placement.get("max_memory")
    if not budget or placement.get("offload_folder"):
        return
    from accelerate import init_empty_weights
    from accelerate.utils import convert_file_size_to_int
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
    itemsize = torch.empty((), dtype=placement.get("dtype") or torch.float32).element_size()
    need = sum(p.numel() for p in skeleton.parameters()) * itemsize
    have = sum(convert_file_size_to_int(v) if isinstance(v, str) else int(v) for v in budget.values())
    if need > have:
        raise ValueError(f"the model needs {need / 2**30:.2f} GiB of weights in {placement.get('dtype')}, but "
                         f"max_memory {budget} allows {have / 2**30:.2f} GiB: raise max_memory, add 'cpu' to it, "
                         "or give an offload_folder")


__all__ = ["dispatched", "offloaded", "hidden_mixed_map", "first_device", "check_fits"]
