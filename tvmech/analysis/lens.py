"""Logit lens: read residual-stream vectors (hidden states or task vectors) in vocabulary space.

Decoding. Any vector ``v ∈ R^d`` is decoded as the model decodes its final residual stream:
``p = softmax(W_Uᵀ norm(v) + b_U)`` (``Adapter.unembed``: final norm, then unembedding). For a hidden
state entering block ``l`` this is the *logit lens* at layer ``l``; for a bare task vector θ it shows
which tokens θ itself points at.

Task alignment. With an RMSNorm final norm ``norm(h) = g ⊙ h / rms(h)``, the logit of token ``t`` is
``z_t = (g ⊙ W_U[:, t]) · h / rms(h) + b_t``. The *effective unembedding* ``E[:, t] = g ⊙ W_U[:, t]``
is read off the lens itself, ``E = (unembed(√d · I) − unembed(0)) / √d`` (row ``i``: the logits of the
unit-RMS basis vector ``√d e_i``, divided by its only coordinate ``√d``), so no weight is touched
outside the adapter; for any unit-RMS ``h``, ``unembed(h) − unembed(0) = h E``. The *label direction*
of token ``t`` is the direction in residual space that raises ``z_t`` above the vocabulary's mean logit,

    u_t = E[:, t] − mean_v E[:, v],

and for a task with label first tokens ``T`` (every distinct first token of its outputs)

    task_alignment(v)  = cos(v, ū),   ū ∝ mean_{t ∈ T} u_t / ‖u_t‖, ‖ū‖ = 1   (the task's mean label direction)
    label_alignment(h) = cos(h, u_y)  for a prompt whose label's first token is y.

A random direction has alignment ≈ 0 (± 1/√d ≈ 0.04 for d = 576). Hidden states are not random: on
SmolLM2-135M the query state entering block 0 (the embedding of the prompt's last token) already scores
about 0.2–0.3, so compare conditions and layers rather than reading the absolute value.

Per-layer metrics (:func:`lens_metrics`), at each prompt's query position, for the states entering
blocks 0..L−1 and the final stream (layer ``L = n_layers``, where the lens is the model's own output):
``accuracy`` = fraction of prompts whose lens argmax over the *whole* vocabulary is the label's first
token (also for closed-label tasks, which ``tvmech.analysis.evaluation`` scores within their label set);
``p_correct`` = mean lens probability of that token; ``task_alignment`` / ``label_alignment`` as above,
averaged over prompts; ``top_tokens`` = the top-k tokens of the lens distribution averaged over prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tvmech.analysis.ov import single_site
from tvmech.core.adapter import adapt
from tvmech.data.prompts import Prompt, as_prompts, batches, label_ids
from tvmech.data.tasks import Task
from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import Intervention, compose, residual
from tvmech.interventions.injection import Injection
from tvmech.interventions.task_vector import TaskVector, vector_and_layer


@dataclass(frozen=True)
class Decoded:
    """Top-k tokens of one decoded vector, most probable first."""

    ids: tuple[int, ...]
    """The token ids."""
    tokens: tuple[str, ...]
    """The decoded tokens."""
    probs: tuple[float, ...]
    """Their probabilities under the logit lens."""

    def text(self, n: int | None = None) -> str:
        """``'tok' 0.41, 'tok2' 0.12, ...`` (the first ``n``)."""
        return ", ".join(f"{t!r} {p:.2f}" for t, p in list(zip(self.tokens, self.probs))[:n])


def lens_logits(model, vectors: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
    """``unembed(norm(v))`` for every vector (the logit lens), in float32."""
    ad = adapt(model)
    with torch.no_grad():
        return ad.unembed(vectors.to(ad.device, ad.dtype)).float()


def decode(model, vectors: Float[Tensor, "... d_model"], k: int = 5) -> list[Decoded]:
    """Top-``k`` tokens (with probabilities) of each vector, flattened over the leading dimensions."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ad = adapt(model)
    if vectors.shape[-1] != ad.d_model:
        raise ValueError(f"vectors of size {vectors.shape[-1]} do not fit the model's d_model {ad.d_model}")
    probs = torch.softmax(lens_logits(ad, vectors.reshape(-1, ad.d_model)), -1)
    top = probs.topk(k, dim=-1)
    return [_decoded(ad.tokenizer, i.tolist(), p.tolist()) for i, p in zip(top.indices, top.values)]


def _decoded(tokenizer, ids: list[int], probs: list[float]) -> Decoded:
    return Decoded(tuple(ids), tuple(tokenizer.decode([i]) for i in ids), tuple(float(p) for p in probs))


