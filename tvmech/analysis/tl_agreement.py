"""tvmech's measurements against TransformerLens's own tools (``transformer_lens.tools.analysis``).

Where two independent implementations compute the same quantity they must agree to rounding; where tvmech
computes a variant, the relation is stated here and measured.

Jacobian (``JacobianLens``). TransformerLens's J-lens of source layer ``s`` on prompts ``P`` is

    J_TL(s) = mean_{p ∈ P} mean_{t ∈ V_p} Σ_{t' ∈ V_p, t' ≥ t} ∂h_final[t'] / ∂h_s[t],

``h_s = blocks.{s}.hook_out`` (the output of block ``s``), ``h_final`` the last block's output (before the final
norm), ``V_p = [skip_first_positions, len(p) − 1)``: an average of Jacobians at the *unperturbed* stream (θ = 0)
over many positions, every later target position summed. tvmech's exact Jacobian (:func:`tvmech.analysis.tv_map.
exact_jacobian`) is ``J(x) = ∂/∂x mean_p F_p(x)`` with ``F_p(x)`` the final stream at the query ``q_p`` when ``x``
is added to ``blocks.{l}.hook_resid_pre`` at ``q_p``, the stream that *enters* block ``l``, i.e. the output of block
``l − 1``. With one position per prompt (``V_p = {q_p}``: :func:`tvmech.core.transformerlens.jacobian_lens_at`
cuts the prompt to ``q_p + 2`` tokens and skips the first ``q_p``) the two are the same quantity:

    J_tvmech(θ = 0, layer l) = mean_p J_TL,p(source l − 1, V_p = {q_p})        (l = 1 .. L − 1)

(``l = 0``, the embeddings, has no J-lens: its sources are block outputs below the last block). Measured:
``jac_one_rel`` (one prompt) and ``jac_mean_rel`` (the mean over the prompts), relative Frobenius errors.

W_TV vs J-lens. ``W_TV(l)`` (:func:`tvmech.analysis.tv_map.fit_tv_map`) is a variant: a least-squares secant fitted
around θ (perturbations of relative size 0.05–0.2), not a tangent at 0. It differs from the J-lens by the
curvature of the response between 0 and θ (``jac_theta_rel``: the exact ``J(θ)`` against the J-lens) and by the
finite noise (``wtv_rel``: ``‖W − J_TL‖_F / ‖J_TL‖_F``; ``wtv_cos``: ``cos(W θ, J_TL θ)``, the direction the map
sends θ to).

Head attribution (``attribution_patch``). For a clean/corrupt pair that differ only at the query token, θ =
``h_0,corrupt[q] − h_0,clean[q]`` (the streams entering block 0) added at the query of the clean prompt *is* the
corrupt run. tvmech's signed ``tv_reliance`` score (:func:`tvmech.analysis.head_attribution.taylor_scores`),
``(z_θ − z_clean)[q] · ∂p/∂z[q]`` with the gradient in the θ run, and TransformerLens's node score
``(z_clean − z_corrupt) · ∂p/∂z`` (gradient in the corrupt run, summed over positions; positions before ``q`` are
equal in both runs and score 0) are then the same number with opposite signs: ``taylor_signed = −ap``. Measured:
``ap_rel = ‖taylor_signed + ap‖ / ‖ap‖``. tvmech keeps its own implementation: its θ is any vector added at any
layer (not expressible as a token pair), its batch is right-padded with per-row query positions, it scores only
the query position and reports ``|·|`` averaged over prompts; attribution patching needs token pairs of equal
length, one pair per forward. GQA models work at node granularity in both (only TL's edge granularity refuses
them).

Logit lens (``logit_readout``, ``logit_lens``). tvmech's :func:`tvmech.analysis.lens.lens_logits` (``Adapter.unembed``:
final norm, unembedding, Gemma-2's soft-cap) and TL's ``logit_readout`` (``ln_final``, ``@ W_U + b_U``, the
adapter's output transform) compute the same function (``lens_rel``: relative max difference of the logits on
random vectors); the stack at the last position (``lens_stack_rel``: :func:`tvmech.analysis.lens.query_states`
against ``logit_lens``) is the same too. tvmech keeps its own: ``query_states`` reads each row of a right-padded
batch at its own query position and can add θ before reading (``logit_lens`` reads one position slice and runs
no intervention), and ``Adapter.unembed`` also serves models wrapped by TransformerLens 3.x (``HookedTransformer``),
which has no ``tools.analysis``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.head_attribution import taylor_scores
from tvmech.analysis.lens import lens_logits, query_states
from tvmech.analysis.tv_map import MapConfig, exact_jacobian, fit_tv_map
from tvmech.core import transformerlens as tl
from tvmech.core.adapter import adapt
from tvmech.data.prompts import Batch, Prompt, encode
from tvmech.data.tasks import Task
from tvmech.interventions.task_vector import TaskVector


@dataclass(frozen=True)
class QueryRows:
    """Prompts (``texts``: prompt and label) as TransformerLens tokenizes them (``ids``), with the query
    ``query[i]`` before at least one more token."""

    texts: tuple[str, ...]
    ids: tuple[tuple[int, ...], ...]
    query: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, index: Sequence[int]) -> QueryRows:
        """The rows ``index``."""
        return QueryRows(*(tuple(part[i] for i in index) for part in (self.texts, self.ids, self.query)))

    def batch(self, pad: int = 0) -> Batch:
        """The rows cut after their query, right-padded (``label_first``: the token after the query)."""
        width = max(self.query) + 1
        tokens = torch.full((len(self.ids), width), pad, dtype=torch.long)
        for b, (row, q) in enumerate(zip(self.ids, self.query)):
            tokens[b, : q + 1] = torch.tensor(row[: q + 1])
        q = torch.tensor(self.query)
        nxt = torch.tensor([row[i + 1] for row, i in zip(self.ids, self.query)])
        return Batch(tokens, q, nxt, torch.full_like(tokens, -100), q + 1)


def query_rows(model, task: Task, prompts: Sequence[Prompt]) -> QueryRows:
    """TransformerLens's tokens (:func:`tvmech.core.transformerlens.to_tokens`) of each prompt followed by its
    label; the query is the prompt's last token. Prompts whose label merges with the prompt's last token (the
    tokens of prompt + label do not start with those of the prompt) are left out.

    Raises:
        ValueError: no prompt is left.
    """
    ad = adapt(model)
    texts, ids, query = [], [], []
    for p in prompts:
        text = p.text + task.template.label(p.label)
        head, full = tl.to_tokens(ad.model, p.text), tl.to_tokens(ad.model, text)
        if len(full) > len(head) and full[: len(head)] == head:
            texts.append(text)
            ids.append(tuple(full))
            query.append(len(head) - 1)
    if not ids:
        raise ValueError(f"task {task.name!r}: no prompt whose label tokenizes apart from the prompt")
    return QueryRows(tuple(texts), tuple(ids), tuple(query))


def _rel(a: Tensor, b: Tensor) -> float:
    """``‖a − b‖ / ‖b‖`` (float64)."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _cos(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double().reshape(-1), b.double().reshape(-1), dim=0))


