"""The :class:`TaskVector`: vectors plus everything needed to re-apply and trust them, saved as
safetensors (tensors) + JSON (metadata). Never pickle.

A saved vector cannot say something other than what it holds:

* the ``.safetensors`` header repeats where the vector goes (layers, positions, point, mode, ``d_model``,
  fingerprint, shape): a JSON that disagrees with it is refused, so editing ``layers`` in the JSON does
  not move the vector;
* the JSON records the SHA-256 of the tensor (``checksum``): a swapped or edited ``.safetensors`` is refused;
* the fingerprint is the architecture's numbers and a hash of the weights
  (:meth:`tvmech.core.adapter.Adapter.fingerprint`), so the same weights loaded by another name or path are
  accepted and other weights of the same shape are not; a file without one loads only with ``strict=False``;
  a legacy fingerprint (saved before ``fp2-``) is checked against the legacy hash, computed only then (slow);
* vectors are finite floating-point tensors, checked when made and when saved.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from tvmech.core.adapter import adapt
from tvmech.core.io import atomic_write_bytes, atomic_write_text
from tvmech.interventions.engine import Intervention, Write
from tvmech.interventions.injection import Injection, check_vectors

FORMAT = "tvmech.TaskVector/2"
OLD_FORMATS = ("tvmech.TaskVector/1",)  # no checksum, no header; fingerprint by model name
SUFFIXES = (".safetensors", ".json")
# the fields the .safetensors header repeats (JSON-encoded), checked against the JSON on load
HEADER = ("layers", "positions", "point", "mode", "d_model", "fingerprint", "shape")


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (as stored: contiguous, on the CPU)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def paths(path: str | Path) -> tuple[Path, Path]:
    """``(x.safetensors, x.json)`` for ``x``, ``x.safetensors`` or ``x.json``; other dots belong to the name
    (``run_lr3e-4.seed0`` -> ``run_lr3e-4.seed0.safetensors``)."""
    p = Path(path)
    base = p.with_suffix("") if p.suffix in SUFFIXES else p
    return base.with_name(base.name + SUFFIXES[0]), base.with_name(base.name + SUFFIXES[1])


@dataclass
class TaskVector(Intervention):
    """A task vector (or several, one per layer/position site) with its provenance.

    ``vectors[i, j]`` is injected at ``layers[i]``, ``positions[j]`` (shape ``[1, 1, d]`` if shared).
    ``basis`` is ``"raw"``: vectors live in the unprocessed residual basis of the Hugging Face weights.
    """

    vectors: torch.Tensor
    """``[n_layers, n_positions, d_model]`` (``[1, 1, d_model]`` when shared by every site), float32."""
    layers: tuple[int, ...]
    """The blocks the vectors go to (``vectors[i]`` to ``layers[i]``)."""
    positions: tuple[int, ...] = (-1,)
    """The token positions (negative: relative to the query; or role names)."""
    point: str = "resid_pre"
    """Where in the block: ``resid_pre``, ``resid_post``, ``attn_out`` or ``mlp_out``."""
    mode: str = "add"
    """``"add"`` to the stream or ``"replace"`` it."""
    model_name: str = ""
    """The name of the model it was made on (display only; ``fingerprint`` is what is checked)."""
    fingerprint: str = ""
    """The model's architecture numbers and weight hash (:meth:`~tvmech.core.adapter.Adapter.fingerprint`)."""
    d_model: int = 0
    """The model's width (0: unknown)."""
    task: str = ""
    """The task it was made for."""
    method: str = ""
    """How it was made (``"ltv"``, ``"vanilla"``, ``"function_vector"``, ...)."""
    basis: str = "raw"
    """``"raw"``: the unprocessed residual basis of the Hugging Face weights."""
    config: dict[str, Any] = field(default_factory=dict)
    """The settings it was made with (JSON-serialisable)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """What making it measured (``best_val_loss``, ``steps_run``, ``norm``, ...)."""
    curve: list[dict[str, float]] = field(default_factory=list)
    """The training curve, one dict per evaluation (learned vectors)."""

    def __post_init__(self):
        check_vectors(self.vectors.detach(), "task vectors")
        inj = self.injection  # checks the layers, positions and the tensor's shape against them
        self.layers, self.positions = inj.layers, inj.positions
        if self.d_model and self.vectors.shape[-1] != self.d_model:
            raise ValueError(f"vectors of shape {tuple(self.vectors.shape)} do not have d_model {self.d_model}")

    @classmethod
    def for_model(cls, model, vectors: torch.Tensor, layers, positions=(-1,), **meta) -> TaskVector:
        """A task vector stamped with ``model``'s name, fingerprint and width, checked against it.

        Args:
            model: a TransformerLens model or its adapter.
            vectors, layers, positions: as the fields (``vectors`` is detached and copied to the CPU in float32).
            **meta: other fields (``task``, ``method``, ``config``, ...).

        Returns:
            The task vector.
        """
        ad = adapt(model)
        tv = cls(vectors.detach().float().cpu(), tuple(layers), tuple(positions), model_name=ad.name,
                 fingerprint=ad.fingerprint(), d_model=ad.d_model, **meta)
        tv.injection.check(ad)
        return tv

    @property
    def injection(self) -> Injection:
        """The :class:`~tvmech.interventions.injection.Injection` these vectors make (layers, positions, point,
        mode), without the model check of :meth:`writes`; building it checks the tensor's shape against the
        sites."""
        return Injection(self.vectors, self.layers, self.positions, self.point, self.mode)

    def writes(self, model) -> list[Write]:
        """The writes of :attr:`injection`, after checking that the vector was made on ``model``
        (:meth:`check_model`): a task vector is an intervention (``intervention=vec``, ``vec.apply(model)``)."""
        self.check_model(model)
        return self.injection.writes(model)

    def check_model(self, model) -> None:
        """Refuse a ``model`` of another width or fingerprint than the one the vector was made on."""
        ad = adapt(model)
        if self.d_model and self.d_model != ad.d_model:
            raise ValueError(f"this task vector has d_model {self.d_model}; the model has {ad.d_model}")
        if self.fingerprint and not ad.matches_fingerprint(self.fingerprint):
            raise ValueError(
                f"this task vector was made on {self.model_name!r} (fingerprint {self.fingerprint}); the model "
                f"is {ad.name!r} (fingerprint {ad.fingerprint()}): other weights or another architecture"
            )

    def _header(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "positions": list(self.positions), "point": self.point,
                "mode": self.mode, "d_model": self.d_model, "fingerprint": self.fingerprint,
                "shape": list(self.vectors.shape)}

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write ``path.safetensors`` and ``path.json`` (a ``.safetensors``/``.json`` suffix of ``path`` is
        dropped; other dots stay in the name); refuses to overwrite unless asked.

        Returns:
            The common stem (``path`` without the suffix).
        """
        st, js = paths(path)
        if not overwrite and (st.exists() or js.exists()):
            raise FileExistsError(f"{st.with_suffix('')} already exists; pass overwrite=True to replace it")
        check_vectors(self.vectors.detach(), "task vectors")
        vectors = self.vectors.detach().cpu().contiguous()
        header = {k: json.dumps(v) for k, v in self._header().items()}
        meta = {"format": FORMAT, **{k: v for k, v in asdict(self).items() if k != "vectors"},
                "shape": list(vectors.shape), "checksum": tensor_sha256(vectors)}
        atomic_write_bytes(st, save({"vectors": vectors}, metadata={"format": FORMAT, **header}))
        atomic_write_text(js, json.dumps(meta, indent=2) + "\n")
        return st.with_suffix("")

    def to_control_vector(self, path: str | Path, *, hint: str = "", overwrite: bool = False) -> Path:
        """Write llama.cpp's control-vector GGUF (``direction.{k}``: the output of block ``k``, every token); see
        :func:`tvmech.interventions.control_vectors.to_control_vector` for the vectors that can be written."""
        from tvmech.interventions.control_vectors import to_control_vector

        return to_control_vector(self, path, hint=hint, overwrite=overwrite)

    @classmethod
    def from_control_vector(cls, source, model, *, strict: bool = True, **meta) -> TaskVector:
        """Read a control vector (llama.cpp/repeng ``.gguf``, steering-vectors' ``{layer: vector}`` as
        ``.safetensors``/``.pt``, or a repeng/steering-vectors object) for ``model``; see
        :func:`tvmech.interventions.control_vectors.from_control_vector` (``meta``: ``task``, ``method``)."""
        from tvmech.interventions.control_vectors import from_control_vector

        return from_control_vector(source, model, strict=strict, **meta)

    @classmethod
    def load(cls, path: str | Path, model=None, *, strict: bool = True) -> TaskVector:
        """Read a saved vector and check that its two files agree; with ``model``, that it fits that model.

        Args:
            path: ``x``, ``x.safetensors`` or ``x.json``.
            model: when given, the vector's fingerprint and width must be this model's.
            strict: ``False`` loads a file without a fingerprint, and files of the older format
                ``tvmech.TaskVector/1`` (no checksum; saving it again writes the current format).

        Raises:
            FileNotFoundError: a file is missing.
            ValueError: unreadable or disagreeing files, a checksum that does not match, no fingerprint
                (with ``strict``), or a model the vector was not made on.
        """
        st, js = paths(path)
        missing = [str(p) for p in (st, js) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"task vector {st.with_suffix('')}: missing {', '.join(missing)}")
        meta = _read_json(js)
        fmt = meta.pop("format", None)
        if fmt not in (FORMAT, *OLD_FORMATS):
            raise ValueError(f"{js} is not a task-vector file: format {fmt!r}, expected {FORMAT!r}")
        if fmt != FORMAT and strict:
            raise ValueError(f"{js} has the older format {fmt!r} (no checksum; fingerprint by model name): load it "
                             "with strict=False and save it again to upgrade it")
        vectors, header = _read_tensor(st)
        checksum, shape = meta.pop("checksum", None), meta.pop("shape", None)
        valid = [f.name for f in fields(cls) if f.name != "vectors"]
        unknown = sorted(set(meta) - set(valid))
        if unknown:
            raise ValueError(f"{js}: unknown field(s) {unknown}; valid fields: {', '.join(valid)}")
        if "layers" not in meta:
            raise ValueError(f"{js}: the field 'layers' is missing")
        if fmt == FORMAT:
            mine = {**{k: meta.get(k) for k in HEADER}, "shape": shape}
            for k in HEADER:
                if k == "fingerprint" and not mine[k]:
                    continue  # no fingerprint in the JSON: refused below unless strict=False
                if k not in header:
                    raise ValueError(f"{st}: its header lacks {k!r}, which every {FORMAT} file has")
                if json.loads(header[k]) != mine[k]:
                    raise ValueError(f"{js} and {st} disagree on {k!r}: the JSON says {mine[k]!r}, the tensor file "
                                     f"{json.loads(header[k])!r} (was one of them edited or swapped?)")
            if checksum != tensor_sha256(vectors):
                raise ValueError(f"the tensor in {st} does not match the checksum in {js}: the .safetensors file was "
                                 "replaced or edited")
        if strict and not meta.get("fingerprint"):
            raise ValueError(f"{js} has no fingerprint, so it cannot be checked against a model; pass strict=False "
                             "to load it anyway")
        meta["layers"], meta["positions"] = tuple(meta["layers"]), tuple(meta.get("positions", (-1,)))
        tv = cls(vectors=vectors, **meta)
        if model is not None:
            tv.check_model(model)
        return tv