def effective_unembedding(model, chunk: int = 64) -> Float[Tensor, "d_model d_vocab"]:
    """``E = (unembed(√d · I) − unembed(0)) / √d``: the unembedding as seen through the final norm
    (``g ⊙ W_U`` for an RMSNorm with weight ``g``; float32, CPU)."""
    ad = adapt(model)
    d = ad.d_model
    zero = lens_logits(ad, torch.zeros(1, d))
    rows = [(lens_logits(ad, torch.eye(d)[s : s + chunk] * d**0.5) - zero) / d**0.5 for s in range(0, d, chunk)]
    return torch.cat(rows).cpu()


def label_first_tokens(model, task: Task) -> list[int]:
    """The distinct first tokens of the task's labels (its closed label set, else all its outputs)."""
    ad = adapt(model)
    outputs = task.labels or tuple(dict.fromkeys(e.output for e in task.examples))
    return list(dict.fromkeys(label_ids(ad.tokenizer, task, o)[0] for o in outputs))


@dataclass(frozen=True)
class LabelDirections:
    """The label directions ``u_t`` (rows) of a task's label first tokens and its mean direction ``ū``."""

    tokens: tuple[int, ...]
    """The label first tokens, one per row of ``u``."""
    u: Float[Tensor, "n d_model"]
    """``u_t = E[:, t] − mean_v E[:, v]`` for each token."""
    mean: Float[Tensor, " d_model"]
    """``ū``, the mean of the normalised ``u_t``, normalised."""

    def of(self, token_ids: Sequence[int]) -> Float[Tensor, "batch d_model"]:
        """The rows of ``u`` of ``token_ids`` (each a label first token)."""
        index = {t: i for i, t in enumerate(self.tokens)}
        missing = [t for t in token_ids if int(t) not in index]
        if missing:
            raise ValueError(f"tokens {missing[:5]} are not label first tokens of this task")
        return self.u[[index[int(t)] for t in token_ids]]


def label_directions(model, task: Task) -> LabelDirections:
    """``u_t = E[:, t] − mean_v E[:, v]`` for the task's label first tokens, and
    ``ū = mean_t (u_t / ‖u_t‖)``, normalised (float32, CPU)."""
    tokens = label_first_tokens(model, task)
    E = effective_unembedding(model)
    u = (E[:, tokens] - E.mean(1, keepdim=True)).T.contiguous()
    mean = (u / u.norm(dim=1, keepdim=True)).mean(0)
    return LabelDirections(tuple(tokens), u, mean / mean.norm())


def task_direction(model, task: Task) -> Float[Tensor, " d_model"]:
    """``ū``, the task's mean label direction (unit norm)."""
    return label_directions(model, task).mean


