"""Analyses of synthetic models: task-vector prompting per layer, geometry of the extracted vectors,
robustness, and learned against extracted task vectors.

Error of a query prediction: for the discrete task ``1[argmax ≠ y]`` (over the value tokens); for
continuous tasks the normalised squared error ``(ŷ − y)² / Var(y)`` (``Var y`` = 1 for ``linear``,
``E[a²]/2 = 0.875`` for ``sinusoid``), so predicting 0 scores about 1.

Task-vector prompting at layer ``l``: ``θ = h_l(prompt)[q]`` is read at the query position of a full
prompt (``n_demos`` demonstrations and a query) and written (``replace``) at the query position of a
query-only prompt holding a *fresh* query of the same task, so that ``θ`` must carry the task, not the
answer. Baselines at every layer: ``random`` (an isotropic Gaussian vector with ``θ``'s norm) and
``shuffled`` (``θ`` of another prompt, usually another task); references: ``icl`` (the full prompt)
and ``zero_shot`` (the query-only prompt, nothing injected).

Cluster sharpness of vectors ``v_i`` with task classes ``c_i`` (``k``, or quantile bins of the first
task parameter for continuous tasks): the fraction of variance between classes,

    η² = Σ_c n_c ‖μ_c − μ‖² / Σ_i ‖v_i − μ‖²  ∈ [0, 1],

1 when every vector sits on its class mean, about ``(C − 1)/(N − 1)`` for vectors unrelated to the task.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.interventions.capture import Capture
from tvmech.interventions.sites import Mode
from tvmech.synthetic.icl_tasks import SyntheticBatch, SyntheticTask, offset_text_task
from tvmech.synthetic.model import SyntheticModel
from tvmech.synthetic.pretraining import captured, write_query

Y_VAR = {"linear": 1.0, "sinusoid": 0.875}


def row_errors(task: SyntheticTask, pred: Tensor, target: Tensor) -> Float[Tensor, " batch"]:
    """Per-row error (see the module docstring)."""
    target = target.to(pred.device)
    if task.discrete:
        return (pred.argmax(-1) != target.long()).float().cpu()
    return ((pred.float() - target.float()) ** 2 / Y_VAR[task.name]).cpu()


@torch.no_grad()
def context_vectors(model: SyntheticModel, batch: SyntheticBatch,
                    layers: Sequence[int]) -> tuple[Float[Tensor, "n_layers batch d_model"], Float[Tensor, " batch"]]:
    """``h_l(prompt)[q]`` for each layer (the query position of the full prompt, without ``y_q``), and
    the ICL error of the same pass."""
    task = model.task
    q = int(task.pred_positions(batch.ys.shape[1])[-1])
    read = Capture([(l, "resid_pre") for l in layers], positions=(q,))
    final = model(task.sequence(batch), read)
    err = row_errors(task, model.head(final[:, q]), batch.ys[:, -1])
    return torch.stack([captured(read, l) for l in layers]), err


@torch.no_grad()
def query_only_errors(model: SyntheticModel, query: SyntheticBatch, layer: int | None = None,
                      vectors: Tensor | None = None, mode: Mode = "replace") -> Float[Tensor, " batch"]:
    """Error on query-only prompts, with ``vectors[b]`` written at layer ``layer`` (or nothing)."""
    task = model.task
    q = int(task.pred_positions(1)[-1])
    write = None if vectors is None else write_query(vectors, layer, q, mode)
    final = model(task.query_sequence(query), write)
    return row_errors(task, model.head(final[:, q]), query.ys[:, -1])


def fresh_queries(task: SyntheticTask, batch: SyntheticBatch, g: torch.Generator, ood: bool = False) -> SyntheticBatch:
    """One new query per row with the row's task parameters."""
    b = task.sample(len(batch), 1, g, params=batch.params, ood=ood)
    return SyntheticBatch(b.xs[:, -1:], b.ys[:, -1:], b.params, b.clean_ys[:, -1:])


def _random_like(vectors: Tensor, g: torch.Generator) -> Tensor:
    r = torch.randn(vectors.shape, generator=g).to(vectors)
    return r / r.norm(dim=-1, keepdim=True) * vectors.norm(dim=-1, keepdim=True)


