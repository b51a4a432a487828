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

llama.cpp's semantics. ``positions="all", point="resid_post"`` trains θ added to block ``l``'s output at every
token (no frozen prefix then), which is exactly a llama.cpp control vector ``direction.{l}``
(:meth:`TaskVector.to_control_vector`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.evaluation import check_context, evaluate_prompts_multi
from tvmech.core.adapter import Adapter, adapt
from tvmech.core.checks import as_ints, check_bool, check_choice, check_float, check_int
from tvmech.data.prompts import make_prompts
from tvmech.data.tasks import Example, Task, train_val
from tvmech.interventions.engine import compose
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import (
    RESIDUAL_POINTS,
    Point,
    Position,
    as_positions,
    check_point,
    every_position,
    resolve_positions,
)
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
Schedule = Literal["constant", "linear"]
StopOn = Literal["loss", "accuracy"]


@dataclass(frozen=True)
class LTVConfig:
    """LTV training settings; every field is checked on construction (numpy numbers are turned into Python
    ones, so the config stays JSON-serialisable).

    Fields: ``lr`` (> 0, not NaN; ``inf`` diverges at once, with :class:`TrainingDiverged`), ``lr_unit``
    (``"resid_norm"`` or ``"absolute"``), ``weight_decay`` (finite, >= 0), ``steps``, ``batch_size`` and
    ``eval_every`` (integers >= 1), ``init`` (``"zeros"`` or ``"uniform"``), ``init_scale`` (finite, >= 0),
    ``first_token_only`` (bool), ``patience`` (``None`` or an integer >= 1), ``seed`` and ``k`` (integers
    >= 0), ``lr_schedule`` (``"constant"`` or ``"linear"``), ``select_on`` (``"loss"`` or ``"accuracy"``),
    ``pool`` (``None`` or an integer >= 2) and ``pool_train_share`` (in (0, 1)). Integers refuse ``bool`` and
    non-integral numbers.
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
    # "linear": the lr decays linearly to zero over ``steps`` (step t uses lr·(1 − t/steps); with batch_size 1,
    # stepped once per sample); "constant": no schedule
    lr_schedule: Schedule = "constant"
    # what validation keeps the best vector by and early stopping waits on: "loss" (mean label NLL) or "accuracy"
    # (zero-shot first-token accuracy over the full vocabulary, argmax at the query, with the vector injected)
    select_on: StopOn = "loss"
    # None: train on the task's train split, validate on its val split; an integer: those two splits pooled (train
    # then val, both seeded shuffles; at most ``pool`` examples) and cut into train (``pool_train_share`` of them)
    # and validation (the rest), the test split untouched
    pool: int | None = None
    pool_train_share: float = 0.6

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
            "lr_schedule": check_choice(self.lr_schedule, name("lr_schedule"), get_args(Schedule)),
            "select_on": check_choice(self.select_on, name("select_on"), get_args(StopOn)),
            "pool": None if self.pool is None else check_int(self.pool, name("pool"), minimum=2),
            "pool_train_share": check_float(self.pool_train_share, name("pool_train_share"), minimum=0.0,
                                            inclusive=False),
        }
        if not checked["pool_train_share"] < 1:
            raise ValueError(f"LTVConfig.pool_train_share {self.pool_train_share!r} is not valid: it must be in (0, 1)")
        for f, value in checked.items():
            object.__setattr__(self, f, value)

    def record(self) -> dict:
        """The fields as a dict (what a trained vector's ``config`` holds and a saved vector is matched by), less
        :data:`LATER_FIELDS` while at their defaults, so that vectors saved before those fields existed still
        match."""
        out = asdict(self)
        for f, default in LATER_FIELDS.items():
            if out[f] == default:
                del out[f]
        return out

    @classmethod
    def paper(cls, **changes) -> LTVConfig:
        """The paper's settings: absolute lr 1e-3, weight decay 0.01."""
        return cls(**{"lr": 1e-3, "lr_unit": "absolute", "weight_decay": 0.01, **changes})

    @classmethod
    def released(cls, **changes) -> LTVConfig:
        """The authors' released training recipe, *as reported* by a public reproduction that compared the paper
        with the released code (not checked against that code here).

        As reported: one vector at the input of the middle layer, last token (the caller's sites: ``layers=
        (n_layers // 2,)``, ``positions=(-1,)``); init uniform in (−0.1, 0.1) (absolute); AdamW, weight decay 0.01,
        lr 5e-3 (the paper's text says 1e-3, :meth:`paper`) decayed linearly to zero, stepped once per sample;
        batch size 1; at most 10 epochs of 100 samples (1,000 steps, an evaluation after each epoch); early
        stopping with patience 2 on full-vocabulary validation accuracy; cross-entropy on the gold label's first
        token; zero-shot prompts; a pool of 1,000 examples split 600 train / 400 validation.

        Here: ``steps=1000, batch_size=1, eval_every=100, patience=2, select_on="accuracy", lr=5e-3`` absolute,
        ``lr_schedule="linear"`` (over the 1,000 planned steps, also when stopped early), ``init="uniform"``,
        ``init_scale=0.1``, ``first_token_only=True``, ``k=0``, ``pool=1000``, ``pool_train_share=0.6``. The
        built-in tasks hold 144 to 329 examples, so the pool is their train and validation splits together (65%:
        94 to 213 examples), min(1,000, available), split 60/40: smaller than the recipe's.
        """
        return cls(**{"lr": 5e-3, "lr_unit": "absolute", "weight_decay": 0.01, "steps": 1000, "batch_size": 1,
                      "eval_every": 100, "patience": 2, "select_on": "accuracy", "lr_schedule": "linear",
                      "init": "uniform", "init_scale": 0.1, "first_token_only": True, "k": 0, "pool": 1000,
                      "pool_train_share": 0.6, **changes})


# fields added after vectors were first saved, with their defaults (left out of LTVConfig.record while at them)
LATER_FIELDS = {"lr_schedule": "constant", "select_on": "loss", "pool": None, "pool_train_share": 0.6}


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
    loss = LabelLoss(ad, forward, copies=1 if forked else G, positions=None if every_position(positions) else positions)
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
    splits = () if every_position(positions) else (data,) if vdata is None else (data, vdata)
    for d in splits:  # fail early on bad positions, on every split ("all" has none to resolve)
        resolve_positions(positions, d.batch.query_pos, d.batch.tokens.shape[1], d.batch.roles)
    gen = torch.Generator().manual_seed(cfg.seed)
    obj, scales = ltv_objective(ad, data, layer_groups, positions, shared=shared, point=point, config=cfg,
                                generator=gen)
    val_score = None
    if cfg.select_on == "accuracy" and val:
        val_prompts = make_prompts(task, val, cfg.k, train, seed=cfg.seed)

        def val_score() -> list[float]:  # minus each group's full-vocabulary validation accuracy
            return [-evaluate_prompts_multi(ad, task, val_prompts, ("first_token",), intervention=Injection(
                v, ls, positions, point))["first_token"].accuracy for v, ls in zip(obj.values(), layer_groups)]

    def snapshot(tensors: list[Tensor]) -> list[TaskVector]:
        return [TaskVector.for_model(ad, v, ls, positions, point=point, task=task.name, method="ltv",
                                     config=cfg.record()) for v, ls in zip(tensors, layer_groups)]

    G = len(layer_groups)
    run = fit(obj, data, steps=cfg.steps, batch_size=cfg.batch_size, generator=gen, val=vdata,
              eval_every=cfg.eval_every, patience=cfg.patience, progress=progress, on_diverge=snapshot,
              desc=f"LTV {task.name} layers {layer_groups if G > 1 else layer_groups[0]}", val_score=val_score,
              schedule=(lambda t: 1 - t / cfg.steps) if cfg.lr_schedule == "linear" else None)
    out = snapshot(run.best)
    for g, tv in enumerate(out):
        tv.curve = [dict(r) for r in run.curve]
        step_sizes = [cfg.lr * float(x) for x in scales[g].flatten()]
        best = {"best_val_loss": run.best_val[g]} if val_score is None else {"best_val_accuracy": -run.best_val[g]}
        tv.metrics = {**best, "steps_run": run.steps_run, "stopped_early": run.stopped_early,
                      "lr_effective": step_sizes[0], "lr_per_layer": step_sizes, "norm": float(tv.vectors.norm()),
                      "n_train": len(train), "n_val": len(val)}
    return out


def _splits(task: Task, train, val, config: LTVConfig) -> tuple[Sequence[Example], Sequence[Example]]:
    """``train``/``val`` where given, else the task's splits (seed ``config.seed``), pooled when ``config.pool``
    is set (:func:`pooled_splits`)."""
    if config.pool is not None and train is None and val is None:
        return pooled_splits(task, config.seed, config.pool, config.pool_train_share)
    return train_val(task, train, val, config.seed)


def pooled_splits(task: Task, seed: int, pool: int, train_share: float) -> tuple[list[Example], list[Example]]:
    """The task's train and validation splits pooled (train first; at most ``pool`` examples, min(pool, available))
    and cut into a train part (``round(train_share · n)``, at least one) and a validation part (the rest); the test
    split is left out, so test accuracy stays held out.

    Args:
        task: the task.
        seed: the seed of its splits.
        pool: the most examples pooled.
        train_share: the share of the pool trained on.

    Returns:
        ``(train, val)``.
    """
    sp = task.splits(seed)
    both = [*sp.train, *sp.val][:pool]
    n = min(len(both) - 1, max(1, round(train_share * len(both))))
    if n < 1:
        raise ValueError(f"task {task.name!r}: {len(both)} example(s) to pool; at least 2 are needed")
    return both[:n], both[n:]


def learn_task_vector(model, task: Task, train: Sequence[Example] | None = None, val: Sequence[Example] | None = None,
                      *, layers: Sequence[int] | None = None, positions: Sequence[Position] = (-1,),
                      shared: bool = False, point: Point = "resid_pre", config: LTVConfig = LTVConfig(),
                      progress: bool = True) -> TaskVector:
    """Train one Learned Task Vector (one vector per layer/position site, or one shared vector).

    Args:
        model: a TransformerLens model or its adapter.
        task: the task; ``train``/``val`` default to its splits with ``config.seed``.
        layers, positions: the sites (positions negative: relative to the query; a string: a role of the prompt,
            :data:`~tvmech.interventions.sites.ROLES`, resolved per row, or ``"all"``: every token, which with
            ``point="resid_post"`` is llama.cpp's control-vector semantics); each one or a sequence of them (Python,
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
    train, val = _splits(task, train, val, config)
    layers = (adapt(model).middle_layer,) if layers is None else layers
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
    train, val = _splits(task, train, val, config)
    layers, positions = as_ints(layers, "layer"), as_positions(positions, "position")
    return _train(model, task, train, val, [(layer,) for layer in layers], positions, False, point, config, progress)


__all__ = ["LTVConfig", "LrUnit", "Init", "Schedule", "StopOn", "TrainingDiverged", "ltv_objective",
           "learn_task_vector", "learn_layer_sweep", "pooled_splits"]
