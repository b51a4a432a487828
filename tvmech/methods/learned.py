"""Learned Task Vectors (Yang et al., "Task Vectors, Learned Not Extracted", ICLR 2026).

With the model frozen, the vectors θ injected at the query are trained to minimise the negative
log-likelihood of the label given the *zero-shot* prompt,

    L(θ) = mean over prompts of  -(1/|y|) Σ_t log p(y_t | x, y_<t ; h_l[q] += θ)

(``first_token_only``: the first label token alone), with AdamW.

Step size. Adam moves each coordinate by about ``lr`` per step, so how far θ can travel in a few
hundred steps is set by ``lr``, while how far it must travel is set by the residual norm at the
injection layer (about 90 at layer 5, 150 at layer 15 and 450 at layer 25 on SmolLM2-135M). The
default therefore measures ``lr`` in units of that norm: step = ``lr × mean‖h_l[q]‖`` (3e-4 × 150 ≈
0.045 at layer 15); with several layers, each layer's vector gets its own layer's norm (the vectors are
trained as θ = norm ⊙ φ with Adam on φ). ``LTVConfig.paper()`` restores the paper's absolute lr 1e-3 with weight decay 0.01.

Efficiency. The frozen blocks below the lowest injection layer run once, without gradients, for all
training prompts; each step runs only the remaining blocks and computes logits only at the label
positions. :func:`learn_layer_sweep` trains one vector per layer in a single batched forward/backward:
the batch is replicated once per layer and each replica gets its own vector at its own layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from tvmech.core.adapter import Adapter, HookFn, adapt
from tvmech.interventions.sites import resolve_positions
from tvmech.data.prompts import Batch, encode, make_prompts
from tvmech.data.tasks import Example, Task
from tvmech.interventions.task_vector import TaskVector


@dataclass(frozen=True)
class LTVConfig:
    lr: float = 3e-4
    lr_unit: str = "resid_norm"  # "resid_norm" (lr x mean query residual norm) or "absolute"
    weight_decay: float = 0.01
    steps: int = 150
    batch_size: int = 16
    init: str = "zeros"  # "zeros" or "uniform" (seeded, in +-init_scale, same unit as lr)
    init_scale: float = 1e-3
    first_token_only: bool = False
    eval_every: int = 25
    patience: int | None = None  # evaluations without validation improvement before stopping
    seed: int = 0
    k: int = 0  # demonstrations in the training prompts (0: zero-shot, the paper's setting)

    def __post_init__(self) -> None:
        if self.lr_unit not in ("resid_norm", "absolute"):
            raise ValueError(f"lr_unit {self.lr_unit!r} is not valid; choose 'resid_norm' or 'absolute'")
        if self.init not in ("zeros", "uniform"):
            raise ValueError(f"init {self.init!r} is not valid; choose 'zeros' or 'uniform'")
        if self.lr <= 0 or self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"lr, steps and batch_size must be positive (got {self.lr}, {self.steps}, {self.batch_size})")

    @classmethod
    def paper(cls, **changes) -> LTVConfig:
        """The paper's settings: absolute lr 1e-3, weight decay 0.01."""
        return cls(**{"lr": 1e-3, "lr_unit": "absolute", "weight_decay": 0.01, **changes})


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; ``last_good`` holds the vectors from before that step."""

    def __init__(self, message: str, last_good: list[TaskVector]):
        super().__init__(message)
        self.last_good = last_good


@dataclass
class _Data:
    resid: Tensor  # [N, T, d] residual entering block `start`, right-padded
    batch: Batch


def _prepare(ad: Adapter, task: Task, examples: Sequence[Example], start: int, first_token_only: bool,
             k: int = 0, demos: Sequence[Example] = (), seed: int = 0) -> _Data:
    if not examples:
        raise ValueError(f"task {task.name!r}: the training split is empty")
    prompts = make_prompts(task, examples, k, demos, seed=seed)
    batch = encode(ad.tokenizer, task, prompts, with_labels=True).to(ad.device)
    if first_token_only:
        keep = torch.zeros_like(batch.targets, dtype=torch.bool)
        keep[torch.arange(len(batch)), batch.query_pos] = True
        batch.targets = torch.where(keep, batch.targets, -100)
    with torch.no_grad():
        resid = ad.residual(batch.tokens, start)
    return _Data(resid, batch)


def _rows(data: _Data, idx: Tensor, copies: int) -> tuple[Tensor, Batch]:
    width = int(data.batch.lengths[idx].max())
    rep = idx.repeat(copies)
    b = data.batch
    sub = Batch(b.tokens[rep, :width], b.query_pos[rep], b.label_first[rep], b.targets[rep, :width], b.lengths[rep])
    return data.resid[rep, :width], sub


def _group_hooks(ad: Adapter, params: list[Tensor], layers: list[tuple[int, ...]], positions: tuple[int, ...],
                 point: str, rows_per_group: int, query_pos: Tensor) -> list[tuple[str, HookFn]]:
    """Hooks adding ``params[g][i]`` at ``layers[g][i]`` to the rows of group ``g`` only."""
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for g, ls in enumerate(layers):
        for i, layer in enumerate(ls):
            by_layer.setdefault(layer, []).append((g, i))

    def make(sites: list[tuple[int, int]]) -> HookFn:
        def hook(x: Tensor, hook=None) -> Tensor:
            rows, cols, vals = [], [], []
            for g, i in sites:
                sl = slice(g * rows_per_group, (g + 1) * rows_per_group)
                idx = resolve_positions(positions, query_pos[sl], x.shape[1])
                r = torch.arange(sl.start, sl.stop, device=x.device)[:, None].expand_as(idx)
                v = params[g][0 if params[g].shape[0] == 1 else i].expand(len(positions), -1)
                rows.append(r.reshape(-1))
                cols.append(idx.reshape(-1))
                vals.append(v[None].expand(idx.shape[0], -1, -1).reshape(-1, x.shape[-1]))
            return x.index_put((torch.cat(rows), torch.cat(cols)), torch.cat(vals).to(x.dtype), accumulate=True)

        return hook

    return [(ad.hook_name(layer, point), make(sites)) for layer, sites in by_layer.items()]


def _row_nll(ad: Adapter, resid: Tensor, batch: Batch, start: int, hooks) -> Tensor:
    """Per-row NLL of the label tokens, averaged over each row's label tokens."""
    with ad.hooks(hooks):
        final = ad.run_blocks(resid, start)
    mask = batch.label_mask
    nll = F.cross_entropy(ad.unembed(final[mask]).float(), batch.targets[mask], reduction="none")
    row_of = mask.nonzero()[:, 0]
    return torch.zeros(len(batch), device=nll.device).index_add(0, row_of, nll) / mask.sum(1)