def tv_prompting(model: SyntheticModel, layers: Sequence[int] | None = None, *, n: int = 256, n_demos: int = 6,
                 seed: int = 0, label_noise: float = 0.0, ood: bool = False, mode: Mode = "replace") -> list[dict]:
    """Rows ``{method, layer, error, n}``: task-vector prompting per layer, its baselines, ICL, zero-shot."""
    task = model.task
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    for l in layers:
        model.adapter.hook_name(l)
    g = torch.Generator().manual_seed(seed)
    batch = task.sample(n, n_demos, g, label_noise=label_noise, ood=ood)
    query = fresh_queries(task, batch, g, ood)
    vecs, icl = context_vectors(model, batch, layers)
    rows = [{"method": "icl", "layer": None, "error": float(icl.mean()), "n": n},
            {"method": "zero_shot", "layer": None, "error": float(query_only_errors(model, query).mean()), "n": n}]
    for i, l in enumerate(layers):
        candidates = (("task_vector", vecs[i]), ("shuffled", vecs[i].roll(1, 0)), ("random", _random_like(vecs[i], g)))
        for method, v in candidates:
            err = query_only_errors(model, query, l, v, mode)
            rows.append({"method": method, "layer": l, "error": float(err.mean()), "n": n})
    return rows


def cluster_sharpness(vectors: Float[Tensor, "n d"], classes: Int[Tensor, " n"]) -> float:
    """η²: between-class sum of squares over total sum of squares (module docstring)."""
    v = vectors.double()
    mu = v.mean(0)
    total = ((v - mu) ** 2).sum()
    between = sum(int((classes == c).sum()) * ((v[classes == c].mean(0) - mu) ** 2).sum() for c in classes.unique())
    return float(between / total) if total > 0 else float("nan")


def pca_2d(vectors: Float[Tensor, "n d"]) -> tuple[Float[Tensor, "n 2"], Float[Tensor, " 2"]]:
    """Projection on the top two principal components and the fraction of variance each explains."""
    v = vectors.double() - vectors.double().mean(0)
    _, s, vh = torch.linalg.svd(v, full_matrices=False)
    return (v @ vh[:2].T).float(), (s[:2] ** 2 / (s**2).sum()).float()


def vector_geometry(model: SyntheticModel, layers: Sequence[int] | None = None, *, n: int = 256, n_demos: int = 6,
                    seed: int = 0) -> tuple[list[dict], list[dict]]:
    """PCA points ``{layer, pc1, pc2, param, cls}`` of the extracted vectors and ``{layer, sharpness,
    var_pc1, var_pc2}`` per layer (η² in the full residual space)."""
    task = model.task
    layers = list(range(1, model.n_layers + 1)) if layers is None else list(layers)
    g = torch.Generator().manual_seed(seed)
    batch = task.sample(n, n_demos, g)
    valid = [l for l in layers if l < model.n_layers]
    vecs, _ = context_vectors(model, batch, valid)
    cls = task.param_classes(batch.params)
    points, scores = [], []
    for i, l in enumerate(valid):
        v = vecs[i].cpu()
        xy, var = pca_2d(v)
        scores.append({"layer": l, "sharpness": cluster_sharpness(v, cls), "var_pc1": float(var[0]),
                       "var_pc2": float(var[1])})
        points += [{"layer": l, "pc1": float(xy[j, 0]), "pc2": float(xy[j, 1]), "param": float(batch.params[j, 0]),
                    "cls": int(cls[j])} for j in range(n)]
    return points, scores


CONDITIONS = {"clean": {}, "label_noise_0.25": {"label_noise": 0.25}, "label_noise_0.5": {"label_noise": 0.5},
              "ood_query": {"ood": True}}


def robustness(models: dict[str, SyntheticModel], layer: int, *, n: int = 256, n_demos: int = 6, seed: int = 0,
               conditions: dict[str, dict] | None = None) -> list[dict]:
    """Rows ``{model, condition, icl_error, tv_error, n}``: ICL and task-vector prompting at ``layer``
    under noisy demonstration labels and out-of-distribution queries (see ``SyntheticTask.sample``)."""
    rows = []
    for name, model in models.items():
        for cond, kw in (conditions or CONDITIONS).items():
            r = tv_prompting(model, [layer], n=n, n_demos=n_demos, seed=seed, **kw)
            get = {x["method"]: x["error"] for x in r}
            rows.append({"model": name, "condition": cond, "icl_error": get["icl"], "tv_error": get["task_vector"],
                         "random_error": get["random"], "n": n})
    return rows


