"""Training a synthetic model from scratch: ICL loss plus the task-vector prompting loss (TVP-loss).

For a batch of prompts ``x_1 y_1 … x_n y_n x_q y_q`` (one task per prompt) and a second query
``x'`` of the same task:

* ICL loss: ``L_icl = mean_i ℓ(f(prefix up to x_i), y_i)`` over every example, demonstrations and
  query (cross-entropy over the values for the discrete task, squared error for continuous ones);
* TVP-loss: the residual stream entering block ``l`` (``blocks.{l}.hook_resid_pre``) at the query
  position of the context pass, ``θ = h_l(prompt)[q]``, is injected into a separate forward pass that
  holds only the query ``x'`` at its query position: ``mode="replace"`` (default, Hendel-style
  patching) sets ``h_l(x')[q'] = θ``, ``mode="add"`` sets ``h_l(x')[q'] += θ``. Then
  ``L_tvp = ℓ(f(x' ; h_l[q'] ← θ), y')``. Gradients flow into both passes, so the context pass learns
  to write the task at layer ``l`` and the query pass learns to read it there. The read is a
  :class:`~tvmech.interventions.capture.Capture` kept in the graph (:func:`read_query`), the write a
  per-row :class:`~tvmech.interventions.injection.Injection` (:func:`write_query`).
* ``L = L_icl + λ L_tvp`` (``λ = 0``: a vanilla model; ``L_tvp`` is still logged, without gradient).

Adam; each step's batch comes from a generator seeded with ``(seed, step)``, so a run resumed from a
checkpoint (weights + Adam moments) continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from tvmech.core.progress import tqdm
from tvmech.interventions.capture import Capture
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import MODES, Mode
from tvmech.methods.training import check_every
from tvmech.synthetic.icl_tasks import SyntheticBatch, SyntheticTask, check_n_demos
from tvmech.synthetic.model import ModelConfig, SyntheticModel


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining settings of a synthetic model (the TVP loss: see the module docstring)."""

    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 64
    """Prompts per step."""
    lr: float = 1e-3
    """Learning rate."""
    tvp_weight: float = 0.0
    """λ, the weight of the TVP loss (0: plain ICL pretraining)."""
    tvp_layer: int = 2
    """The prescribed layer: ``blocks.{l}.hook_resid_pre``."""
    tvp_mode: Mode = "replace"
    """How the TVP loss's vector enters the stream: ``"replace"`` or ``"add"``."""
    n_demos: int = 6
    """Demonstrations per prompt."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    seed: int = 0
    """The seed of the data and the initialisation."""
    log_every: int = 25
    """Steps between two points of the curve."""

    def __post_init__(self) -> None:
        if not (self.tvp_weight >= 0 and math.isfinite(self.tvp_weight)):
            raise ValueError(f"the TVP-loss weight λ must be a finite number >= 0, got {self.tvp_weight}")
        if self.tvp_mode not in MODES:
            raise ValueError(f"tvp_mode {self.tvp_mode!r} is not valid; choose one of {MODES}")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.log_every < 1:
            raise ValueError(f"steps >= 0, batch_size >= 1, lr > 0, log_every >= 1 are required: {self}")
        check_n_demos(self.n_demos)

    def check_layer(self, model: SyntheticModel) -> None:
        """Refuse a ``tvp_layer`` outside ``model``'s blocks."""
        if not isinstance(self.tvp_layer, int) or not 0 <= self.tvp_layer < model.n_layers:
            raise ValueError(f"tvp_layer {self.tvp_layer!r} is out of range for a {model.n_layers}-layer model: "
                             f"valid layers are 0..{model.n_layers - 1}")


@dataclass
class TrainResult:
    """A pretrained synthetic model with its curve and settings."""

    model: SyntheticModel
    """The trained model."""
    curve: list[dict] = field(default_factory=list)
    """The losses every ``log_every`` steps."""
    config: TrainConfig = field(default_factory=TrainConfig)
    """The settings it was trained with."""


