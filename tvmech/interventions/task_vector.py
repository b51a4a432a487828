"""The :class:`TaskVector`: vectors plus everything needed to re-apply and trust them, saved as
safetensors (tensors) + JSON (metadata). Never pickle."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save

from tvmech.core.adapter import adapt
from tvmech.core.io import atomic_write_bytes, atomic_write_text
from tvmech.interventions.injection import Injection

FORMAT = "tvmech.TaskVector/1"


@dataclass
class TaskVector:
    """A task vector (or several, one per layer/position site) with its provenance.

    ``vectors[i, j]`` is injected at ``layers[i]``, ``positions[j]`` (shape ``[1, 1, d]`` if shared).
    ``basis`` is ``"raw"``: vectors live in the unprocessed residual basis of the Hugging Face weights.
    """

    vectors: torch.Tensor
    layers: tuple[int, ...]
    positions: tuple[int, ...] = (-1,)
    point: str = "resid_pre"
    mode: str = "add"
    model_name: str = ""
    fingerprint: str = ""
    d_model: int = 0
    task: str = ""
    method: str = ""
    basis: str = "raw"
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def for_model(cls, model, vectors: torch.Tensor, layers, positions=(-1,), **meta) -> TaskVector:
        ad = adapt(model)
        tv = cls(vectors.detach().float().cpu(), tuple(layers), tuple(positions), model_name=ad.name,
                 fingerprint=ad.fingerprint(), d_model=ad.d_model, **meta)
        tv.injection.check(ad)
        return tv

    @property
    def injection(self) -> Injection:
        return Injection(self.vectors, self.layers, self.positions, self.point, self.mode)

    def hooks_for(self, model):
        """``Batch -> hooks`` for :func:`tvmech.analysis.evaluation`."""
        self.check_model(model)
        return self.injection.hooks_for(model)

    def apply(self, model, query_pos=None):
        """Context manager adding the vector(s) during every forward pass inside it."""
        self.check_model(model)
        return self.injection.apply(model, query_pos)

    def check_model(self, model) -> None:
        ad = adapt(model)
        if self.d_model and self.d_model != ad.d_model:
            raise ValueError(f"this task vector has d_model {self.d_model}; the model has {ad.d_model}")
        if self.fingerprint and self.fingerprint != ad.fingerprint():
            raise ValueError(
                f"this task vector was made on {self.model_name!r} (fingerprint {self.fingerprint}); the model "
                f"is {ad.name!r} (fingerprint {ad.fingerprint()})"
            )

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path.safetensors`` and ``path.json``; refuses to overwrite unless asked."""
        base = Path(path).with_suffix("")
        st, js = base.with_suffix(".safetensors"), base.with_suffix(".json")
        if not overwrite and (st.exists() or js.exists()):
            raise FileExistsError(f"{base} already exists; pass overwrite=True to replace it")
        meta = {k: v for k, v in asdict(self).items() if k != "vectors"}
        meta["format"] = FORMAT
        atomic_write_bytes(st, save({"vectors": self.vectors.contiguous()}))
        atomic_write_text(js, json.dumps(meta, indent=2) + "\n")
        return base

    @classmethod
    def load(cls, path: str | Path, model=None) -> TaskVector:
        """Read a saved vector; with ``model``, check that it fits that model."""
        base = Path(path).with_suffix("")
        meta = json.loads(base.with_suffix(".json").read_text())
        if meta.pop("format", None) != FORMAT:
            raise ValueError(f"{base}.json is not a {FORMAT} file")
        vectors = load_file(str(base.with_suffix(".safetensors")))["vectors"]
        meta["layers"], meta["positions"] = tuple(meta["layers"]), tuple(meta["positions"])
        tv = cls(vectors=vectors, **meta)
        if model is not None:
            tv.check_model(model)
        return tv