def jacobian_agreement(model, rows: QueryRows, layer: int, theta: Float[Tensor, " d_model"] | None = None,
                       config: MapConfig | None = None) -> dict:
    """tvmech's exact Jacobian and ``W_TV`` at ``layer`` against TransformerLens's J-lens of block ``layer − 1``
    (see the module docstring).

    Args:
        model: a bridge model (raw weights).
        rows: the prompts (:func:`query_rows`).
        layer: tvmech's injection layer, ``1 .. n_layers − 1``.
        theta: the task vector; ``None`` leaves out ``jac_theta_rel`` and the ``W_TV`` columns.
        config: the ``W_TV`` fit's settings (default :class:`MapConfig`).

    Returns:
        ``layer, n_prompts, jac_one_rel, jac_mean_rel``, the seconds of the J-lens fits and of tvmech's exact
        Jacobians (``seconds_jlens``, ``seconds_exact``) and, with θ, ``jac_theta_rel, wtv_rel, wtv_cos``.
    """
    ad = adapt(model)
    if not 1 <= layer <= ad.n_layers - 1:
        raise ValueError(f"layer {layer}: the J-lens's sources are outputs of blocks 0..{ad.n_layers - 2}, i.e. "
                         f"tvmech layers 1..{ad.n_layers - 1}")
    t0 = time.perf_counter()
    J_tl = [tl.jacobian_lens_at(ad.model, text, layer - 1, q) for text, q in zip(rows.texts, rows.query)]
    t_tl = time.perf_counter() - t0
    J_bar = torch.stack(J_tl).mean(0)
    zero = torch.zeros(ad.d_model)
    pad = ad.tokenizer.pad_token_id or 0
    batch = rows.batch(pad)
    t0 = time.perf_counter()
    J_one = exact_jacobian(ad, rows.take([0]).batch(pad), zero, layer)
    J_mean = J_one if len(batch) == 1 else exact_jacobian(ad, batch, zero, layer)
    out = {"layer": layer, "n_prompts": len(batch), "jac_one_rel": _rel(J_one, J_tl[0]),
           "jac_mean_rel": _rel(J_mean, J_bar), "seconds_jlens": t_tl, "seconds_exact": time.perf_counter() - t0}
    if theta is not None:
        theta = theta.detach().float().cpu().reshape(-1)
        W = fit_tv_map(ad, batch, theta, layer, config or MapConfig()).W
        out |= {"jac_theta_rel": _rel(exact_jacobian(ad, batch, theta, layer), J_bar), "wtv_rel": _rel(W, J_bar),
                "wtv_cos": _cos(W @ theta, J_bar @ theta)}
    return out


