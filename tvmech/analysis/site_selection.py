"""Choosing a task vector's injection site and strength on a dev split (as Hendel et al.'s code picks its layer).

A method gives one vector ``v_l`` per candidate layer ``l``; each is tried at every strength ``α`` of a grid (an
extracted vector's norm is arbitrary; a learned one is tried at α = 1 only). The dev accuracy of a candidate is

    acc_dev(l, α) = mean_{x ∈ dev} [ score(model(ZS(x); h_l[q] += α v_l)) ]

(zero-shot prompts, the vector added at the query's ``resid_pre`` of block ``l``), and the choice is
``argmax acc_dev`` (ties: the first candidate in the order layers × α given). Only the dev split is read: a split
disjoint from the examples the vectors came from and from the test split (:func:`select_site` refuses a dev input
found in ``disjoint_from``), so the test accuracy of the choice is not selected on.

Cost. The dev prompts are encoded once; the clean stream is advanced block by block through the candidate layers,
and at each layer every candidate (every α, and every method when several are passed) runs as one row group of one
batched pass from that layer on (:func:`dev_accuracies`), ``max_rows`` rows at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.evaluation import check_context, predict_from_final, resolve_scoring
from tvmech.core.adapter import adapt
from tvmech.core.checks import check_float
from tvmech.data.prompts import Batch, encode, make_prompts
from tvmech.data.tasks import Example, Task
from tvmech.interventions.engine import run_blocks
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import Context
from tvmech.interventions.task_vector import TaskVector, vector_and_layer

ALPHAS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class SiteChoice:
    """The site and strength chosen on dev, with the whole dev table.

    ``table``: one row per candidate, ``{"layer", "alpha", "accuracy"}`` (dev accuracy), in the order tried;
    ``n_dev``: the dev examples; ``scoring``: how they were scored.
    """

    layer: int
    alpha: float
    accuracy: float
    n_dev: int
    scoring: str
    table: list[dict] = field(default_factory=list, repr=False)


def _rows(batch: Batch, copies: int) -> Batch:
    rep = torch.arange(len(batch), device=batch.tokens.device).repeat(copies)
    roles = None if batch.roles is None else {k: v[rep] for k, v in batch.roles.items()}
    return Batch(batch.tokens[rep], batch.query_pos[rep], batch.label_first[rep], batch.targets[rep],
                 batch.lengths[rep], roles)


def dev_accuracies(model, task: Task, dev: Sequence[Example], candidates: Mapping[int, Float[Tensor, "n d_model"]],
                   *, scoring: str | None = None, max_rows: int = 512) -> dict[int, list[float]]:
    """Zero-shot accuracy on ``dev`` with each candidate vector added at the query of its layer's ``resid_pre``.

    Args:
        model: a loaded model or its adapter.
        task: the task.
        dev: the dev examples (zero-shot prompts).
        candidates: layer -> ``[n, d_model]`` vectors to try there (each one row group of a batched pass).
        scoring: the scoring mode (default: the task's).
        max_rows: the most rows in one pass (row groups of ``len(dev)`` rows).

    Returns:
        Layer -> the accuracy of each of its vectors, in order.
    """
    ad = adapt(model)
    scoring = resolve_scoring(task, scoring)
    if not dev:
        raise ValueError(f"task {task.name!r}: the dev split is empty: nothing to choose a site on")
    prompts = make_prompts(task, dev, 0)
    check_context(ad, task, prompts, with_labels=scoring == "exact_match")
    batch = encode(ad.tokenizer, task, prompts, with_labels=scoring == "exact_match").to(ad.device)
    B = len(batch)
    per_pass = max(1, max_rows // B)
    out: dict[int, list[float]] = {}
    resid, at = None, 0
    with torch.no_grad():
        for layer in sorted(candidates):
            ad.check_layer(layer)
            resid = ad.residual(batch.tokens, layer) if resid is None else ad.run_blocks(resid, at, layer)
            at = layer
            vecs = candidates[layer]
            accs = []
            for s in range(0, len(vecs), per_pass):
                chunk = vecs[s : s + per_pass].to(ad.device, torch.float32)
                c = len(chunk)
                rows = _rows(batch, c)
                inj = Injection(chunk.repeat_interleave(B, 0)[:, None, None, :], (layer,), (-1,))
                final = run_blocks(ad, resid.repeat(c, 1, 1), layer, intervention=inj, ctx=Context.of(rows))
                ok, _ = predict_from_final(ad, task, rows, final, (scoring,))[scoring]
                accs += ok.view(c, B).float().mean(1).tolist()
            out[layer] = accs
    return out


def select_sites(model, task: Task, vectors: Mapping[str, Mapping[int, Tensor | TaskVector]],
                 dev: Sequence[Example], *, alphas: Mapping[str, Sequence[float]] | Sequence[float] = (1.0,),
                 scoring: str | None = None, disjoint_from: Sequence[Example] = (), max_rows: int = 512
                 ) -> dict[str, SiteChoice]:
    """:func:`select_site` for several methods at once (every candidate of a layer in the same batched passes).

    Args:
        vectors: method -> layer -> its vector.
        alphas: the strengths of every method, or method -> its strengths.
        model, task, dev, scoring, disjoint_from, max_rows: as for :func:`select_site`.

    Returns:
        Method -> its :class:`SiteChoice`.
    """
    per = {m: tuple(alphas[m] if isinstance(alphas, Mapping) else alphas) for m in vectors}
    for m, layers in vectors.items():
        if not layers or not per[m]:
            raise ValueError(f"select_site needs at least one layer and one alpha; method {m!r} has layers "
                             f"{list(layers)} and alphas {list(per[m])}")
        per[m] = tuple(check_float(a, "alpha", minimum=0.0, inclusive=False) for a in per[m])
    shared = sorted({e.input for e in dev} & {e.input for e in disjoint_from})
    if shared:
        raise ValueError(f"task {task.name!r}: {len(shared)} dev input(s) also occur in the examples the dev split "
                         f"must be disjoint from (source or test), e.g. {shared[0]!r}")
    scoring = resolve_scoring(task, scoring)
    units = {m: {int(la): vector_and_layer(v, int(la), f"the {m} vector for layer {la}")[0].detach().float().cpu()
                 for la, v in layers.items()} for m, layers in vectors.items()}
    slots: dict[int, list[tuple[str, float]]] = {}  # layer -> (method, alpha) of each candidate there
    cands: dict[int, list[Tensor]] = {}
    for m, layers in units.items():
        for layer, v in layers.items():
            for a in per[m]:
                slots.setdefault(layer, []).append((m, a))
                cands.setdefault(layer, []).append(a * v)
    accs = dev_accuracies(model, task, dev, {layer: torch.stack(vs) for layer, vs in cands.items()},
                          scoring=scoring, max_rows=max_rows)
    found = {(m, layer, a): acc for layer in slots for (m, a), acc in zip(slots[layer], accs[layer])}
    out = {}
    for m, layers in units.items():
        table = [{"layer": layer, "alpha": a, "accuracy": found[m, layer, a]} for layer in layers for a in per[m]]
        best = max(table, key=lambda r: r["accuracy"])  # the first of the best (max keeps the first)
        out[m] = SiteChoice(best["layer"], best["alpha"], best["accuracy"], len(dev), scoring, table)
    return out


def select_site(model, task: Task, vectors: Mapping[int, Tensor | TaskVector], dev: Sequence[Example], *,
                alphas: Sequence[float] = (1.0,), scoring: str | None = None,
                disjoint_from: Sequence[Example] = (), max_rows: int = 512) -> SiteChoice:
    """The layer and strength of highest dev accuracy, with the dev table (see the module docstring).

    Args:
        model: a loaded model or its adapter.
        task: the task.
        vectors: layer -> the method's vector for that layer (``[d_model]``, or a one-site :class:`TaskVector`).
        dev: the dev examples.
        alphas: the strengths tried at every layer (finite, > 0).
        scoring: the scoring mode (default: the task's).
        disjoint_from: examples the dev split must not share an input with (the vectors' source examples, the test
            split).
        max_rows: the most rows in one pass.

    Returns:
        The :class:`SiteChoice`.

    Raises:
        ValueError: no layers or alphas, a bad alpha, or a dev input also in ``disjoint_from``.
    """
    return select_sites(model, task, {"": vectors}, dev, alphas=alphas, scoring=scoring, disjoint_from=disjoint_from,
                        max_rows=max_rows)[""]


__all__ = ["ALPHAS", "SiteChoice", "dev_accuracies", "select_site", "select_sites"]