def vector_and_layer(value: TaskVector | torch.Tensor, layer: Any, what: str = "theta") -> tuple[torch.Tensor, Any]:
    """The one vector and its layer, for the functions that take a vector and a layer: a :class:`TaskVector`
    carries its layer, so ``layer`` may be omitted (``None``) and, when given, must agree with it.

    Args:
        value: a one-site :class:`TaskVector` (one layer, one position), or a tensor of ``d_model`` numbers.
        layer: the layer the caller was given (``None``: the vector's; required with a tensor).
        what: the vector argument's name in messages.

    Returns:
        ``(vector, layer)``: the flattened vector and the layer (the caller checks it against the model).

    Raises:
        ValueError: a vector of several sites, a layer that disagrees with the vector's, or a tensor without
            a layer.
    """
    if isinstance(value, TaskVector):
        if len(value.layers) != 1 or len(value.positions) != 1:
            raise ValueError(f"{what} is a task vector of layers {value.layers} and positions {value.positions}; "
                             "expected one layer and one position (pass vec.vectors[i, j] and its layer)")
        own = value.layers[0]
        if layer is not None and layer != own:
            raise ValueError(f"{what} is a task vector of layer {own} but layer={layer!r} was given: omit layer (the "
                             f"vector's is used) or pass a vector made at layer {layer}")
        return value.vectors.reshape(-1), own
    if layer is None:
        raise ValueError(f"{what} is a tensor, which does not say where it goes: pass layer=..., or a TaskVector")
    return value, layer


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a JSON {type(meta).__name__}, not an object of task-vector fields")
    return meta


def _read_tensor(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            keys, header = list(f.keys()), f.metadata() or {}
            if keys != ["vectors"]:
                raise KeyError(keys)
            return f.get_tensor("vectors"), header
    except KeyError as e:
        raise ValueError(f"{path} holds the tensor(s) {e.args[0]}; expected exactly one, named 'vectors'") from None
    except Exception as e:  # safetensors raises its own error type for corrupt and truncated files
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
