"""A small transformer trained from scratch on a synthetic task, kept a TransformerLens model.

The core is a Llama-architecture Hugging Face model built from a config and wrapped by
:func:`tvmech.core.models.wrap` into a ``TransformerBridge``, so every tvmech tool (the adapter, hook names,
:class:`tvmech.Injection`, the logit lens, OV weights) works on ``model.bridge``.

* Discrete task: ordinary token ids through the bridge's embedding and unembedding (a word-level
  tokenizer, :func:`tvmech.synthetic.icl_tasks.offset_tokenizer`): ``model.bridge`` is a complete language
  model of the prompt format.
* Continuous tasks: a learned linear read-in ``R^{d_in} -> R^{d_model}`` replaces the embedding, the
  blocks run through ``adapter.run_blocks(resid, 0, n_layers)``, and a linear read-out head maps the final
  residual, after the final norm, to a scalar.

A pass takes an :class:`~tvmech.interventions.engine.Intervention` (the read of a query state, the write of a
vector), attached on the adapter's fast path (the Hugging Face layers called directly, bit-identical to the
hooked path and several times cheaper per pass on a GPU), as TransformerLens hooks where the fast path is off.

Checkpoints: ``<dir>/model.safetensors``, one atomic file with the weights, the Adam moments (when saved) and
the metadata (model config, training config, step, loss curve) in its header; ``<dir>/checkpoint.json`` is a
readable copy of the metadata. Never pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load, save
from torch import Tensor, nn

from tvmech.core.adapter import Adapter, adapt
from tvmech.core.io import atomic_write_bytes, write_json
from tvmech.interventions.engine import Intervention, run_blocks
from tvmech.synthetic.icl_tasks import SyntheticTask, offset_tokenizer

OPTIM = "optimizer/"  # prefix of the Adam state's tensors in model.safetensors

FORMAT = "tvmech.SyntheticCheckpoint/1"


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a synthetic transformer and the seed of its initialisation."""

    n_layers: int = 4
    """Blocks."""
    d_model: int = 64
    """The residual stream's width."""
    n_heads: int = 4
    """Attention heads per block."""
    d_mlp: int = 128
    """The MLP's hidden width."""
    max_len: int = 512
    """The longest sequence (positions)."""
    seed: int = 0
    """The seed of the initial weights."""

    def __post_init__(self) -> None:
        if min(self.n_layers, self.d_model, self.n_heads, self.d_mlp, self.max_len) < 1:
            raise ValueError(f"model sizes must be positive: {self}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")