# ----------------------------------------------------------------- interventions
def read_query(layer: int, query_pos: int, *, detach: bool = True) -> Capture:
    """A :class:`~tvmech.interventions.capture.Capture` of ``blocks.{layer}.hook_resid_pre`` at ``query_pos``
    (every row's query index); ``detach=False`` keeps it in the autograd graph.

    Args:
        layer: the block whose input is read.
        query_pos: the query index, the same in every row (synthetic prompts are not padded).
        detach: cut the graph (analyses) or keep it (training).

    Returns:
        The capture; after the pass ``captured(capture, layer)`` gives ``[batch, d_model]``.
    """
    return Capture([(layer, "resid_pre")], positions=(query_pos,), detach=detach)


def captured(capture: Capture, layer: int) -> Float[Tensor, "batch d_model"]:
    """The vectors :func:`read_query` recorded at ``layer``."""
    return capture[layer, "resid_pre"][:, 0]


def write_query(vectors: Float[Tensor, "batch d_model"], layer: int, query_pos: int, mode: Mode = "replace"
                ) -> Injection:
    """Row ``b``'s own vector at ``blocks.{layer}.hook_resid_pre``, position ``query_pos``: a per-row
    :class:`~tvmech.interventions.injection.Injection` that sets ``x[b, q] = v_b`` (``"replace"``) or adds
    ``x[b, q] += v_b`` (``"add"``); gradients flow into both ``vectors`` and the pass it acts on.

    Args:
        vectors: one vector per batch row.
        layer: the block whose input is written.
        query_pos: the absolute position written, the same in every row.
        mode: ``"replace"`` or ``"add"``.

    Returns:
        The injection.
    """
    return Injection(vectors[:, None, None], (layer,), (query_pos,), mode=mode, check_finite=False)


