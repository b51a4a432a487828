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
  (scaling by ``tr(XᵀX)/d`` instead would let the shared θ component set the penalty); any ``n ≥ 1``.

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
query token); each batch of ``batch_size`` perturbed vectors × ``P`` prompts runs only blocks ``l..L−1``
(``Adapter.run_blocks``). Cost: ``(n_samples + n_heldout + 1) × P`` rows through ``L − l`` blocks.

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

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.core.progress import tqdm
from tvmech.data.prompts import Batch, encode, make_prompts
from tvmech.data.tasks import Example, Task, as_examples
from tvmech.interventions.engine import run_blocks
from tvmech.interventions.injection import Injection
from tvmech.interventions.task_vector import TaskVector, vector_and_layer

SOLVERS = ("lstsq", "ridge")
# rows Δ(x_i) (``[b, d]``), or each prompt's Δ_p(x_i) (``[b, n_prompts, d]``; the fit uses their mean)
Response = Callable[[Float[Tensor, "b d"]], Float[Tensor, "b ..."]]
RAY_ALPHAS: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)


@dataclass(frozen=True)
class MapConfig:
    """Settings of the noise fit. ``n_samples=None`` means ``2 × d_model``."""

    n_samples: int | None = None
    n_heldout: int = 128
    noise_scales: tuple[float, ...] = (0.05, 0.1, 0.2)
    solver: str = "lstsq"
    ridge: float = 1e-3
    batch_size: int = 32  # perturbed vectors per forward pass (each runs on every fit prompt)
    seed: int = 0
    ray_alphas: tuple[float, ...] = RAY_ALPHAS  # the ray test's scales α of θ

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver {self.solver!r} is not valid; choose one of {SOLVERS}")
        if not self.noise_scales or any(not (s > 0) for s in self.noise_scales):
            raise ValueError(f"noise scales must be positive (λ > 0), got {self.noise_scales}")
        if self.n_samples is not None and self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.n_heldout < 0 or self.batch_size < 1:
            raise ValueError(f"n_heldout must be >= 0 and batch_size >= 1 (got {self.n_heldout}, {self.batch_size})")
        if self.solver == "ridge" and not self.ridge > 0:
            raise ValueError(f"solver 'ridge' needs ridge > 0, got {self.ridge}")
        if any(a == 0 for a in self.ray_alphas):
            raise ValueError(f"ray scales must be non-zero, got {self.ray_alphas}")

    def samples_for(self, d: int) -> int:
        n = 2 * d if self.n_samples is None else self.n_samples
        if self.solver == "lstsq" and n < d:
            raise ValueError(f"solver 'lstsq' needs n_samples >= d_model = {d} to determine a {d}x{d} map, got {n}; "
                             "use more samples or solver='ridge'")
        return n


@dataclass
class LinearMap:
    """A fitted ``W_TV(l)`` with its fit quality. ``W`` and ``theta`` are float32 on the CPU."""

    W: Float[Tensor, "d d"]
    theta: Float[Tensor, " d"]
    layer: int
    r2_train: float
    r2_heldout: float
    theta_rel_error: float
    theta_cos: float
    response_theta: Float[Tensor, " d"] = field(repr=False)
    n_samples: int = 0
    n_prompts: int = 0
    config: dict = field(default_factory=dict)
    seconds: float = 0.0
    r2_per_prompt: list[float] = field(default_factory=list)  # uncentred held-out R² of each fit prompt's Δ_p vs W
    ray: list[dict] = field(default_factory=list)  # {alpha, rel_error, cosine} per α (:func:`ray_test`)
    r2_per_prompt_centred: list[float] = field(default_factory=list)  # the headline: residuals centred per prompt

    @property
    def reconstructed(self) -> Float[Tensor, " d"]:
        """``W θ``, the vector to add at the final residual stream."""
        return self.W @ self.theta

    def summary(self) -> dict:
        """The row of the fit: R² of the mean response, per-prompt R² (centred: ``r2_per_prompt_centred*``, the
        headline; uncentred: ``r2_per_prompt*``, list, mean, median, min) and the ray test
        (``ray_rel_error_<α>``, ``ray_cos_<α>``); ``W θ ≈ Δ(θ)`` is left out (it holds by construction)."""
        stats = {}
        for name, values in (("r2_per_prompt", self.r2_per_prompt), ("r2_per_prompt_centred",
                                                                     self.r2_per_prompt_centred)):
            per = torch.tensor(values, dtype=torch.float64)
            stats |= {f"{name}_mean": float(per.mean()), f"{name}_median": float(per.median()),
                      f"{name}_min": float(per.min())} if len(per) else {}
        ray = {f"ray_{k}_{r['alpha']:g}": r[k] for r in self.ray for k in ("rel_error", "cos")}
        return {"layer": self.layer, "r2_train": self.r2_train, "r2_heldout": self.r2_heldout,
                "r2_per_prompt": list(self.r2_per_prompt), "r2_per_prompt_centred": list(self.r2_per_prompt_centred),
                **stats, **ray, "n_samples": self.n_samples,
                "n_prompts": self.n_prompts, "seconds_fit": self.seconds}


