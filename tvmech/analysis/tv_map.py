"""How a task vector injected at layer l reaches the output: a fitted linear map W_TV(l) and the exact Jacobian.

Response. For a prompt ``p`` with query position ``q``, let ``F_p(x)`` be the final residual stream
(before the final norm) at ``q`` when ``x`` is added to ``h_l[q]`` (``blocks.{l}.hook_resid_pre``). The
response to ``x`` is ``Δ_p(x) = F_p(x) − F_p(0)``; it includes the residual path, so ``Δ_p(x) = x + ...``.
With ``P`` fit prompts the map is fitted to the mean response ``Δ(x) = mean_p Δ_p(x)``: every perturbed
vector runs on every fit prompt. (Pooling single-prompt samples instead would leave the differences
between prompts, which no single ``W`` can explain, as noise in the targets.)

Fit. ``W_TV(l)`` (d × d) is fitted so that ``W x ≈ Δ(x)`` near ``x = θ`` (the task vector), from
perturbed vectors

    x_i = θ + λ_i ‖θ‖ ε_i,    ε_i uniform on the unit sphere,    λ_i cycling over ``noise_scales``.

Without the noise every ``x_i`` would be θ and the fit rank one. No intercept (``Δ(0) = 0``), so
``W θ ≈ Δ(θ)``; in the noise directions ``W`` approaches the local Jacobian as λ → 0. Solvers, with
``X`` (n × d) and ``Y`` (n × d) stacked:

* ``lstsq``: ``W = argmin Σ_i ‖W x_i − y_i‖²``; needs ``n ≥ d`` (``X`` of full column rank);
* ``ridge``: ``W = Yᵀ X (XᵀX + α m I)⁻¹`` with ``m = Σ_i ‖x_i − x̄‖² / d`` the perturbations' mean
  variance per direction (times n), so ``α`` is relative to what the noise reveals of each direction
  (scaling by ``tr(XᵀX)/d`` instead would let the shared θ component set the penalty); any ``n ≥ 1``;
* ``jacobian``: no samples, ``W = J`` (below), the λ → 0 limit of the fit, at the cost of one Jacobian
  (``d`` backward passes, vectorised) instead of ``2d`` perturbed forward passes; the held-out R², per-prompt
  R² and ray test are measured as for a fit (``r2_train`` is NaN).

Quality. ``R² = 1 − Σ‖y_i − W x_i‖² / Σ‖y_i − ȳ‖²`` on held-out perturbations drawn the same way with
another seed (and on the fit samples), for the mean response ``y_i = Δ(x_i)``. Per-prompt R², centred (the
headline, ``r2_per_prompt_centred``): for each fit prompt ``p``, ``y_i = Δ_p(x_i)`` against the one shared ``W``
(held-out perturbations) with the residuals ``y_i − W x_i`` centred per prompt (over ``i``) before they are
squared: how well the map fitted to the mean explains the prompt's response to the *perturbations* around θ.
The uncentred ``r2_per_prompt`` (kept) also pays for the prompt's constant offset ``Δ_p(θ) − Δ(θ)``, which no
shared ``W`` can carry, and reaches large negative values that say little about the map.
``theta_rel_error = ‖W θ − Δ(θ)‖ / ‖Δ(θ)‖`` is small by construction (θ is the centre of the fit samples).
The *ray test* asks more: along the ray ``αθ`` (``α`` in ``ray_alphas``, default 0.25, 0.5, 2, 4, i.e. far
outside the fit's noise ball), ``rel_error(α) = ‖Δ(αθ) − α W θ‖ / ‖Δ(αθ)‖`` and ``cos(Δ(αθ), α W θ)``
(:func:`ray_test`); a linear response gives 0 and 1 for every α.

Efficiency. The residual entering block ``l`` is computed once per fit prompt (truncated after its
query token); each batch of ``batch_size`` perturbed vectors × ``P`` prompts (default: about
``ROWS_PER_PASS`` rows) runs only blocks ``l..L−1`` (``Adapter.run_blocks``), and on the fast path only the
positions from the earliest query on: the keys and values of the positions before it, which θ cannot reach
under the causal mask, are computed once (a frozen prefix). Cost: ``(n_samples + n_heldout + 1) × P`` rows of
``width − min_p q_p`` positions through ``L − l`` blocks. The least squares (float64, by QR: ``X = QR``,
``Wᵀ = R⁻¹ QᵀY``; SVD only where ``R`` is numerically singular) and the R² run on the model's device: the host's
float64 SVD of the ``2d × d`` design grows as ``d³`` (31 s at ``d = 1024`` on a 2-core CPU).

Reconstructed TV. ``W θ`` is added to the final residual stream (``blocks.{L−1}.hook_resid_post``) at the
query instead of θ at layer ``l`` (:func:`final_injection`). The logit lens of that final stream is the
model's output, so the reconstructed accuracy is also the *linear-surrogate* decoding accuracy of θ through
``W``; it is reported beside the plain logit lens of ``h_l[q] + θ`` at layer ``l`` (decoding without the map).
One vector is added for every prompt, but its effect on the logits is not the same for every prompt: the final
norm divides ``h_L + Wθ`` by each prompt's own scale, and the clean logits keep the query, so a task whose
answer depends on the query can still be carried in part.

Jacobian. ``J = ∂/∂x mean_p F_p(x)`` at ``x = θ`` (``torch.func.jacrev`` or ``jacfwd``; :func:`jacobians` takes
it at several vectors in one call, every prompt batched), compared to ``W`` by ``‖J − W‖_F / ‖J‖_F``, the cosine
of the flattened matrices, and ``‖(J − W) θ‖ / ‖J θ‖``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.linear_fit import (  # noqa: F401 - re-exported: the generic fit
    MAP_SOLVERS,
    RAY_ALPHAS,
    ROWS_PER_PASS,
    SOLVERS,
    LinearMap,
    MapConfig,
    Response,
    fit_linear_map,
    per_prompt_r2,
    perturbations,
    r_squared,
    ray_test,
    solve,
)
from tvmech.core.adapter import adapt
from tvmech.data.prompts import Batch, encode, make_prompts
from tvmech.data.tasks import Example, Task, as_examples
from tvmech.interventions.engine import run_blocks
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import Context
from tvmech.interventions.task_vector import TaskVector, vector_and_layer


# ----------------------------------------------------------------------------------- the model's response
def _prefix(ad, batch: Batch, layer: int) -> tuple[Tensor, Tensor, Tensor]:
    """Residual entering ``layer`` (rows truncated after the last query token), query positions, F_p(0)."""
    width = int(batch.query_pos.max()) + 1
    q = batch.query_pos.to(ad.device)
    rows = torch.arange(len(batch), device=ad.device)
    with torch.no_grad():
        resid = ad.residual(batch.tokens[:, :width].to(ad.device), layer)
        base = ad.run_blocks(resid, layer)[rows, q]
    return resid, q, base


def tv_response(model, batch: Batch, layer: int, *, per_prompt: bool = False, frozen: bool = True) -> Response:
    """``X -> Δ(X)``: each row of ``X`` added at ``layer`` to every prompt's query; the mean final-stream change
    (``[b, d]``), or with ``per_prompt`` each prompt's own ``Δ_p`` (``[b, n_prompts, d]``).

    The prefix (blocks ``0..layer−1``) runs once here; each call runs blocks ``layer..L−1`` on
    ``len(X) × len(batch)`` rows. With ``frozen`` (where the fast path is taken), the positions before the
    earliest query, which θ cannot reach under the causal mask, are run once too: their keys and values at blocks
    ``layer..`` (:meth:`~tvmech.core.running.BlockRunner.prefix_kv`) serve every call, which then runs only the
    positions from that query on.
    """
    ad = adapt(model)
    ad.check_layer(layer)
    resid, q, base = _prefix(ad, batch, layer)
    P = len(batch)
    cut = int(q.min())
    prefix = ad.prefix_kv(resid, layer, cut) if frozen and cut > 0 and ad.fast() else None
    if prefix is None:
        cut = 0

    def response(X: Tensor) -> Tensor:
        b = X.shape[0]
        qq = q.repeat(b)  # row i * P + p: vector i on prompt p
        rows = torch.arange(b * P, device=ad.device)
        injection = Injection(X.repeat_interleave(P, 0)[:, None, None], (layer,))  # per row: [b * P, 1, 1, d]
        kv = None if prefix is None else prefix.rows(torch.arange(P, device=ad.device).repeat(b))
        with torch.no_grad():
            out = run_blocks(ad, resid[:, cut:].repeat(b, 1, 1), layer, intervention=injection,
                             ctx=Context(qq, offset=cut), prefix=kv)[rows, qq - cut].view(b, P, -1)
        delta = (out - base[None]).double().cpu()
        return delta if per_prompt else delta.mean(1)

    return response


def fit_prompts(model, task: Task, queries: Sequence[Example]) -> Batch:
    """Zero-shot prompts of ``queries`` as one right-padded batch (the prompts a map is fitted on)."""
    if not as_examples(queries, "queries"):
        raise ValueError("at least one fit prompt is needed")
    return encode(adapt(model).tokenizer, task, make_prompts(task, queries, 0))


def fit_tv_map(model, batch: Batch, theta: Float[Tensor, " d_model"] | TaskVector, layer: int | None = None,
               config: MapConfig = MapConfig(), *, progress: bool = True) -> LinearMap:
    """Fit ``W_TV(layer)`` on the prompts of ``batch`` around θ (see the module docstring); θ a tensor with its
    ``layer``, or a one-site :class:`~tvmech.interventions.task_vector.TaskVector` (its layer; a ``layer`` that
    disagrees is refused, :func:`~tvmech.interventions.task_vector.vector_and_layer`)."""
    theta, layer = vector_and_layer(theta, layer)
    ad = adapt(model)
    ad.check_layer(layer)
    theta = theta.detach().reshape(-1)
    if theta.shape[0] != ad.d_model:
        raise ValueError(f"θ has size {theta.shape[0]}; the model's d_model is {ad.d_model}")
    config.samples_for(ad.d_model)  # fail before any forward pass
    W = exact_jacobian(ad, batch, theta, layer) if config.solver == "jacobian" else None
    return fit_linear_map(tv_response(ad, batch, layer, per_prompt=True), theta, config, layer=layer,
                          n_prompts=len(batch), progress=progress, device=ad.device, W=W)


# ----------------------------------------------------------------------------------- exact Jacobian
def jacobians(model, batch: Batch, vectors: Float[Tensor, "k d_model"], layer: int, mode: str = "rev", *,
              chunk_size: int | None = None) -> Float[Tensor, "k d_model d_model"]:
    """``J_k = ∂/∂x mean_p F_p(x)`` at ``x = vectors[k]``, for every vector at once (``torch.func``).

    The prefix runs once; every vector runs on its own copy of the prompts (``k × P`` rows through blocks
    ``layer..L−1``), and ``s(X) = Σ_k mean_p F_p(x_k)`` is differentiated with respect to ``X`` (``[k, d]``):
    since row ``k`` of the output depends on ``x_k`` only, ``∂s_i/∂X_{k,j} = (J_k)_{ij}``. ``jacrev`` makes one
    backward pass per output coordinate (``d`` of them, vectorised, ``chunk_size`` at a time), ``jacfwd`` one
    forward pass per input coordinate of all ``k`` vectors (``k × d``: use ``rev`` for several vectors).

    Args:
        model: a loaded model (or adapter).
        batch: the fit prompts.
        vectors: the points ``x_k`` (``[k, d_model]``, or one ``[d_model]`` vector).
        layer: the injection layer.
        mode: ``'rev'`` (``jacrev``) or ``'fwd'`` (``jacfwd``).
        chunk_size: with ``rev``, how many backward passes are vectorised together (``None``: all ``d``;
            smaller saves memory). ``fwd`` vectorises all of its passes.

    Returns:
        ``[k, d_model, d_model]`` float32 on the CPU (``J[k] @ v``: the response to ``v`` near ``x_k``).
    """
    from torch.func import jacfwd, jacrev

    if mode not in ("rev", "fwd"):
        raise ValueError(f"mode {mode!r} is not valid; choose 'rev' or 'fwd'")
    ad = adapt(model)
    ad.check_layer(layer)
    X = vectors.detach().reshape(-1, vectors.shape[-1]).to(ad.device, ad.dtype)
    if X.shape[1] != ad.d_model:
        raise ValueError(f"the vectors have size {X.shape[1]}; the model's d_model is {ad.d_model}")
    resid, q, _ = _prefix(ad, batch, layer)
    k, P = X.shape[0], len(batch)
    qq, rows = q.repeat(k), torch.arange(k * P, device=ad.device)
    resid = resid.repeat(k, 1, 1)

    def s(X: Tensor) -> Tensor:
        injection = Injection(X.repeat_interleave(P, 0)[:, None, None], (layer,))
        return run_blocks(ad, resid, layer, intervention=injection, ctx=qq)[rows, qq].view(k, P, -1).mean(1).sum(0)

    jac = (jacrev(s, chunk_size=chunk_size) if mode == "rev" else jacfwd(s))(X)  # [d_out, k, d_in]
    return jac.detach().permute(1, 0, 2).float().cpu()


def exact_jacobian(model, batch: Batch, theta: Float[Tensor, " d_model"] | TaskVector, layer: int | None = None,
                   mode: str = "rev", *, chunk_size: int | None = None) -> Float[Tensor, "d_model d_model"]:
    """``J = ∂/∂x mean_p F_p(x)`` at ``x = θ`` (:func:`jacobians` of the one vector θ); θ and ``layer`` as for
    :func:`fit_tv_map`."""
    theta, layer = vector_and_layer(theta, layer)
    return jacobians(model, batch, theta.reshape(1, -1), layer, mode, chunk_size=chunk_size)[0]


def compare_maps(J: Float[Tensor, "d d"], W: Float[Tensor, "d d"], theta: Float[Tensor, " d"]) -> dict:
    """``jac_rel_frobenius = ‖J − W‖_F/‖J‖_F``, ``jac_cosine`` (flattened), ``jac_rel_theta = ‖(J − W)θ‖/‖Jθ‖``."""
    J, W, th = J.double(), W.double(), theta.double().reshape(-1)
    return {"jac_rel_frobenius": float((J - W).norm() / J.norm()),
            "jac_cosine": float(torch.nn.functional.cosine_similarity(J.reshape(-1), W.reshape(-1), dim=0)),
            "jac_rel_theta": float(((J - W) @ th).norm() / (J @ th).norm())}


# ----------------------------------------------------------------------------------- reconstructed TV
def final_injection(model, vector: Float[Tensor, " d_model"]) -> Injection:
    """``vector`` added to the final residual stream (``blocks.{L−1}.hook_resid_post``) at the query."""
    ad = adapt(model)
    return Injection.single(vector.detach().reshape(-1).float(), ad.n_layers - 1, point="resid_post")


__all__ = ["MapConfig", "LinearMap", "SOLVERS", "MAP_SOLVERS", "RAY_ALPHAS", "ROWS_PER_PASS", "perturbations", "solve",
           "r_squared", "per_prompt_r2", "ray_test", "fit_linear_map", "tv_response", "fit_prompts", "fit_tv_map",
           "jacobians", "exact_jacobian", "compare_maps", "final_injection"]