def _query_norm(ad: Adapter, data: _Data, start: int, layer: int) -> float:
    with torch.no_grad():
        h = ad.run_blocks(data.resid, start, layer)
    return float(h[torch.arange(len(data.batch)), data.batch.query_pos].norm(dim=-1).mean())


def _train(model, task: Task, train: Sequence[Example], val: Sequence[Example], layer_groups: list[tuple[int, ...]],
           positions: tuple[int, ...], shared: bool, point: str, cfg: LTVConfig, progress: bool) -> list[TaskVector]:
    ad = adapt(model)
    for ls in layer_groups:
        for layer in ls:
            ad.hook_name(layer, point)
    start = min(min(ls) for ls in layer_groups)
    data = _prepare(ad, task, train, start, cfg.first_token_only, cfg.k, train, cfg.seed)
    vdata = _prepare(ad, task, val, start, cfg.first_token_only, cfg.k, train, cfg.seed) if val else None
    resolve_positions(positions, data.batch.query_pos, data.batch.tokens.shape[1])  # fail early on bad positions
    gen = torch.Generator().manual_seed(cfg.seed)
    # θ = scale ⊙ φ: Adam steps φ by ~lr, so each layer's vector moves by ~lr x that layer's residual norm
    params, scales = [], []
    for ls in layer_groups:
        if cfg.lr_unit == "resid_norm":
            norms = torch.tensor([_query_norm(ad, data, start, l + (point == "resid_post")) for l in ls])
        else:
            norms = torch.ones(len(ls))
        scale = norms.mean().view(1, 1, 1) if shared else norms.view(-1, 1, 1)
        shape = (1, 1, ad.d_model) if shared else (len(ls), len(positions), ad.d_model)
        init = torch.zeros(shape) if cfg.init == "zeros" else (torch.rand(shape, generator=gen) * 2 - 1) * cfg.init_scale
        params.append(init.to(ad.device, ad.dtype).requires_grad_(True))
        scales.append(scale.to(ad.device, ad.dtype))
    # decoupled weight decay on φ scaled so that θ decays by lr x norm x wd per step, as with a plain θ
    opt = torch.optim.AdamW([{"params": [p], "lr": cfg.lr, "weight_decay": cfg.weight_decay * float(sc.mean())}
                             for p, sc in zip(params, scales)])

    def vectors() -> list[Tensor]:
        return [p * sc for p, sc in zip(params, scales)]

    G, B, N = len(layer_groups), min(cfg.batch_size, len(train)), len(train)

    def group_losses(d: _Data, idx: Tensor) -> Tensor:
        resid, batch = _rows(d, idx, G)
        hooks = _group_hooks(ad, vectors(), layer_groups, positions, point, len(idx), batch.query_pos)
        return _row_nll(ad, resid, batch, start, hooks).view(G, len(idx)).mean(1)

    def snapshot(tensors: list[Tensor]) -> list[TaskVector]:
        return [TaskVector.for_model(ad, p.detach().clone(), ls, positions, point=point, task=task.name,
                                     method="ltv", config=asdict(cfg)) for p, ls in zip(tensors, layer_groups)]

    best = [v.detach().clone() for v in vectors()]
    last_good = best
    best_val = [math.inf] * G
    stale = [0] * G
    curve: list[dict] = []
    order = torch.randperm(N, generator=gen)
    cursor = 0
    bar = tqdm(range(cfg.steps), desc=f"LTV {task.name} layers {layer_groups if G > 1 else layer_groups[0]}",
               disable=not progress, leave=False)
    for step in bar:
        if cursor + B > N:
            order, cursor = torch.randperm(N, generator=gen), 0
        idx = order[cursor : cursor + B].to(ad.device)
        cursor += B
        losses = group_losses(data, idx)
        finite = torch.isfinite(losses) & torch.stack([torch.isfinite(p).all() for p in params])
        if not finite.all():
            bad = [layer_groups[g] for g in range(G) if not finite[g]]
            raise TrainingDiverged(f"loss became {losses.tolist()} at step {step} (layers {bad}); "
                                   "the last good vectors are in .last_good", snapshot(last_good))
        last_good = [v.detach().clone() for v in vectors()]
        opt.zero_grad()
        losses.sum().backward()
        opt.step()
        record = {"step": step, "loss": float(losses.detach().mean())}
        if G == 1:
            record["norm"] = float(vectors()[0].detach().norm())
        if vdata is not None and ((step + 1) % cfg.eval_every == 0 or step == cfg.steps - 1):
            with torch.no_grad():
                vl = group_losses(vdata, torch.arange(len(val), device=ad.device))
            record["val_loss"] = float(vl.mean())
            for g in range(G):
                if vl[g] < best_val[g]:
                    best_val[g], best[g], stale[g] = float(vl[g]), (params[g] * scales[g]).detach().clone(), 0
                else:
                    stale[g] += 1
        curve.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}")
        if cfg.patience is not None and all(s >= cfg.patience for s in stale):
            break
    if vdata is None:
        best = [v.detach().clone() for v in vectors()]
    out = snapshot(best)
    for g, tv in enumerate(out):
        tv.curve = [{"step": r["step"], "loss": r["loss"]} | ({"val_loss": r["val_loss"]} if "val_loss" in r else {})
                    for r in curve]
        step_sizes = [cfg.lr * float(x) for x in scales[g].flatten()]
        tv.metrics = {"best_val_loss": best_val[g], "steps_run": len(curve), "lr_effective": step_sizes[0],
                      "lr_per_layer": step_sizes,
                      "norm": float(tv.vectors.norm())}
    return out


