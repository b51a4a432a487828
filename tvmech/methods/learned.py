"""Learned Task Vectors (Yang et al., "Task Vectors, Learned Not Extracted", ICLR 2026).

With the model frozen, the vectors θ injected at the query are trained to minimise the negative
log-likelihood of the label given the *zero-shot* prompt,

    L(θ) = mean over prompts of  -(1/|y|) Σ_t log p(y_t | x, y_<t ; h_l[q] += θ)

(``first_token_only``: the first label token alone), with AdamW, in the shared loop of
:mod:`tvmech.methods.training` (seeded batches, divergence handling, early stopping on validation).

Step size. Adam moves each coordinate by about ``lr`` per step, so how far θ can travel in a few
hundred steps is set by ``lr``, while how far it must travel is set by the residual norm at the
injection layer (about 90 at layer 5, 150 at layer 15 and 450 at layer 25 on SmolLM2-135M). The
default therefore measures ``lr`` in units of that norm: step = ``lr × mean‖h_l[q]‖`` (3e-4 × 150 ≈
0.045 at layer 15); with several layers, each layer's vector gets its own layer's norm (the vectors are
trained as θ = norm ⊙ φ with Adam on φ, and the decoupled weight decay on φ is ``wd × norm``, so that θ
decays by ``lr × norm × wd`` per step as a plain θ would). ``LTVConfig.paper()`` restores the paper's
absolute lr 1e-3 with weight decay 0.01.

Efficiency. The frozen blocks below the lowest injection layer run once, without gradients, for all
training prompts; each step runs only the remaining blocks, only the positions from the first written one on
(the training loop's fast lane, :mod:`tvmech.methods.training`), and computes logits only at the label
positions. :func:`learn_layer_sweep` trains one vector per layer in a single batched forward/backward:
the batch is replicated once per layer (a row group) and each group gets its own vector at its own
layer: one :class:`~tvmech.interventions.injection.Injection` with ``rows=(g·B, (g+1)·B)`` per group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.evaluation import check_context
from tvmech.core.adapter import Adapter, adapt
from tvmech.core.checks import as_ints, check_bool, check_choice, check_float, check_int
from tvmech.data.prompts import make_prompts
from tvmech.data.tasks import Example, Task
from tvmech.interventions.engine import compose
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import RESIDUAL_POINTS, Point, Position, as_positions, check_point, resolve_positions
from tvmech.interventions.sweep import forked_run
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.training import (
    LabelLoss,
    Objective,
    Rows,
    TrainData,
    TrainingDiverged,
    fit,
    prepare_data,
    query_norms,
)

LrUnit = Literal["resid_norm", "absolute"]
Init = Literal["zeros", "uniform"]


@dataclass(frozen=True)
class LTVConfig:
    """LTV training settings; every field is checked on construction (numpy numbers are turned into Python
    ones, so the config stays JSON-serialisable).

    Fields: ``lr`` (> 0, not NaN; ``inf`` diverges at once, with :class:`TrainingDiverged`), ``lr_unit``
    (``"resid_norm"`` or ``"absolute"``), ``weight_decay`` (finite, >= 0), ``steps``, ``batch_size`` and
    ``eval_every`` (integers >= 1), ``init`` (``"zeros"`` or ``"uniform"``), ``init_scale`` (finite, >= 0),
    ``first_token_only`` (bool), ``patience`` (``None`` or an integer >= 1), ``seed`` and ``k`` (integers
    >= 0). Integers refuse ``bool`` and non-integral numbers.
    """

    lr: float = 3e-4
    lr_unit: LrUnit = "resid_norm"  # "resid_norm" (lr x mean query residual norm) or "absolute"
    weight_decay: float = 0.01
    steps: int = 150
    batch_size: int = 16
    init: Init = "zeros"  # "zeros" or "uniform" (seeded, in +-init_scale, same unit as lr)
    init_scale: float = 1e-3
    first_token_only: bool = False
    eval_every: int = 25
    patience: int | None = None  # evaluations without validation improvement before stopping (>= 1)
    seed: int = 0
    k: int = 0  # demonstrations in the training prompts (0: zero-shot, the paper's setting)

    def __post_init__(self) -> None:
        def name(f: str) -> str:
            return f"LTVConfig.{f}"

        checked = {
            # lr=inf is accepted: the step is then non-finite and training stops with TrainingDiverged
            "lr": check_float(self.lr, name("lr"), minimum=0.0, inclusive=False, finite=False),
            "lr_unit": check_choice(self.lr_unit, name("lr_unit"), get_args(LrUnit)),
            "weight_decay": check_float(self.weight_decay, name("weight_decay"), minimum=0.0),
            "steps": check_int(self.steps, name("steps"), minimum=1),
            "batch_size": check_int(self.batch_size, name("batch_size"), minimum=1),
            "init": check_choice(self.init, name("init"), get_args(Init)),
            "init_scale": check_float(self.init_scale, name("init_scale"), minimum=0.0),
            "first_token_only": check_bool(self.first_token_only, name("first_token_only")),
            "eval_every": check_int(self.eval_every, name("eval_every"), minimum=1),
            "patience": None if self.patience is None else check_int(self.patience, name("patience"), minimum=1),
            "seed": check_int(self.seed, name("seed"), minimum=0),
            "k": check_int(self.k, name("k"), minimum=0),
        }
        for f, value in checked.items():
            object.__setattr__(self, f, value)

    @classmethod
    def paper(cls, **changes) -> LTVConfig:
        """The paper's settings: absolute lr 1e-3, weight decay 0.01."""
        return cls(**{"lr": 1e-3, "lr_unit": "absolute", "weight_decay": 0.01, **changes})