def alignment(vectors: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"]) -> Float[Tensor, "..."]:
    """``cos(v, direction)`` for every vector (float32, CPU)."""
    v = vectors.detach().float().cpu()
    return torch.nn.functional.cosine_similarity(v, direction.float().cpu().expand_as(v), dim=-1)


def query_states(model, tokens: Int[Tensor, "batch pos"], query_pos: Int[Tensor, " batch"],
                 vector: Float[Tensor, " d_model"] | TaskVector | None = None, layer: int | None = None
                 ) -> Float[Tensor, "n_layers_plus_1 batch d_model"]:
    """Residual stream at each row's query position entering blocks 0..L−1, then the final stream.

    One forward pass: a :class:`~tvmech.interventions.capture.Capture` of ``resid_pre`` at the query of
    every block, and the final stream from the pass itself. With ``vector`` and ``layer``, an
    :class:`~tvmech.interventions.injection.Injection` adds it first, ``h_layer[q] += vector`` at
    ``blocks.{layer}.hook_resid_pre``, so entry ``layer`` of the result already includes it.

    Args:
        model: a TransformerLens model or its adapter.
        tokens: right-padded prompts.
        query_pos: each row's query index.
        vector: an optional vector to add at the query of ``layer``: a tensor, or a one-site
            :class:`~tvmech.interventions.task_vector.TaskVector` (its own layer; ``layer`` may be omitted
            and must agree when given).
        layer: the block whose input receives ``vector``.

    Returns:
        ``[n_layers + 1, batch, d_model]`` float32 states on the CPU.
    """
    ad = adapt(model)
    if vector is None and layer is not None:
        raise ValueError("give both vector and layer (an injection) or neither")
    if vector is not None:
        vector, layer = vector_and_layer(vector, layer, "vector")
    if layer is not None:
        ad.check_layer(layer)
    rows = torch.arange(tokens.shape[0], device=ad.device)
    q = query_pos.to(ad.device)
    record = Capture([(l, "resid_pre") for l in range(ad.n_layers)], positions=(-1,))
    parts: list[Intervention] = [record]
    if vector is not None:
        parts.insert(0, Injection.single(vector.reshape(-1), layer))  # before the capture at the same point
    with torch.no_grad():
        final = residual(ad, tokens.to(ad.device), ad.n_layers, intervention=compose(parts), ctx=q)[rows, q]
    states = [record[l, "resid_pre"][:, 0] for l in range(ad.n_layers)] + [final]
    return torch.stack(states).float().cpu()


def lens_metrics(model, task: Task, prompts: Sequence[Prompt], vector: TaskVector | None = None, *,
                 top_k: int = 5, batch_size: int = 16) -> list[dict]:
    """One record per layer 0..L (``L`` = the final stream): ``layer, accuracy, p_correct,
    task_alignment, label_alignment, top_tokens, n`` (see the module docstring).

    ``vector``: a single-layer, single-position (``-1``, the query) task vector, added at its layer.
    """
    ad = adapt(model)
    prompts = as_prompts(prompts)
    if not prompts:
        raise ValueError("lens_metrics needs at least one prompt")
    inj: tuple[Tensor, int] | tuple[None, None] = (None, None)
    if vector is not None:
        layer, pos = single_site(ad, vector)
        if pos != -1:
            raise ValueError(f"lens_metrics takes a vector added at the query (position -1); got position {pos}")
        inj = (vector.vectors.reshape(-1, ad.d_model)[0], layer)
    dirs = label_directions(ad, task)
    L = ad.n_layers + 1
    correct, p_correct, t_align, l_align = (torch.zeros(L, dtype=torch.float64) for _ in range(4))
    mean_probs: Tensor | None = None
    n = 0
    for _, batch in batches(ad.tokenizer, task, list(prompts), batch_size):
        states = query_states(ad, batch.tokens, batch.query_pos, *inj)  # [L, B, d]
        probs = torch.softmax(lens_logits(ad, states), -1).cpu()  # [L, B, V]
        y = batch.label_first
        correct += (probs.argmax(-1) == y[None]).double().sum(1)
        p_correct += probs.gather(2, y[None, :, None].expand(L, -1, 1))[..., 0].double().sum(1)
        total = probs.double().sum(1)
        mean_probs = total if mean_probs is None else mean_probs + total
        t_align += alignment(states, dirs.mean).double().sum(1)
        own = dirs.of(y.tolist())  # [B, d]: each prompt's own label direction
        l_align += torch.nn.functional.cosine_similarity(states, own[None].expand_as(states), dim=-1).double().sum(1)
        n += len(batch)
    top = (mean_probs / n).topk(top_k, dim=-1)
    return [{"layer": l, "accuracy": float(correct[l] / n), "p_correct": float(p_correct[l] / n),
             "task_alignment": float(t_align[l] / n), "label_alignment": float(l_align[l] / n),
             "top_tokens": _decoded(ad.tokenizer, top.indices[l].tolist(), top.values[l].tolist()).text(top_k),
             "n": n} for l in range(L)]


def decode_vector_rows(model, vectors: dict[int, Float[Tensor, " d_model"]], task: Task, k: int = 5) -> list[dict]:
    """For task vectors at several layers (``{layer: θ}``): their top-``k`` lens tokens, whether any
    of those is one of the task's label first tokens (``label_in_top_k``), and ``task_alignment``."""
    ad = adapt(model)
    if not vectors:
        raise ValueError("decode_vector_rows needs at least one vector")
    dirs = label_directions(ad, task)
    labels = set(dirs.tokens)
    layers = sorted(vectors)
    stacked = torch.stack([vectors[l].reshape(-1) for l in layers])
    decoded = decode(ad, stacked, k)
    align = alignment(stacked, dirs.mean)
    return [{"task": task.name, "layer": l, "top_tokens": dec.text(), "label_in_top_k": bool(labels & set(dec.ids)),
             "task_alignment": float(a)} for l, dec, a in zip(layers, decoded, align)]


__all__ = ["Decoded", "lens_logits", "decode", "effective_unembedding", "label_first_tokens", "LabelDirections",
           "label_directions", "task_direction", "alignment", "query_states", "lens_metrics",
           "decode_vector_rows"]
