"""OV circuits and the packaged OV effect of a task vector; its MLP counterpart; their re-injection.

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
* post-attention norm (Gemma-2/3, OLMo-2: ``hook_attn_out = P(o)``, ``o`` the output projection's output,
  :mod:`tvmech.core.anatomy`): the effect is taken through it exactly, as the difference of the normed outputs
  ``E_{l'} = P(o_{l'} + E^pre_{l'}) − P(o_{l'})``, with ``E^pre`` the sum above and ``o_{l'}`` the clean pass's
  output at the query. With every pattern held at the θ pass's (``capture(..., freeze_patterns=True)``) the
  clean pass's ``o + E^pre`` *is* the θ pass's output at block ``l``, so ``E_l`` equals the measured change of
  ``hook_attn_out`` there, on every architecture (tested to 1e-5);
* ``from_next``: the sum starts at block ``l + 1`` (the paper's ``Σ_{l' ≥ l+1, h} θ W_V W_O``: raw θ,
  unweighted, re-injected at the final residual, is the paper-literal variant).
* ``reinject="final"``: ``α Σ_{l'} E_{l'}`` is added once to the final residual stream (``blocks.{L-1}.
  hook_resid_post``, before the final norm) at the query position; ``"layerwise"``: each ``α E_{l'}`` is
  added inside its own block ``l'``, so that later computation processes it: by default an attention-side
  effect at the block's ``hook_attn_out`` (the block's own MLP reads it; ``hook_resid_post`` would hide
  it from that MLP), an MLP-side effect at ``hook_mlp_out``. ``α`` (``Reconstruction.alpha``, default 1)
  scales the re-injected vectors. Either way :func:`reinjection` builds one per-row
  :class:`~tvmech.interventions.injection.Injection`.

In both cases the reconstruction runs on the zero-shot prompt *without* θ: only the OV-carried part of
θ's effect is put back. MLP counterparts, like for like:

* ``"mlp_direct"``: the **direct MLP path** ``D_{l'} = M_{l'}(x_{l'} + θ) − M_{l'}(x_{l'})`` at the
  injected position ``p``, with ``x`` the clean residual the block's MLP reads (its mid-residual; its input on a
  parallel block such as GPT-NeoX's) and the MLP's own norms included
  (:meth:`~tvmech.core.adapter.Adapter.mlp_output`); re-injected at ``p``. It equals the measured change of
  ``hook_mlp_out`` when only that MLP's input changes (tested on every architecture);
* ``"mlp"`` (*total measured*): ``ΔMLP_{l'} = mlp_out_{l'}(with θ) − mlp_out_{l'}(without θ)`` at the
  query (everything θ causes in the MLPs, direct or through attention);

``"attn"`` is the total measured change of the attention outputs (what the OV effect approximates, with
changes of the attention pattern included), ``"attn_mlp"`` the sum of both (everything but θ's own
direct path to the unembedding), ``"theta"`` the control θ itself added to the final residual at ``p``
(that direct path alone). Exactness: with the
patterns fixed, ``E_{l}`` of the injection block equals the change of its attention output at ``q``, and
``final_clean + θ + Σ ΔAttn + Σ ΔMLP = final_with_θ`` at ``q`` (θ counted where ``p = q``), on every
architecture of the test matrix (``tests/unit/core/test_invariants.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.core.adapter import Adapter, adapt, factored_matrix
from tvmech.data.prompts import Batch
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import compose, run_blocks
from tvmech.interventions.injection import Injection
from tvmech.interventions.patterns import FixedPatterns
from tvmech.interventions.sites import RESIDUAL_POINTS, Point, check_point, resolve_positions
from tvmech.interventions.task_vector import TaskVector, vector_and_layer

Reinject = Literal["final", "layerwise"]
Source = Literal["ov", "mlp_direct", "mlp", "attn", "attn_mlp", "theta"]
REINJECT: tuple[str, ...] = get_args(Reinject)
SOURCES: tuple[str, ...] = get_args(Source)


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


def head_ov_image(model, theta: Float[Tensor, " d_model"] | TaskVector, layer: int | None, head: int
                  ) -> Float[Tensor, " d_model"]:
    """``θ W_V[layer, head] W_O[layer, head]`` for one head (raw θ, no norm); θ a tensor, or a one-site task
    vector (``layer=None``: its layer; another layer is refused)."""
    theta, layer = vector_and_layer(theta, layer)
    check_head(model, layer, head)
    return ov_images(model, theta, [layer])[0, head]


@dataclass(frozen=True)
class Reconstruction:
    """One way of putting back part of θ's effect without θ (see the module docstring).

    ``source``: ``"ov"`` (packaged OV effect), ``"mlp_direct"`` (direct MLP path), ``"mlp"`` (total
    measured MLP-output change), ``"attn"`` (total measured attention-output change), ``"attn_mlp"`` (their
    sum) or ``"theta"`` (θ itself); ``weighted``, ``norm_aware`` and ``from_next`` apply to ``"ov"`` only.
    ``point``: where a layer-wise re-injection adds each block's vector (``None``: ``attn_out`` for
    ``ov``, ``attn`` and ``theta``, ``mlp_out`` for the MLP sources and ``attn_mlp``). ``alpha`` scales the
    re-injected effect.
    """

    source: Source = "ov"
    weighted: bool = True
    norm_aware: bool = True
    reinject: Reinject = "final"
    """``"final"`` (once, to the final residual stream) or ``"layerwise"`` (see the module docstring)."""
    point: Point | None = None
    from_next: bool = False
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} is not valid; choose one of {SOURCES}")
        if self.reinject not in REINJECT:
            raise ValueError(f"reinject {self.reinject!r} is not valid; choose one of {REINJECT}")
        if self.point is not None:
            check_point(self.point, RESIDUAL_POINTS)
        if self.from_next and self.source != "ov":
            raise ValueError(f"from_next applies to the OV effect only, not to source {self.source!r}")

    @property
    def layerwise_point(self) -> str:
        """The point of a layer-wise re-injection (``point``, or the source's default)."""
        if self.point is not None:
            return self.point
        return "attn_out" if self.source in ("ov", "attn", "theta") else "mlp_out"

    @property
    def at_injected_position(self) -> bool:
        """Whether the effect lives at the injected position ``p`` (direct MLP path, θ) or at the query."""
        return self.source in ("mlp_direct", "theta")


@dataclass
class ThetaEffects:
    """What θ does on one batch (two forward passes from block ``l``: without and with θ).

    ``layers = (l, ..., L-1)``: the blocks that read θ. Everything is at the query position ``q`` except
    ``resid`` and ``mlp_direct`` (at the injected position ``p``; ``position`` is θ's site position).
    """

    theta: Float[Tensor, " d_model"]
    layers: tuple[int, ...]
    query_pos: Int[Tensor, " batch"]
    inj_pos: Int[Tensor, " batch"]
    resid: Float[Tensor, "batch n_sel d_model"]  # clean residual entering each block, at p
    weights: Float[Tensor, "batch n_sel n_heads"]  # attention q -> p with θ
    attn_delta: Float[Tensor, "batch n_sel d_model"]  # attention output with θ minus without, at q
    mlp_delta: Float[Tensor, "batch n_sel d_model"]  # MLP output with θ minus without, at q
    mlp_direct: Float[Tensor, "batch n_sel d_model"]  # M(x + θ) - M(x) at p, x the clean residual the MLP reads
    start: Float[Tensor, "batch seq d_model"]  # the residual entering block l (no θ)
    clean_stream: Float[Tensor, "batch seq d_model"]  # final residual (before the final norm), every position, no θ
    injected_stream: Float[Tensor, "batch seq d_model"]  # the same with θ
    position: int = -1  # θ's site position (negative: relative to the query)
    # the clean pass's attention output at q before the post-attention norm (o-projection output), per block
    attn_clean: Float[Tensor, "batch n_sel d_model"] | None = None

    @property
    def final_clean(self) -> Float[Tensor, "batch d_model"]:
        """The final residual at the query, without θ."""
        return self.clean_stream[torch.arange(len(self.query_pos), device=self.query_pos.device), self.query_pos]

    @property
    def final_injected(self) -> Float[Tensor, "batch d_model"]:
        """The final residual at the query, with θ."""
        return self.injected_stream[torch.arange(len(self.query_pos), device=self.query_pos.device), self.query_pos]


def single_site(model, vec: TaskVector) -> tuple[int, int]:
    """The (layer, position) of a one-site additive ``resid_pre`` task vector; raises otherwise."""
    ad = adapt(model)
    vec.check_model(ad)
    if len(vec.layers) != 1 or len(vec.positions) != 1 or vec.point != "resid_pre" or vec.mode != "add":
        raise ValueError(f"expected a task vector added at one layer and one position of resid_pre; got layers "
                         f"{vec.layers}, positions {vec.positions}, point {vec.point!r}, mode {vec.mode!r}")
    return ad.check_layer(vec.layers[0]), vec.positions[0]


def capture(model, vec: TaskVector, batch: Batch, *, freeze_patterns: bool = False) -> ThetaEffects:
    """Run ``batch`` from block ``l`` without and with θ and record what the OV effect and the MLP and
    attention counterparts need (no gradients).

    The recordings are :class:`~tvmech.interventions.capture.Capture` interventions: attention and MLP
    outputs and the heads' ``z`` at the query of blocks ``l..L-1`` (both passes), the clean residuals entering
    them and their MLPs at the injected position (what the MLP reads: the mid-residual, or the block's input
    on a parallel block, :meth:`~tvmech.core.adapter.Adapter.anatomy`), and the θ-pass attention pattern's
    query row.

    Args:
        model: a TransformerLens model or its adapter.
        vec: a one-site additive ``resid_pre`` task vector.
        batch: zero-shot prompts.
        freeze_patterns: run the clean pass with the θ pass's attention patterns written over its own
            (:class:`~tvmech.interventions.patterns.FixedPatterns`), so that θ changes only values: the setting
            in which :func:`packaged_ov_effect` of block ``l`` is exactly ``attn_delta`` of block ``l``.

    Returns:
        A :class:`ThetaEffects` of both passes.
    """
    ad = adapt(model)
    layer, pos = single_site(ad, vec)
    batch = batch.to(ad.device)
    rows = torch.arange(len(batch), device=ad.device)
    q = batch.query_pos
    p = resolve_positions((pos,), q, batch.tokens.shape[1])[:, 0]
    layers = tuple(range(layer, ad.n_layers))
    mlp_reads = {l: ad.anatomy(l).mlp_reads for l in layers}

    def outputs() -> Capture:  # attention and MLP outputs and the heads' z at the query
        return Capture([(l, point) for l in layers for point in ("attn_out", "mlp_out", "z")], positions=(-1,))

    clean_out, inj_out = outputs(), outputs()
    resid = Capture(list(dict.fromkeys((l, point) for l in layers for point in ("resid_pre", mlp_reads[l]))),
                    positions=(pos,))
    pattern = Capture([(l, "pattern") for l in layers], positions=None if freeze_patterns else (-1,))
    with torch.no_grad():
        h = ad.residual(batch.tokens, layer)
        injected_stream = run_blocks(ad, h, layer, intervention=vec.injection + inj_out + pattern, ctx=q)
        frozen = [FixedPatterns({l: pattern[l, "pattern"] for l in layers})] if freeze_patterns else []
        clean_stream = run_blocks(ad, h, layer, intervention=compose([clean_out, resid, *frozen]), ctx=q)

    def stack(rec: Capture, point: str) -> Tensor:
        return torch.stack([rec[l, point][:, 0] for l in layers], 1)

    query_row = (lambda l: pattern[l, "pattern"][rows, :, q]) if freeze_patterns else \
        (lambda l: pattern[l, "pattern"][:, 0])
    weights = torch.stack([query_row(l)[rows, :, p] for l in layers], 1)
    theta = vec.vectors[0, 0].to(ad.device, ad.dtype)
    with torch.no_grad():
        mlp_in = [resid[l, mlp_reads[l]][:, 0] for l in layers]
        direct = torch.stack([ad.mlp_output(l, x + theta) - ad.mlp_output(l, x) for l, x in zip(layers, mlp_in)], 1)
        attn_clean = torch.stack([ad.native_module(l, "o")(clean_out[l, "z"][:, 0].flatten(-2)) for l in layers], 1)
    return ThetaEffects(theta=theta, layers=layers, query_pos=q, inj_pos=p, resid=stack(resid, "resid_pre"),
                        weights=weights, attn_delta=stack(inj_out, "attn_out") - stack(clean_out, "attn_out"),
                        mlp_delta=stack(inj_out, "mlp_out") - stack(clean_out, "mlp_out"), mlp_direct=direct,
                        start=h, clean_stream=clean_stream, injected_stream=injected_stream, position=pos,
                        attn_clean=attn_clean)


def packaged_ov_effect(model, cap: ThetaEffects, *, weighted: bool = True, norm_aware: bool = True
                       ) -> Float[Tensor, "batch n_sel d_model"]:
    """``E[b, i]``: the packaged OV effect of θ at each block ``l_i`` of ``cap`` (module docstring), in the
    residual basis: ``Σ_h w[b, i, h] · θ̃[b, i] W_V[l_i, h] W_O[l_i, h]``, passed through the block's
    post-attention norm ``P`` where it has one (Gemma, OLMo-2) as ``P(a + E) − P(a)``, ``a`` the clean pass's
    attention output at the query before that norm (``cap.attn_clean``)."""
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
    effect = torch.einsum("bih,bihd->bid", w.to(images.dtype), images)
    post = [i for i, l in enumerate(cap.layers) if ad.anatomy(l).attn_post_norm]
    if post:
        if cap.attn_clean is None:
            raise ValueError("this model has post-attention norms: the packaged OV effect needs cap.attn_clean "
                             "(a ThetaEffects made by capture())")
        effect = effect.clone()
        with torch.no_grad():
            for i in post:
                norm = ad.native_module(cap.layers[i], "attn")  # the post-attention norm (hook_attn_out's module)
                a = cap.attn_clean[:, i].to(effect.dtype)
                effect[:, i] = norm(a + effect[:, i]) - norm(a)
    return effect


def reconstruction_effect(model, cap: ThetaEffects, rec: Reconstruction) -> Float[Tensor, "batch n_sel d_model"]:
    """Per-block vectors that ``rec`` puts back, times ``rec.alpha``: the packaged OV effect (block ``l``'s
    slot zero with ``from_next``), the direct MLP path, the measured MLP/attention changes, or θ (slot 0)."""
    if rec.source == "ov":
        effect = packaged_ov_effect(model, cap, weighted=rec.weighted, norm_aware=rec.norm_aware)
        if rec.from_next:
            effect = torch.cat([torch.zeros_like(effect[:, :1]), effect[:, 1:]], 1)
    elif rec.source == "theta":
        effect = torch.zeros_like(cap.mlp_delta)
        effect[:, 0] = cap.theta
    else:
        effect = {"mlp_direct": cap.mlp_direct, "mlp": cap.mlp_delta, "attn": cap.attn_delta,
                  "attn_mlp": cap.attn_delta + cap.mlp_delta}[rec.source]
    return effect * rec.alpha if rec.alpha != 1 else effect


def reconstruction_injection(model, cap: ThetaEffects, rec: Reconstruction) -> Injection:
    """The injection that puts ``rec``'s effect back on the batch of ``cap`` (without θ): at the query, or at
    θ's position for the direct MLP path and θ; layer-wise at ``rec.layerwise_point`` (:func:`reinjection`).
    Attach it at ``cap.query_pos`` (``intervention=``, ``ctx=cap.query_pos``)."""
    effect = reconstruction_effect(model, cap, rec)
    position = cap.position if rec.at_injected_position else -1
    return reinjection(model, effect, cap.layers, rec.reinject, rec.layerwise_point, position)


def reinjection(model, effect: Float[Tensor, "batch n_sel d_model"], layers: Sequence[int],
                reinject: Reinject = "final", point: Point = "attn_out", position: int = -1) -> Injection:
    """The per-row :class:`~tvmech.interventions.injection.Injection` adding ``effect`` at each row's
    ``position`` (default the query): summed over blocks into the final residual stream (``"final"``:
    ``blocks.{L-1}.hook_resid_post``), or ``effect[:, i]`` at ``point`` of block ``layers[i]``
    (``"layerwise"``; default its attention output, so the block's own MLP reads it).

    Args:
        model: a TransformerLens model or its adapter.
        effect: per-row, per-block vectors (e.g. :func:`reconstruction_effect`).
        layers: the blocks of ``effect``'s second axis.
        reinject: ``"final"`` or ``"layerwise"``.
        point: where a layer-wise effect is added (``attn_out``, ``mlp_out``, ``resid_post`` or ``resid_pre``);
            ``"final"`` always adds at the final residual stream.
        position: the site position (negative: relative to the query).

    Returns:
        An injection to attach at the batch's query positions (``ctx=query_pos``).
    """
    ad = adapt(model)
    if reinject not in REINJECT:
        raise ValueError(f"reinject {reinject!r} is not valid; choose one of {REINJECT}")
    check_point(point, RESIDUAL_POINTS)
    layers = tuple(layers)
    if effect.ndim != 3 or effect.shape[1] != len(layers):
        raise ValueError(f"effect of shape {tuple(effect.shape)} does not fit [batch, {len(layers)} layers, d_model]")
    if reinject == "final":
        return Injection(effect.sum(1)[:, None, None], (ad.n_layers - 1,), (position,), point="resid_post")
    return Injection(effect[:, :, None], layers, (position,), point=point)


__all__ = ["factored_matrix", "check_head", "ov_circuits", "ov_images", "head_ov_image", "Reconstruction",
           "ThetaEffects", "single_site", "capture", "packaged_ov_effect", "reconstruction_effect",
           "reconstruction_injection", "reinjection", "Reinject", "Source"]