def ltv_objective(ad: Adapter, data: TrainData, layer_groups: Sequence[tuple[int, ...]],
                  positions: tuple[Position, ...], *, shared: bool = False, point: Point = "resid_pre",
                  config: LTVConfig = LTVConfig(), generator: torch.Generator | None = None, fork: bool = True
                  ) -> tuple[Objective, list[Float[Tensor, "n 1 1"]]]:
    """The LTV objective: group ``g`` adds its vectors at ``layer_groups[g]`` to its copy of the batch.

    Args:
        ad: the model's adapter.
        data: training data prepared at block ``min`` of all layers.
        layer_groups: the layers of each group (one group per layer for a sweep).
        positions: injection positions (negative: relative to the query; a string: a role, resolved per row).
        shared: one vector for all of a group's sites.
        point: where the vectors are added.
        config: lr, its unit, weight decay and initialisation.
        generator: draws the ``"uniform"`` initialisation (then the batch order, in :func:`fit`).
        fork: run a sweep (several groups of one ``resid_pre`` layer each) as one clean batch forking at each
            group's layer (:func:`~tvmech.interventions.sweep.forked_run`) instead of one copy per group
            through every block; the same losses (to float rounding), about half the work.

    Returns:
        The :class:`Objective` (its values: each group's θ) and each group's scale (θ = scale ⊙ φ;
        ``[n_layers or 1, 1, 1]``).
    """
    gen = torch.Generator().manual_seed(config.seed) if generator is None else generator
    layer_groups = [as_ints(ls, "layer") for ls in layer_groups]
    positions = as_positions(positions, "position")
    params, scales = [], []
    if config.lr_unit == "resid_norm":  # every group's norms from one pass through the blocks
        all_norms = query_norms(ad, data, [l + (point == "resid_post") for ls in layer_groups for l in ls])
    for ls in layer_groups:
        if config.lr_unit == "resid_norm":
            at = [layer + (point == "resid_post") for layer in ls]
            norms = torch.tensor([all_norms[layer] for layer in at])
        else:
            norms = torch.ones(len(ls))
        scale = norms.mean().view(1, 1, 1) if shared else norms.view(-1, 1, 1)
        shape = (1, 1, ad.d_model) if shared else (len(ls), len(positions), ad.d_model)
        if config.init == "zeros":
            init = torch.zeros(shape)
        else:
            init = (torch.rand(shape, generator=gen) * 2 - 1) * config.init_scale
        # float32 vectors whatever the model's dtype (bfloat16 compute, float32 vectors and loss)
        params.append(init.to(ad.device, torch.float32).requires_grad_(True))
        scales.append(scale.to(ad.device, torch.float32))

    def vectors() -> list[Tensor]:
        return [p * sc for p, sc in zip(params, scales)]

    forked = fork and len(layer_groups) > 1 and point == "resid_pre" and all(len(ls) == 1 for ls in layer_groups)
    G = len(layer_groups)

    def forward(rows: Rows) -> Tensor:
        if forked:  # a sweep: one clean batch forking at each group's layer (about half the row-blocks)
            return forked_run(ad, rows.resid, rows.start, [Injection(v, ls, positions, point, check_finite=False)
                                                           for v, ls in zip(vectors(), layer_groups)],
                              rows.ctx, prefix=rows.prefix)
        n = len(rows.resid) // G  # one copy of the batch per group
        return rows.run(compose([Injection(v, ls, positions, point, rows=(g * n, (g + 1) * n), check_finite=False)
                                 for g, (v, ls) in enumerate(zip(vectors(), layer_groups))]))

    # the training loop's fast lane freezes the positions before the first written one (per split)
    loss = LabelLoss(ad, forward, copies=1 if forked else G, positions=positions)
    loss.lane(data)  # the positions resolved on the training rows now: a bad one fails before any step
    obj = Objective([[p] for p in params], [config.lr] * len(params),
                    [config.weight_decay * float(sc.mean()) for sc in scales], loss,
                    lambda: [v.detach().clone() for v in vectors()], [f"layers {ls}" for ls in layer_groups])
    return obj, scales