# ----------------------------------------------------------------- losses
def prediction_loss(task: SyntheticTask, pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over the values (discrete) or squared error (continuous), averaged."""
    if task.discrete:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]).float(), target.reshape(-1).long())
    return F.mse_loss(pred.float(), target.float())


def losses(model: SyntheticModel, batch: SyntheticBatch, tvp_query: SyntheticBatch, layer: int,
           mode: Mode = "replace", tvp_grad: bool = True) -> tuple[Tensor, Tensor]:
    """``(L_icl, L_tvp)`` of a batch (see the module docstring); ``tvp_query`` holds one example per row."""
    task = model.task
    seq = task.sequence(batch, with_query_label=True)
    pos = task.pred_positions(batch.ys.shape[1])
    read = read_query(layer, int(pos[-1]), detach=False)
    final = model(seq, read)
    icl = prediction_loss(task, model.head(final[:, pos.to(final.device)]), batch.ys.to(final.device))
    theta = captured(read, layer) if tvp_grad else captured(read, layer).detach()
    with torch.set_grad_enabled(tvp_grad and torch.is_grad_enabled()):
        q_seq = task.query_sequence(tvp_query)
        q_pos = int(task.pred_positions(1)[-1])
        q_final = model(q_seq, write_query(theta, layer, q_pos, mode))
        tvp = prediction_loss(task, model.head(q_final[:, q_pos]), tvp_query.ys[:, -1].to(q_final.device))
    return icl, tvp


def step_batches(task: SyntheticTask, cfg: TrainConfig, step: int) -> tuple[SyntheticBatch, SyntheticBatch]:
    """The batch of ``step`` and its TVP queries (same task parameters), seeded by ``(seed, step)``."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    batch = task.sample(cfg.batch_size, cfg.n_demos, g)
    query = task.sample(cfg.batch_size, 0 + 1, g, params=batch.params)
    query = SyntheticBatch(query.xs[:, -1:], query.ys[:, -1:], query.params, query.clean_ys[:, -1:])
    return batch, query


# ----------------------------------------------------------------- training
def train(model: SyntheticModel, cfg: TrainConfig, *, checkpoint: str | Path | None = None, save_every: int = 0,
          resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``model`` in place for ``cfg.steps`` steps and return it with its loss curve.

    ``checkpoint``: directory written every ``save_every`` steps (if > 0) and at the end. ``resume``:
    continue from the checkpoint there (weights, Adam moments, step, curve), which must have been
    written with the same training config except ``steps``.
    """
    cfg.check_layer(model)
    task, device = model.task, model.device
    model.trainable(True)
    opt = torch.optim.Adam(list(model.named_tensors().values()), lr=cfg.lr)
    start, curve = 0, []
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs a checkpoint directory")
        saved, meta = SyntheticModel.load(checkpoint, device)
        same = {k: v for k, v in asdict(cfg).items() if k != "steps"}
        theirs = {k: v for k, v in meta.get("train", {}).items() if k != "steps"}
        if same != theirs:
            raise ValueError(f"{checkpoint} was trained with {theirs}, which differs from {same}")
        with torch.no_grad():
            for (k, p), q in zip(model.named_tensors().items(), saved.named_tensors().values()):
                p.copy_(q)
        model.load_optimizer_state(checkpoint, opt)
        start, curve = int(meta["step"]), list(meta.get("curve", []))

    def save(step: int) -> None:
        if checkpoint is not None:
            model.save(checkpoint, optimizer=opt, state={"train": asdict(cfg), "step": step, "curve": curve})

    bar = tqdm(range(start, cfg.steps), desc=f"train {task.name} λ={cfg.tvp_weight} L{cfg.tvp_layer}",
               disable=not progress, leave=False)
    acc = {"icl": 0.0, "tvp": 0.0, "n": 0}
    pending: list[tuple[int, Tensor]] = []  # (step, [loss, icl, tvp]) on the device, not read back yet
    every = check_every(device)  # (a non-finite loss is reported at its own step, when read back)

    def read_back() -> None:  # the pending losses: finite, then into the running means (in step order)
        values = torch.stack([v for _, v in pending]).tolist() if pending else []
        for (step, _), (total, icl, tvp) in zip(pending, values):
            if not math.isfinite(total):
                raise RuntimeError(f"the loss became {total} at step {step}; lower the learning rate")
            acc["icl"] += icl
            acc["tvp"] += tvp
            acc["n"] += 1
        pending.clear()

    for step in bar:
        batch, query = step_batches(task, cfg, step)
        icl, tvp = losses(model, batch.to(device), query.to(device), cfg.tvp_layer, cfg.tvp_mode,
                          tvp_grad=cfg.tvp_weight > 0)
        loss = icl + cfg.tvp_weight * tvp if cfg.tvp_weight > 0 else icl
        pending.append((step, torch.stack([loss, icl, tvp]).detach()))
        logged = (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps
        saving = bool(save_every) and (step + 1) % save_every == 0
        if (step + 1) % every == 0 or logged or saving:  # before any update from a non-finite loss is logged or saved
            read_back()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(model.named_tensors().values()), cfg.grad_clip)
        opt.step()
        if logged:
            rec = {"step": step + 1, "icl_loss": acc["icl"] / acc["n"], "tvp_loss": acc["tvp"] / acc["n"]}
            curve.append(rec)
            acc.update(icl=0.0, tvp=0.0, n=0)
            bar.set_postfix(icl=f"{rec['icl_loss']:.3f}", tvp=f"{rec['tvp_loss']:.3f}")
        if saving:
            save(step + 1)
    save(cfg.steps)
    model.trainable(False)
    return TrainResult(model, curve, cfg)


def train_new(task: SyntheticTask, model_config: ModelConfig, cfg: TrainConfig, **kw) -> TrainResult:
    """Build a fresh model (seeded by ``model_config.seed``) and train it."""
    return train(SyntheticModel(task, model_config), cfg, **kw)