def attribution_agreement(model, task: Task, prompts: Sequence[Prompt], swap: int) -> dict:
    """tvmech's signed ``tv_reliance`` Taylor scores against TransformerLens's ``attribution_patch`` on
    clean/corrupt pairs that differ at the query token (see the module docstring).

    Args:
        model: a bridge model.
        task: the prompts' task.
        prompts: the clean prompts (tvmech's tokenization), one pair each.
        swap: the corrupt query token (it must differ from every clean query token).

    Returns:
        ``ap_rel = ‖taylor_signed + ap‖ / ‖ap‖`` over all heads (``taylor_signed`` and ``ap`` averaged over the
        pairs), ``ap_norm = ‖ap‖``, ``n_pairs``, and the two tools' seconds.
    """
    ad = adapt(model)
    signed, ap, t_tvm, t_tl = [], [], 0.0, 0.0
    for p in prompts:
        batch = encode(ad.tokenizer, task, [p])
        clean = batch.tokens.to(ad.device)
        q, y = int(batch.query_pos[0]), int(batch.label_first[0])
        if int(clean[0, q]) == swap:
            raise ValueError(f"the corrupt token {swap} is the clean query token of {p.text!r}")
        corrupt = clean.clone()
        corrupt[0, q] = swap
        with torch.no_grad():
            theta = (ad.residual(corrupt, 0) - ad.residual(clean, 0))[0, q].float().cpu()
        t0 = time.perf_counter()
        vec = TaskVector.for_model(ad, theta[None, None], (0,), (-1,))
        signed.append(taylor_scores(ad, vec, task, [p]).signed.double())
        t_tvm += time.perf_counter() - t0

        def metric(logits: Tensor, q: int = q, y: int = y) -> Tensor:
            return torch.softmax(logits[0, q].float(), -1)[y]

        t0 = time.perf_counter()
        ap.append(tl.attribution_head_scores(ad.model, clean, corrupt, metric))
        t_tl += time.perf_counter() - t0
    s, a = torch.stack(signed).mean(0), torch.stack(ap).mean(0)
    return {"ap_rel": _rel(-s, a), "ap_norm": float(a.norm()), "n_pairs": len(prompts), "seconds_taylor": t_tvm,
            "seconds_ap": t_tl}


def lens_agreement(model, rows: QueryRows, n_vectors: int = 64, seed: int = 0, repeats: int = 3) -> dict:
    """tvmech's logit lens against TransformerLens's (see the module docstring).

    Args:
        model: a bridge model.
        rows: prompts (:func:`query_rows`); the stack is compared on each one alone, cut after its query.
        n_vectors: random vectors (of the residual stream's scale) decoded by both readouts.
        seed: their seed.
        repeats: timing repeats of the readouts (the best is kept).

    Returns:
        ``lens_rel`` (readout: ``max|Δ logits| / max|logits|``), ``lens_stack_rel`` (the same for the stack at the
        query, worst prompt) and the readouts' best seconds, ``seconds_lens_tvmech`` / ``seconds_lens_tl``.
    """
    ad = adapt(model)
    with torch.no_grad():
        scale = float(ad.residual(rows.take([0]).batch().tokens.to(ad.device), ad.n_layers).float().std())
    gen = torch.Generator().manual_seed(seed)
    v = (torch.randn(n_vectors, ad.d_model, generator=gen) * scale).to(ad.device, ad.dtype)

    def best(f) -> tuple[Tensor, float]:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = f()
            times.append(time.perf_counter() - t0)
        return out, min(times)

    ours, t_ours = best(lambda: lens_logits(ad, v))
    theirs, t_theirs = best(lambda: tl.logit_readout(ad.model, v))
    stack = 0.0
    for i in range(len(rows)):
        one = rows.take([i]).batch()
        mine = lens_logits(ad, query_states(ad, one.tokens, one.query_pos))
        other = tl.logit_lens_final_position(ad.model, one.tokens.to(ad.device)).cpu()
        stack = max(stack, float((mine.cpu() - other).abs().max() / other.abs().max()))
    return {"lens_rel": float((ours.cpu() - theirs.cpu()).abs().max() / theirs.abs().max()),
            "lens_stack_rel": stack, "seconds_lens_tvmech": t_ours, "seconds_lens_tl": t_theirs}


def guarded(name: str, f, *args, **kwargs) -> dict:
    """``f(*args, **kwargs)``, or ``{name + "_error": "<Type>: <message>"}`` where a tool fails on this model
    (recorded, not hidden)."""
    try:
        return f(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the failure is the result
        return {f"{name}_error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"}


__all__ = ["QueryRows", "query_rows", "jacobian_agreement", "attribution_agreement", "lens_agreement", "guarded"]
