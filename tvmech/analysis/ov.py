"""OV circuits and the packaged OV effect of a task vector; its MLP counterpart; reconstruction accuracy.

Conventions (TransformerLens, row vectors). Head ``h`` of block ``l`` reads the normalized residual
``x = ln1_l(resid)`` at every key position ``k``, forms its value ``x_k W_V[l, h]`` and, at query position
``q``, writes ``Σ_k A[l, h, q, k] · x_k W_V[l, h] W_O[l, h]`` into the residual stream. ``W_OV[l, h] =
W_V[l, h] W_O[l, h]`` (``d_model × d_model``, rank ``d_head``) is kept as a TransformerLens
``FactoredMatrix`` (its two factors: 76 MiB instead of 342 MiB dense for SmolLM2-135M). Grouped-query attention
is handled by the adapter: query head ``h`` uses key/value head ``h // (n_heads / n_kv_heads)``.

A task vector θ added to ``blocks.{l}.hook_resid_pre`` at position ``p`` (the query token by default)
stays in the residual stream of every later block, so every head of blocks ``l .. L-1`` can read it
directly. **The packaged OV effect** is what these heads write at the query position through that direct
path, with the attention pattern held fixed:

    E_{l'} = Σ_h  w[l', h] · θ̃_{l'} W_V[l', h] W_O[l', h]        (one vector per block l' ≥ l)

* ``weighted``: ``w[l', h] = A[l', h, q, p]``, the head's attention from the query to the injected
  position, read from the θ-injected forward pass; unweighted: ``w = 1``.
* ``norm_aware``: ``θ̃_{l'} = ln1_{l'}(h_{l'} + θ) − ln1_{l'}(h_{l'})`` with ``h_{l'}`` the *clean*
  (no θ) residual entering block ``l'`` at ``p``: the change that adding θ alone makes to the head's
  normalized input, RMS scale and norm weight included. Raw: ``θ̃ = θ`` (ignores the norm; its scale is
  then off by the norm's ``w / rms(h)``, so raw is mainly a contrast).
* ``reinject="final"``: ``Σ_{l'} E_{l'}`` is added once to the final residual stream (``blocks.{L-1}.
  hook_resid_post``, before the final norm) at the query position; ``"layerwise"``: each ``E_{l'}`` is
  added at the output of its own block ``l'`` (``hook_resid_post``), so later blocks process it.

In both cases the reconstruction runs on the zero-shot prompt *without* θ: only the OV-carried part of
θ's effect is put back. The MLP counterpart is the measured change ``ΔMLP_{l'} = mlp_out_{l'}(with θ) −
mlp_out_{l'}(without θ)`` at the query position (everything θ causes in the MLPs, direct or through
attention), re-injected the same two ways; ``"attn"`` is the measured change of the attention outputs
(what the OV effect approximates, with changes of the attention pattern included), ``"attn_mlp"`` the
sum of both (everything but θ's own direct path to the unembedding). Exactness: with the
pattern fixed, ``E_{l}`` of the injection block equals the change of its attention output at ``q``
(tests/test_ov.py), and ``final_clean + θ + Σ ΔAttn + Σ ΔMLP = final_with_θ`` at ``q``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tvmech.core.adapter import Adapter, HookFn, adapt, factored_matrix
from tvmech.analysis.evaluation import resolve_scoring, score_batch
from tvmech.interventions.sites import resolve_positions
from tvmech.data.prompts import Batch, batches, make_prompts
from tvmech.data.tasks import Example, Task
from tvmech.interventions.task_vector import TaskVector

REINJECT = ("final", "layerwise")
SOURCES = ("ov", "mlp", "attn", "attn_mlp")


def check_head(model, layer: int, head: int) -> tuple[int, int]:
    """Validate a ``(layer, head)`` pair against the model; returns it."""
    ad = adapt(model)
    ad.check_layer(layer)
    if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < ad.n_heads:
        raise ValueError(f"head {head!r} is out of range for this model: valid heads are 0..{ad.n_heads - 1} "
                         f"(layer {layer})")
    return layer, head


def _layers(ad: Adapter, layers: Sequence[int] | None) -> list[int]:
    layers = list(range(ad.n_layers)) if layers is None else list(layers)
    if not layers:
        raise ValueError("no layers given: pass at least one layer")
    return [ad.check_layer(l) for l in layers]


def ov_circuits(model, layers: Sequence[int] | None = None) -> Any:
    """``W_OV[i, h] = W_V[layers[i], h] W_O[layers[i], h]`` as a ``FactoredMatrix`` of shape
    ``[n_sel, n_heads, d_model, d_model]`` (kv heads expanded to query heads)."""
    ad = adapt(model)
    idx = _layers(ad, layers)
    return factored_matrix()(ad.W_V[idx].detach(), ad.W_O[idx].detach())


def ov_images(model, x: Float[Tensor, "*batch d_model"], layers: Sequence[int] | None = None
              ) -> Float[Tensor, "*batch n_sel n_heads d_model"]:
    """Every head's OV image ``x W_V W_O`` (row-vector convention).

    ``x`` of shape ``[d_model]`` is the same input for every selected layer (result ``[n_sel, n_heads,
    d_model]``); ``[*batch, n_sel, d_model]`` gives one input per selected layer (result
    ``[*batch, n_sel, n_heads, d_model]``).
    """
    ad = adapt(model)
    ov = ov_circuits(ad, layers)
    if x.shape[-1] != ad.d_model:
        raise ValueError(f"x has size {x.shape[-1]} in its last dimension; the model's d_model is {ad.d_model}")
    x = x.to(ov.A.device, ov.A.dtype)
    if x.ndim == 1:
        return x @ ov  # FactoredMatrix collapses (x W_V) W_O without forming W_OV
    if x.shape[-2] != ov.shape[0]:
        raise ValueError(f"x has {x.shape[-2]} per-layer inputs but {ov.shape[0]} layers are selected")
    xv = torch.einsum("...ld,lhde->...lhe", x, ov.A)
    return torch.einsum("...lhe,lhem->...lhm", xv, ov.B)


def head_ov_image(model, theta: Float[Tensor, " d_model"], layer: int, head: int) -> Float[Tensor, " d_model"]:
    """``θ W_V[layer, head] W_O[layer, head]`` for one head (raw θ, no norm)."""
    check_head(model, layer, head)
    return ov_images(model, theta, [layer])[0, head]


@dataclass(frozen=True)
class Reconstruction:
    """One way of putting back part of θ's effect without θ (see the module docstring).

    ``source``: ``"ov"`` (packaged OV effect), ``"mlp"`` (measured MLP-output change), ``"attn"``
    (measured attention-output change) or ``"attn_mlp"`` (their sum); ``weighted`` and ``norm_aware``
    apply to ``"ov"`` only.
    """

    source: str = "ov"
    weighted: bool = True
    norm_aware: bool = True
    reinject: str = "final"

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not valid; choose one of {SOURCES}")
        if self.reinject not in REINJECT:
            raise ValueError(f"reinject {self.reinject!r} is not valid; choose one of {REINJECT}")


DEFAULT_RECONSTRUCTIONS: dict[str, Reconstruction] = {
    "ov": Reconstruction(),
    "ov_layerwise": Reconstruction(reinject="layerwise"),
    "ov_unweighted": Reconstruction(weighted=False),
    "ov_raw": Reconstruction(norm_aware=False),
    "mlp": Reconstruction("mlp"),
    "mlp_layerwise": Reconstruction("mlp", reinject="layerwise"),
    "attn": Reconstruction("attn"),
    "attn_mlp": Reconstruction("attn_mlp"),
}


@dataclass
class Capture:
    """What θ does on one batch (two forward passes from block ``l``: without and with θ).

    ``layers = (l, ..., L-1)``: the blocks that read θ. Everything is at the query position ``q`` except
    ``resid`` (at the injected position ``p``).
    """

    theta: Float[Tensor, " d_model"]
    layers: tuple[int, ...]
    query_pos: Int[Tensor, " batch"]
    inj_pos: Int[Tensor, " batch"]
    resid: Float[Tensor, "batch n_sel d_model"]  # clean residual entering each block, at p
    weights: Float[Tensor, "batch n_sel n_heads"]  # attention q -> p with θ
    attn_delta: Float[Tensor, "batch n_sel d_model"]  # attention output with θ minus without, at q
    mlp_delta: Float[Tensor, "batch n_sel d_model"]  # MLP output with θ minus without, at q
    final_clean: Float[Tensor, "batch d_model"]  # final residual (before the final norm) at q, without θ
    final_injected: Float[Tensor, "batch d_model"]  # the same with θ


def single_site(model, vec: TaskVector) -> tuple[int, int]:
    """The (layer, position) of a one-site additive ``resid_pre`` task vector; raises otherwise."""
    ad = adapt(model)
    vec.check_model(ad)
    if len(vec.layers) != 1 or len(vec.positions) != 1 or vec.point != "resid_pre" or vec.mode != "add":
        raise ValueError(f"expected a task vector added at one layer and one position of resid_pre; got layers "
                         f"{vec.layers}, positions {vec.positions}, point {vec.point!r}, mode {vec.mode!r}")
    return ad.check_layer(vec.layers[0]), vec.positions[0]


def capture(model, vec: TaskVector, batch: Batch) -> Capture:
    """Run ``batch`` from block ``l`` without and with θ and record what the OV effect and the MLP and
    attention counterparts need (no gradients)."""
    ad = adapt(model)
    layer, pos = single_site(ad, vec)
    batch = batch.to(ad.device)
    rows = torch.arange(len(batch), device=ad.device)
    q = batch.query_pos
    p = resolve_positions((pos,), q, batch.tokens.shape[1])[:, 0]
    layers = tuple(range(layer, ad.n_layers))
    store: dict[tuple[str, int], Tensor] = {}

    def grab(key: str, l: int, index) -> HookFn:
        def hook(x: Tensor, hook=None) -> None:
            store[key, l] = x[index].detach()
        return hook

    at_q, at_p = (rows, q), (rows, p)
    base = [(ad.act_name(l, "attn_out"), grab("attn", l, at_q)) for l in layers]
    base += [(ad.act_name(l, "mlp_out"), grab("mlp", l, at_q)) for l in layers]
    with torch.no_grad():
        h = ad.residual(batch.tokens, layer)
        with ad.hooks(base + [(ad.hook_name(l), grab("resid", l, at_p)) for l in layers]):
            final_clean = ad.run_blocks(h, layer)[rows, q]
        clean = dict(store)
        pattern = [(ad.act_name(l, "pattern"), grab("pattern", l, (rows, slice(None), q, p))) for l in layers]
        with ad.hooks(vec.hooks_for(ad)(batch) + base + pattern):
            final_inj = ad.run_blocks(h, layer)[rows, q]

    def stack(key: str, src: dict) -> Tensor:
        return torch.stack([src[key, l] for l in layers], 1)

    return Capture(theta=vec.vectors[0, 0].to(ad.device, ad.dtype), layers=layers, query_pos=q, inj_pos=p,
                   resid=stack("resid", clean), weights=stack("pattern", store),
                   attn_delta=stack("attn", store) - stack("attn", clean),
                   mlp_delta=stack("mlp", store) - stack("mlp", clean),
                   final_clean=final_clean, final_injected=final_inj)


def packaged_ov_effect(model, cap: Capture, *, weighted: bool = True, norm_aware: bool = True
                       ) -> Float[Tensor, "batch n_sel d_model"]:
    """``E[b, i] = Σ_h w[b, i, h] · θ̃[b, i] W_V[l_i, h] W_O[l_i, h]`` for the blocks ``l_i`` of ``cap``."""
    ad = adapt(model)
    B = cap.resid.shape[0]
    if norm_aware:
        with torch.no_grad():
            x = torch.stack([ad.input_norm(l, cap.resid[:, i] + cap.theta) - ad.input_norm(l, cap.resid[:, i])
                             for i, l in enumerate(cap.layers)], 1)
        images = ov_images(ad, x, cap.layers)
    else:
        images = ov_images(ad, cap.theta, cap.layers).expand(B, -1, -1, -1)
    w = cap.weights if weighted else torch.ones_like(cap.weights)
    return torch.einsum("bih,bihd->bid", w.to(images.dtype), images)


def reconstruction_effect(model, cap: Capture, rec: Reconstruction) -> Float[Tensor, "batch n_sel d_model"]:
    """Per-block vectors that ``rec`` puts back: the packaged OV effect, or the measured MLP/attention change."""
    if rec.source == "ov":
        return packaged_ov_effect(model, cap, weighted=rec.weighted, norm_aware=rec.norm_aware)
    return {"mlp": cap.mlp_delta, "attn": cap.attn_delta, "attn_mlp": cap.attn_delta + cap.mlp_delta}[rec.source]


def reinjection_hooks(model, effect: Float[Tensor, "batch n_sel d_model"], layers: Sequence[int],
                      query_pos: Int[Tensor, " batch"], reinject: str = "final") -> list[tuple[str, HookFn]]:
    """Hooks adding ``effect`` at each row's query position: summed over blocks into the final residual
    (``"final"``) or ``effect[:, i]`` at the output of block ``layers[i]`` (``"layerwise"``)."""
    ad = adapt(model)
    if reinject not in REINJECT:
        raise ValueError(f"reinject {reinject!r} is not valid; choose one of {REINJECT}")
    if effect.shape[1] != len(layers) or effect.shape[0] != len(query_pos):
        raise ValueError(f"effect of shape {tuple(effect.shape)} does not fit {len(query_pos)} rows x "
                         f"{len(layers)} layers")
    sites = {ad.n_layers - 1: effect.sum(1)} if reinject == "final" else {l: effect[:, i] for i, l in enumerate(layers)}

    def make(v: Tensor) -> HookFn:
        def hook(x: Tensor, hook=None) -> Tensor:
            rows = torch.arange(x.shape[0], device=x.device)
            return x.index_put((rows, query_pos.to(x.device)), v.to(x.device, x.dtype), accumulate=True)
        return hook

    return [(ad.hook_name(l, "resid_post"), make(v)) for l, v in sites.items()]


def reconstruction_accuracy(model, vec: TaskVector, task: Task, queries: Sequence[Example],
                            reconstructions: dict[str, Reconstruction] | None = None, *, scoring: str | None = None,
                            batch_size: int = 16, progress: bool = False) -> list[dict]:
    """Accuracy on zero-shot prompts of ``queries``: without anything (``zero_shot``), with θ (``ltv``),
    and with each reconstruction instead of θ. Rows ``{task, layer, method, accuracy, n, effect_norm,
    cos_attn}``: ``effect_norm`` is the mean norm of the re-injected total ``Σ_{l'} E_{l'}``, ``cos_attn``
    its mean cosine with the measured total attention change."""
    ad = adapt(model)
    layer, _ = single_site(ad, vec)
    recs = DEFAULT_RECONSTRUCTIONS if reconstructions is None else reconstructions
    scoring = resolve_scoring(task, scoring)
    if not queries:
        raise ValueError(f"task {task.name!r}: no queries to evaluate")
    prompts = make_prompts(task, queries, 0)
    names = ["zero_shot", "ltv", *recs]
    correct = dict.fromkeys(names, 0)
    norm = dict.fromkeys(names, 0.0)
    cos = dict.fromkeys(names, 0.0)
    it = batches(ad.tokenizer, task, prompts, batch_size, with_labels=scoring == "exact_match")
    for _, batch in tqdm(it, total=-(-len(prompts) // batch_size), desc=f"OV/MLP reconstruction {task.name}",
                         disable=not progress, leave=False):
        batch = batch.to(ad.device)
        cap = capture(ad, vec, batch)
        attn_total = cap.attn_delta.sum(1)
        correct["zero_shot"] += int(score_batch(ad, task, batch, scoring)[0].sum())
        correct["ltv"] += int(score_batch(ad, task, batch, scoring, vec.hooks_for(ad))[0].sum())
        norm["ltv"] += float(cap.theta.norm()) * len(batch)
        for name, rec in recs.items():
            effect = reconstruction_effect(ad, cap, rec)
            hooks = reinjection_hooks(ad, effect, cap.layers, batch.query_pos, rec.reinject)
            correct[name] += int(score_batch(ad, task, batch, scoring, lambda b, h=hooks: h)[0].sum())
            total = effect.sum(1)
            norm[name] += float(total.norm(dim=-1).sum())
            cos[name] += float(torch.cosine_similarity(total, attn_total, dim=-1).sum())
    n = len(prompts)
    return [{"task": task.name, "layer": layer, "method": m, "accuracy": correct[m] / n, "n": n,
             "effect_norm": norm[m] / n if m != "zero_shot" else 0.0,
             "cos_attn": cos[m] / n if m in recs else None} for m in names]


__all__ = ["factored_matrix", "check_head", "ov_circuits", "ov_images", "head_ov_image", "Reconstruction",
           "DEFAULT_RECONSTRUCTIONS", "Capture", "single_site", "capture", "packaged_ov_effect",
           "reconstruction_effect", "reinjection_hooks", "reconstruction_accuracy"]