def learned_vs_extracted(model: SyntheticModel, layer: int, ks: Sequence[int], *, n_demos: int = 6, seed: int = 0,
                         ltv_steps: int = 200, ltv_lr: float = 1e-2, progress: bool = True) -> list[dict]:
    """Discrete task only. For each offset ``k``: zero-shot accuracy on held-out queries with a Learned
    Task Vector (``tvmech.methods.learned``, added at ``layer``, trained on the other half of the inputs), with
    Hendel's mean extracted vector (``tvmech.methods.vanilla``, replace), with per-prompt extracted vectors, and
    without a vector; plus the cosine between the LTV and the additive vanilla task vector.

    Rows ``{k, method, accuracy, n, cosine_ltv_vanilla}``.
    """
    from tvmech.analysis.evaluation import evaluate
    from tvmech.methods.learned import LTVConfig, learn_task_vector
    from tvmech.methods.vanilla import vanilla_task_vector

    task, bridge = model.task, model.bridge
    if not task.discrete:
        raise ValueError(f"learned_vs_extracted uses the text form of the discrete task; {task.name!r} is continuous")
    model.adapter.hook_name(layer)
    values = list(range(task.n_values))
    random.Random(seed).shuffle(values)
    half = len(values) // 2
    cfg = LTVConfig(lr=ltv_lr, lr_unit="absolute", weight_decay=0.0, steps=ltv_steps, batch_size=half, seed=seed)
    rows = []
    for k in ks:
        text = offset_text_task(task, k)
        train = [text.examples[v] for v in values[:half]]
        test = [text.examples[v] for v in values[half:]]
        ltv = learn_task_vector(bridge, text, train, (), layers=(layer,), config=cfg, progress=progress)
        ext = vanilla_task_vector(bridge, text, layer, train, train, k=min(n_demos, half - 1), n=half, seed=seed,
                                  mode="replace")
        add = vanilla_task_vector(bridge, text, layer, train, train, k=min(n_demos, half - 1), n=half, seed=seed)
        cos = float(torch.nn.functional.cosine_similarity(ltv.vectors.flatten(), add.vectors.flatten(), dim=0))
        accs = {"zero_shot": evaluate(bridge, text, test, progress=False).accuracy,
                "ltv": evaluate(bridge, text, test, intervention=ltv, progress=False).accuracy,
                "extracted_mean": evaluate(bridge, text, test, intervention=ext, progress=False).accuracy,
                "icl": evaluate(bridge, text, test, k=min(n_demos, half - 1), demos=train, seed=seed,
                                progress=False).accuracy}
        g = torch.Generator().manual_seed(seed + k)
        batch = task.sample(4 * len(test), n_demos, g, params=task.fixed_params(k, 4 * len(test)))
        query = fresh_queries(task, batch, g)
        vecs, _ = context_vectors(model, batch, [layer])
        accs["extracted_prompt"] = 1.0 - float(query_only_errors(model, query, layer, vecs[0]).mean())
        for method, a in accs.items():
            rows.append({"k": k, "method": method, "accuracy": a, "n": len(test) if method != "extracted_prompt"
                         else 4 * len(test), "cosine_ltv_vanilla": cos, "ltv_norm": float(ltv.vectors.norm())})
    return rows


def mean_error(rows: Sequence[dict], method: str, layer: int | None = None) -> float:
    """The error of ``method`` (at ``layer``) in :func:`tv_prompting` rows."""
    for r in rows:
        if r["method"] == method and (layer is None or r["layer"] == layer):
            return r["error"]
    raise ValueError(f"no row for method {method!r} at layer {layer}")


__all__ = ["row_errors", "context_vectors", "query_only_errors", "tv_prompting", "cluster_sharpness", "pca_2d",
           "vector_geometry", "robustness", "learned_vs_extracted", "mean_error", "CONDITIONS"]