def learn_task_vector(model, task: Task, train: Sequence[Example] | None = None, val: Sequence[Example] | None = None,
                      *, layers: Sequence[int] = (15,), positions: Sequence[int] = (-1,), shared: bool = False,
                      point: str = "resid_pre", config: LTVConfig = LTVConfig(), progress: bool = True) -> TaskVector:
    """Train one Learned Task Vector (one vector per layer/position site, or one shared vector).

    ``train``/``val`` default to the task's seeded splits; the returned vector is the one with the
    lowest validation loss (evaluated every ``config.eval_every`` steps).
    """
    sp = task.splits(config.seed)
    train = sp.train if train is None else train
    val = sp.val if val is None else val
    return _train(model, task, train, val, [tuple(layers)], tuple(positions), shared, point, config, progress)[0]


def learn_layer_sweep(model, task: Task, layers: Sequence[int], train: Sequence[Example] | None = None,
                      val: Sequence[Example] | None = None, *, positions: Sequence[int] = (-1,),
                      point: str = "resid_pre", config: LTVConfig = LTVConfig(), progress: bool = True) -> list[TaskVector]:
    """One LTV per layer in ``layers``, all trained together in one batched forward/backward per step.

    Equivalent to calling :func:`learn_task_vector` for each layer with the same config and seed.
    """
    sp = task.splits(config.seed)
    train = sp.train if train is None else train
    val = sp.val if val is None else val
    return _train(model, task, train, val, [(l,) for l in layers], tuple(positions), False, point, config, progress)