def _check_sites(ad: Adapter, layer_groups: Sequence[tuple[int, ...]], point: str) -> None:
    check_point(point, RESIDUAL_POINTS)
    if not layer_groups or not all(layer_groups):
        raise ValueError(f"every group needs at least one layer, got {list(layer_groups)}")
    for ls in layer_groups:
        for layer in ls:
            ad.check_layer(layer)


def _train(model, task: Task, train: Sequence[Example], val: Sequence[Example], layer_groups: list[tuple[int, ...]],
           positions: tuple[Position, ...], shared: bool, point: Point, cfg: LTVConfig, progress: bool
           ) -> list[TaskVector]:
    ad = adapt(model)
    _check_sites(ad, layer_groups, point)
    for split, examples in (("training", train), ("validation", val)):
        if examples:  # prepare_data's prompts, checked before any forward pass
            check_context(ad, task, make_prompts(task, examples, cfg.k, train, seed=cfg.seed), with_labels=True,
                          what=f"{split} prompt")
    start = min(min(ls) for ls in layer_groups)
    prep = dict(first_token_only=cfg.first_token_only, k=cfg.k, demos=train, seed=cfg.seed)
    data = prepare_data(ad, task, train, start, **prep)
    vdata = prepare_data(ad, task, val, start, **prep) if val else None
    for d in (data, vdata) if vdata is not None else (data,):  # fail early on bad positions, on every split
        resolve_positions(positions, d.batch.query_pos, d.batch.tokens.shape[1], d.batch.roles)
    gen = torch.Generator().manual_seed(cfg.seed)
    obj, scales = ltv_objective(ad, data, layer_groups, positions, shared=shared, point=point, config=cfg,
                                generator=gen)

    def snapshot(tensors: list[Tensor]) -> list[TaskVector]:
        return [TaskVector.for_model(ad, v, ls, positions, point=point, task=task.name, method="ltv",
                                     config=asdict(cfg)) for v, ls in zip(tensors, layer_groups)]

    G = len(layer_groups)
    run = fit(obj, data, steps=cfg.steps, batch_size=cfg.batch_size, generator=gen, val=vdata,
              eval_every=cfg.eval_every, patience=cfg.patience, progress=progress, on_diverge=snapshot,
              desc=f"LTV {task.name} layers {layer_groups if G > 1 else layer_groups[0]}")
    out = snapshot(run.best)
    for g, tv in enumerate(out):
        tv.curve = [dict(r) for r in run.curve]
        step_sizes = [cfg.lr * float(x) for x in scales[g].flatten()]
        tv.metrics = {"best_val_loss": run.best_val[g], "steps_run": run.steps_run, "lr_effective": step_sizes[0],
                      "lr_per_layer": step_sizes, "norm": float(tv.vectors.norm())}
    return out