# ----------------------------------------------------------------------------------- generic fit
def perturbations(theta: Float[Tensor, " d"], n: int, noise_scales: Sequence[float], generator: torch.Generator
                  ) -> Float[Tensor, "n d"]:
    """``x_i = θ + λ_i ‖θ‖ ε_i`` (float64), ε_i uniform on the unit sphere, λ_i = noise_scales[i mod len]."""
    if any(not (s > 0) for s in noise_scales):
        raise ValueError(f"noise scales must be positive (λ > 0), got {tuple(noise_scales)}")
    theta = theta.detach().double().cpu()
    norm = float(theta.norm())
    if norm == 0:
        raise ValueError("θ has zero norm: the noise scales are relative to ‖θ‖")
    eps = torch.randn(n, theta.shape[0], generator=generator, dtype=torch.float64)
    eps /= eps.norm(dim=1, keepdim=True)
    lam = torch.tensor(list(noise_scales), dtype=torch.float64).repeat(-(-n // len(noise_scales)))[:n]
    return theta[None] + (lam * norm)[:, None] * eps


def solve(X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"], solver: str = "lstsq", ridge: float = 1e-3
          ) -> Float[Tensor, "d d"]:
    """``W`` with ``W x_i ≈ y_i`` (rows of X, Y), by least squares or ridge (see the module docstring)."""
    X, Y = X.double(), Y.double()
    n, d = X.shape
    if solver == "lstsq":
        if n < d:
            raise ValueError(f"solver 'lstsq' needs at least d = {d} samples, got {n}; use solver='ridge'")
        return torch.linalg.lstsq(X, Y, driver="gelsd").solution.T
    if solver == "ridge":
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        G = X.T @ X
        m = float(((X - X.mean(0)) ** 2).sum()) / d
        if m == 0:
            raise ValueError("the perturbed vectors are all equal: ridge needs some spread (noise scales > 0)")
        G = G + ridge * m * torch.eye(d, dtype=G.dtype)
        return torch.linalg.solve(G, X.T @ Y).T
    raise ValueError(f"solver {solver!r} is not valid; choose one of {SOLVERS}")


def r_squared(W: Float[Tensor, "d d"], X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"]) -> float:
    """``1 − Σ‖y − W x‖² / Σ‖y − ȳ‖²`` pooled over all coordinates."""
    X, Y, W = X.double(), Y.double(), W.double()
    res = ((Y - X @ W.T) ** 2).sum()
    tot = ((Y - Y.mean(0)) ** 2).sum()
    return float(1 - res / tot)


def per_prompt_r2(W: Float[Tensor, "d d"], X: Float[Tensor, "n d"], Y: Float[Tensor, "n P d"], *,
                  centred: bool = False) -> list[float]:
    """:func:`r_squared` of each prompt's responses ``Y[:, p]`` against the shared ``W``; with ``centred``, the
    residuals ``y_i − W x_i`` are centred over ``i`` first (the prompt's constant offset is not counted)."""
    if Y.ndim != 3 or Y.shape[0] != X.shape[0]:
        raise ValueError(f"per-prompt responses must be [n, n_prompts, d] with n = {X.shape[0]}, got {tuple(Y.shape)}")
    if not centred:
        return [r_squared(W, X, Y[:, p]) for p in range(Y.shape[1])]
    X, Y, W = X.double(), Y.double(), W.double()
    res = Y - torch.einsum("ij,nj->ni", W, X)[:, None]
    res = res - res.mean(0, keepdim=True)
    tot = ((Y - Y.mean(0, keepdim=True)) ** 2).sum((0, 2))
    return (1 - (res**2).sum((0, 2)) / tot).tolist()


def ray_test(response: Response, W: Float[Tensor, "d d"], theta: Float[Tensor, " d"],
             alphas: Sequence[float] = RAY_ALPHAS) -> list[dict]:
    """``Δ(αθ)`` against ``α W θ`` along the ray of θ.

    Args:
        response: the batched response (mean over prompts when it returns per-prompt rows).
        W: the fitted map.
        theta: the task vector.
        alphas: the scales (non-zero).

    Returns:
        ``{alpha, rel_error = ‖Δ(αθ) − αWθ‖/‖Δ(αθ)‖, cos = cos(Δ(αθ), αWθ)}`` per α.
    """
    alphas = [float(a) for a in alphas]
    if any(a == 0 for a in alphas):
        raise ValueError(f"ray scales must be non-zero, got {alphas}")
    if not alphas:
        return []
    th = theta.detach().double().cpu().reshape(-1)
    a = torch.tensor(alphas, dtype=torch.float64)
    got = response(a[:, None] * th[None]).double().cpu()
    got = got.mean(1) if got.ndim == 3 else got
    pred = a[:, None] * (W.double() @ th)[None]
    rel = (got - pred).norm(dim=1) / got.norm(dim=1).clamp_min(1e-30)
    cos = torch.nn.functional.cosine_similarity(got, pred, dim=1)
    return [{"alpha": x, "rel_error": float(r), "cos": float(c)} for x, r, c in zip(alphas, rel, cos)]


def fit_linear_map(response: Response, theta: Float[Tensor, " d"], config: MapConfig = MapConfig(), *,
                   layer: int = -1, n_prompts: int = 1, progress: bool = False) -> LinearMap:
    """Fit ``W`` to any batched response ``response(X) -> Y`` (rows ``Δ(x_i)``).

    Used by :func:`fit_tv_map` with the model's response; tests pass a known linear function.
    """
    t0 = time.perf_counter()
    d = theta.shape[-1]
    n = config.samples_for(d)
    gen = torch.Generator().manual_seed(config.seed)
    held_gen = torch.Generator().manual_seed(config.seed + 1_000_003)

    def run(X: Tensor, desc: str, keep_prompts: bool = False) -> tuple[Tensor, Tensor | None]:
        """Mean responses ``[n, d]`` and, with ``keep_prompts`` and a per-prompt response, ``[n, P, d]``."""
        out = [response(X[s : s + config.batch_size]).double().cpu()
               for s in tqdm(range(0, len(X), config.batch_size), desc=desc, disable=not progress, leave=False)]
        if not out:
            return X.new_zeros(0, d), None
        Y = torch.cat(out)
        if Y.ndim == 3:
            return Y.mean(1), (Y if keep_prompts else None)
        return Y, None

    X = perturbations(theta, n, config.noise_scales, gen)
    Y, _ = run(X, f"fit W (layer {layer})")
    W = solve(X, Y, config.solver, config.ridge)
    Xh = perturbations(theta, config.n_heldout, config.noise_scales, held_gen) if config.n_heldout else X[:0]
    Yh, Yh_p = run(Xh, "held-out", keep_prompts=True) if config.n_heldout else (Y[:0], None)
    th = theta.detach().double().cpu()
    resp = run(th[None], "response to θ")[0][0]
    pred = W @ th
    rel = float((pred - resp).norm() / resp.norm().clamp_min(1e-30))
    cos = float(torch.nn.functional.cosine_similarity(pred, resp, dim=0))
    has = Yh_p is not None and config.n_heldout > 1
    per, per_c = (per_prompt_r2(W, Xh, Yh_p), per_prompt_r2(W, Xh, Yh_p, centred=True)) if has else ([], [])
    return LinearMap(W.float(), th.float(), layer, r_squared(W, X, Y),
                     r_squared(W, Xh, Yh) if config.n_heldout > 1 else float("nan"), rel, cos, resp.float(),
                     n, n_prompts, asdict(config), time.perf_counter() - t0, per,
                     ray_test(response, W, th, config.ray_alphas), per_c)


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


def tv_response(model, batch: Batch, layer: int, *, per_prompt: bool = False) -> Response:
    """``X -> Δ(X)``: each row of ``X`` added at ``layer`` to every prompt's query; the mean final-stream change
    (``[b, d]``), or with ``per_prompt`` each prompt's own ``Δ_p`` (``[b, n_prompts, d]``).

    The prefix (blocks ``0..layer−1``) runs once here; each call runs blocks ``layer..L−1`` on
    ``len(X) × len(batch)`` rows.
    """
    ad = adapt(model)
    ad.check_layer(layer)
    resid, q, base = _prefix(ad, batch, layer)
    P = len(batch)

    def response(X: Tensor) -> Tensor:
        b = X.shape[0]
        qq = q.repeat(b)  # row i * P + p: vector i on prompt p
        rows = torch.arange(b * P, device=ad.device)
        injection = Injection(X.repeat_interleave(P, 0)[:, None, None], (layer,))  # per row: [b * P, 1, 1, d]
        with torch.no_grad():
            out = run_blocks(ad, resid.repeat(b, 1, 1), layer, intervention=injection, ctx=qq)[rows, qq].view(b, P, -1)
        delta = (out - base[None]).double().cpu()
        return delta if per_prompt else delta.mean(1)

    return response


def fit_prompts(model, task: Task, queries: Sequence[Example]) -> Batch:
    """Zero-shot prompts of ``queries`` as one right-padded batch (the prompts a map is fitted on)."""
    if not as_examples(queries, "queries"):
        raise ValueError("at least one fit prompt is needed")
    return encode(adapt(model).tokenizer, task, make_prompts(task, queries, 0))


def fit_tv_map(model, batch: Batch, theta: Float[Tensor, " d_model"] | TaskVector, layer: int | None = None,
               config: MapConfig = MapConfig(), *, progress: bool = False) -> LinearMap:
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
    return fit_linear_map(tv_response(ad, batch, layer, per_prompt=True), theta, config, layer=layer,
                          n_prompts=len(batch), progress=progress)


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


__all__ = ["MapConfig", "LinearMap", "SOLVERS", "RAY_ALPHAS", "perturbations", "solve", "r_squared", "per_prompt_r2",
           "ray_test", "fit_linear_map",
           "tv_response", "fit_prompts", "fit_tv_map", "jacobians", "exact_jacobian", "compare_maps", "final_injection"]