class SyntheticModel(nn.Module):
    """``bridge`` (TransformerLens, blocks + final norm [+ embedding/unembedding for discrete tasks])
    plus, for continuous tasks, ``read_in`` and ``read_out``."""

    def __init__(self, task: SyntheticTask, config: ModelConfig = ModelConfig()):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        from tvmech.core.models import wrap

        self.task, self.config = task, config
        torch.manual_seed(config.seed)
        vocab = task.vocab_size
        hf_cfg = LlamaConfig(vocab_size=vocab, hidden_size=config.d_model, intermediate_size=config.d_mlp,
                             num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
                             num_key_value_heads=config.n_heads, max_position_embeddings=config.max_len,
                             tie_word_embeddings=False, attn_implementation="eager", pad_token_id=0)
        hf = LlamaForCausalLM(hf_cfg)
        name = f"synthetic-{task.name}-L{config.n_layers}-d{config.d_model}"
        bridge = wrap(hf, offset_tokenizer(task.n_values), name)
        object.__setattr__(self, "bridge", bridge)  # not a registered submodule: its weights are hf's
        object.__setattr__(self, "hf", hf)
        self.read_in = nn.Linear(task.d_in, config.d_model) if not task.discrete else None
        self.read_out = nn.Linear(config.d_model, 1) if not task.discrete else None
        self.requires_grad_(False)

    # ----------------------------------------------------------------- views
    @property
    def adapter(self) -> Adapter:
        """The :class:`~tvmech.core.adapter.Adapter` of the wrapped blocks."""
        return adapt(self.bridge)

    @property
    def n_layers(self) -> int:
        """Blocks."""
        return self.config.n_layers

    def named_tensors(self) -> dict[str, Tensor]:
        """Every trainable tensor by a stable name (``hf.*`` for the transformer, ``read_in.*``, ``read_out.*``)."""
        out = {"hf." + k.replace("._original_component", ""): v for k, v in self.hf.named_parameters()}
        for mod in ("read_in", "read_out"):
            if getattr(self, mod) is not None:
                out |= {f"{mod}.{k}": v for k, v in getattr(self, mod).named_parameters()}
        return out

    def trainable(self, flag: bool = True) -> SyntheticModel:
        """Set ``requires_grad`` of every weight to ``flag``; returns the model."""
        for p in self.named_tensors().values():
            p.requires_grad_(flag)
        return self

    @property
    def device(self) -> torch.device:
        """Where the weights live."""
        return self.adapter.device

    def to(self, *args, **kwargs) -> SyntheticModel:  # type: ignore[override]
        super().to(*args, **kwargs)
        self.bridge.to(*args, **kwargs)
        return self

    # ----------------------------------------------------------------- running
    def embed(self, inputs: Tensor) -> Float[Tensor, "batch pos d_model"]:
        """Residual stream entering block 0: token embeddings, or the read-in of input vectors."""
        inputs = inputs.to(self.device)
        if self.task.discrete:
            return self.adapter.embed(inputs)  # fires no block-0 hook: forward() runs run_blocks from here
        return self.read_in(inputs)

    def head(self, resid: Float[Tensor, "... d_model"]) -> Tensor:
        """Predictions from final residuals: logits over the value tokens (``[..., V]``), or a scalar."""
        if self.task.discrete:
            from tvmech.synthetic.icl_tasks import VALUE0

            return self.adapter.unembed(resid)[..., VALUE0:]
        return self.read_out(self.adapter.final_norm(resid)).squeeze(-1)

    def forward(self, inputs: Tensor, intervention: Intervention | None = None) -> Float[Tensor, "batch pos d_model"]:
        """Final residual stream (before the final norm) of a prompt, with an optional intervention (its
        positions absolute: synthetic prompts are not padded)."""
        return run_blocks(self.adapter, self.embed(inputs), 0, self.n_layers, intervention=intervention)

    # ----------------------------------------------------------------- checkpoints
    def save(self, path: str | Path, *, optimizer: torch.optim.Optimizer | None = None,
             state: dict[str, Any] | None = None) -> Path:
        """Write the checkpoint as one atomic unit: ``model.safetensors`` holds the weights, the Adam state
        (``optimizer/<name>::<key>``) and the metadata (its header's ``checkpoint`` entry), so a crash leaves
        the previous checkpoint or this one, never a mix; ``checkpoint.json`` is a readable copy of the
        metadata, written after."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = self.named_tensors()
        out = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        meta = {"format": FORMAT, "task": asdict(self.task), "model": asdict(self.config), **(state or {})}
        if optimizer is not None:
            names = {id(p): k for k, p in tensors.items()}
            for group in optimizer.param_groups:
                for p in group["params"]:
                    for key, val in optimizer.state.get(p, {}).items():
                        out[f"{OPTIM}{names[id(p)]}::{key}"] = torch.as_tensor(val).detach().contiguous().cpu()
        atomic_write_bytes(path / "model.safetensors", save(out, metadata={"checkpoint": json.dumps(meta)}))
        (path / "optimizer.safetensors").unlink(missing_ok=True)  # (the separate file of older checkpoints)
        write_json(path / "checkpoint.json", meta)
        return path

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
        """The tensors of ``model.safetensors`` and the metadata in its header (``None`` in older files)."""
        from safetensors import safe_open

        file = path / "model.safetensors"
        if not file.is_file():
            raise FileNotFoundError(f"{path} holds no model.safetensors: not a synthetic checkpoint")
        with safe_open(str(file), "pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header["checkpoint"]) if "checkpoint" in header else None
        return load(file.read_bytes()), meta

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> tuple[SyntheticModel, dict[str, Any]]:
        """The model of a checkpoint directory and its metadata (training config, step, curve), both from
        ``model.safetensors`` (checkpoints written before the metadata moved there: from ``checkpoint.json``)."""
        path = Path(path)
        js = path / "checkpoint.json"
        if not js.is_file() and not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path} holds no checkpoint.json: not a synthetic checkpoint")
        saved, meta = cls._read(path)
        if meta is None:
            meta = json.loads(js.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} checkpoint")
        model = cls(SyntheticTask(**meta["task"]), ModelConfig(**meta["model"]))
        weights = {k: v for k, v in saved.items() if not k.startswith(OPTIM)}
        tensors = model.named_tensors()
        if set(weights) != set(tensors):
            differ = sorted(set(weights) ^ set(tensors))[:4]
            raise ValueError(f"{path}: checkpoint tensors do not match the model ({differ})")
        with torch.no_grad():
            for k, v in tensors.items():
                v.copy_(weights[k])
        return model.to(device), meta

    def load_optimizer_state(self, path: str | Path, optimizer: torch.optim.Optimizer) -> None:
        """Restore the Adam moments saved with :meth:`save` into ``optimizer`` (built on this model)."""
        path = Path(path)
        saved = {k[len(OPTIM):]: v for k, v in self._read(path)[0].items() if k.startswith(OPTIM)}
        if not saved and (path / "optimizer.safetensors").is_file():  # an older checkpoint
            saved = load((path / "optimizer.safetensors").read_bytes())
        if not saved:
            raise FileNotFoundError(f"{path}: the checkpoint was saved without optimizer state")
        for name, p in self.named_tensors().items():
            st = {key.split("::", 1)[1]: v.to(p.device) for key, v in saved.items() if key.split("::", 1)[0] == name}
            if st:
                optimizer.state[p] = st