def _splits(task: Task, train, val, seed: int) -> tuple[Sequence[Example], Sequence[Example]]:
    sp = task.splits(seed)
    return (sp.train if train is None else train), (sp.val if val is None else val)


def learn_task_vector(model, task: Task, train: Sequence[Example] | None = None, val: Sequence[Example] | None = None,
                      *, layers: Sequence[int] | None = None, positions: Sequence[Position] = (-1,),
                      shared: bool = False, point: Point = "resid_pre", config: LTVConfig = LTVConfig(),
                      progress: bool = True) -> TaskVector:
    """Train one Learned Task Vector (one vector per layer/position site, or one shared vector).

    Args:
        model: a TransformerLens model or its adapter.
        task: the task; ``train``/``val`` default to its splits with ``config.seed``.
        layers, positions: the sites (positions negative: relative to the query; a string: a role of the prompt,
            :data:`~tvmech.interventions.sites.ROLES`, resolved per row); each one or a sequence of them (Python,
            numpy or 0-d tensor integers); ``layers=None``: the middle layer ``n_layers // 2`` (15 on the 30-layer
            default model).
        shared: one vector for every site.
        point: ``resid_pre`` (default), ``resid_post``, ``attn_out`` or ``mlp_out``.
        config: the training settings.
        progress: show a progress bar.

    Returns:
        The vector with the lowest validation loss (evaluated every ``config.eval_every`` steps and after
        the last), or the final one without validation; ``curve`` and ``metrics`` filled in. Raises
        :class:`TrainingDiverged` (with ``.last_good``) on a NaN/inf loss.
    """
    train, val = _splits(task, train, val, config.seed)
    layers = (adapt(model).n_layers // 2,) if layers is None else layers
    layers, positions = as_ints(layers, "layer"), as_positions(positions, "position")
    return _train(model, task, train, val, [layers], positions, shared, point, config, progress)[0]


def learn_layer_sweep(model, task: Task, layers: Sequence[int], train: Sequence[Example] | None = None,
                      val: Sequence[Example] | None = None, *, positions: Sequence[Position] = (-1,),
                      point: Point = "resid_pre", config: LTVConfig = LTVConfig(), progress: bool = True
                      ) -> list[TaskVector]:
    """One LTV per layer in ``layers``, all trained together in one batched forward/backward per step.

    Equivalent to calling :func:`learn_task_vector` for each layer with the same config and seed (the
    groups share the batch order; each keeps its own best validation loss; early stopping waits for all).

    Args:
        model: a TransformerLens model or its adapter.
        task: the task.
        layers: one integer or a sequence of them: a vector is trained for each.
        train, val: as for :func:`learn_task_vector`.
        positions: the injection positions (one integer or role, or a sequence).
        point: where the vectors are added.
        config: the training settings.
        progress: show a progress bar.

    Returns:
        One :class:`TaskVector` per layer, in the order of ``layers``.
    """
    train, val = _splits(task, train, val, config.seed)
    layers, positions = as_ints(layers, "layer"), as_positions(positions, "position")
    return _train(model, task, train, val, [(layer,) for layer in layers], positions, False, point, config, progress)


__all__ = ["LTVConfig", "LrUnit", "Init", "TrainingDiverged", "ltv_objective", "learn_task_vector",
           "learn_layer_sweep"]
