"""The generic noise fit of a linear map ``W`` to a batched response ``X -> Δ(X)`` around θ: the perturbations,
the least-squares / ridge solve, R², per-prompt R² and the ray test. The math, and the model's response it is
applied to, are in :mod:`tvmech.analysis.tv_map` (which re-exports every name here).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.progress import tqdm

SOLVERS = ("lstsq", "ridge")
# rows Δ(x_i) (``[b, d]``), or each prompt's Δ_p(x_i) (``[b, n_prompts, d]``; the fit uses their mean)
Response = Callable[[Float[Tensor, "b d"]], Float[Tensor, "b ..."]]
RAY_ALPHAS: tuple[float, ...] = (0.25, 0.5, 2.0, 4.0)
MAP_SOLVERS = (*SOLVERS, "jacobian")  # "jacobian": W is the exact Jacobian at θ (no training samples)
ROWS_PER_PASS = 1024  # rows (perturbed vectors × fit prompts) per forward pass by default


@dataclass(frozen=True)
class MapConfig:
    """Settings of the noise fit. ``n_samples=None`` means ``2 × d_model``. ``solver="jacobian"`` takes the exact
    Jacobian at θ for ``W`` (no training samples: ``r2_train`` is NaN; held-out R² and ray test as for a fit)."""

    n_samples: int | None = None
    """Noisy training samples around θ (``None``: ``2 × d_model``)."""
    n_heldout: int = 128
    """Held-out samples for the held-out R² and the per-prompt R²."""
    noise_scales: tuple[float, ...] = (0.05, 0.1, 0.2)
    """Perturbation sizes λ, relative to ‖θ‖ (samples are spread evenly over them)."""
    solver: str = "lstsq"
    """``lstsq`` (least squares), ``ridge`` or ``jacobian`` (the exact Jacobian at θ)."""
    ridge: float = 1e-3
    """The ridge penalty (``solver="ridge"``)."""
    batch_size: int | None = None  # perturbed vectors per pass, each on every fit prompt (None: ~ROWS_PER_PASS rows)
    """Perturbed vectors per forward pass, each on every fit prompt (``None``: about ``ROWS_PER_PASS`` rows)."""
    seed: int = 0
    """Seed of the perturbations."""
    ray_alphas: tuple[float, ...] = RAY_ALPHAS  # the ray test's scales α of θ
    """The ray test's scales α of θ."""

    def __post_init__(self) -> None:
        if self.solver not in MAP_SOLVERS:
            raise ValueError(f"solver {self.solver!r} is not valid; choose one of {MAP_SOLVERS}")
        if not self.noise_scales or any(not (s > 0) for s in self.noise_scales):
            raise ValueError(f"noise scales must be positive (λ > 0), got {self.noise_scales}")
        if self.n_samples is not None and self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.n_heldout < 0 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError(f"n_heldout must be >= 0 and batch_size >= 1 (got {self.n_heldout}, {self.batch_size})")
        if self.solver == "ridge" and not self.ridge > 0:
            raise ValueError(f"solver 'ridge' needs ridge > 0, got {self.ridge}")
        if any(a == 0 for a in self.ray_alphas):
            raise ValueError(f"ray scales must be non-zero, got {self.ray_alphas}")

    def samples_for(self, d: int) -> int:
        """The training samples for width ``d`` (0 for ``solver="jacobian"``); refuses too few for ``lstsq``."""
        if self.solver == "jacobian":
            return 0
        n = 2 * d if self.n_samples is None else self.n_samples
        if self.solver == "lstsq" and n < d:
            raise ValueError(f"solver 'lstsq' needs n_samples >= d_model = {d} to determine a {d}x{d} map, got {n}; "
                             "use more samples or solver='ridge'")
        return n


@dataclass
class LinearMap:
    """A fitted ``W_TV(l)`` with its fit quality. ``W`` and ``theta`` are float32 on the CPU."""

    W: Float[Tensor, "d d"]
    """The fitted map ``W_TV(l)``."""
    theta: Float[Tensor, " d"]
    """The vector θ the map was fitted around."""
    layer: int
    """The layer θ is added at (``resid_pre``)."""
    r2_train: float
    """R² of the fit on its training samples (NaN for ``solver="jacobian"``)."""
    r2_heldout: float
    """R² on the held-out samples (mean response over the fit prompts)."""
    theta_rel_error: float
    """``‖Wθ − Δ(θ)‖ / ‖Δ(θ)‖``."""
    theta_cos: float
    """``cos(Wθ, Δ(θ))``."""
    response_theta: Float[Tensor, " d"] = field(repr=False)
    """``Δ(θ)``: the measured change of the final residual stream with θ added."""
    n_samples: int = 0
    """Training samples used."""
    n_prompts: int = 0
    """Fit prompts."""
    config: dict = field(default_factory=dict)
    """The :class:`MapConfig` as a dict."""
    seconds: float = 0.0
    """Wall seconds of the fit."""
    r2_per_prompt: list[float] = field(default_factory=list)  # uncentred held-out R² of each fit prompt's Δ_p vs W
    """Uncentred held-out R² of each fit prompt's ``Δ_p`` against ``W``."""
    ray: list[dict] = field(default_factory=list)  # {alpha, rel_error, cosine} per α (:func:`ray_test`)
    """``{alpha, rel_error, cosine}`` per α (:func:`ray_test`)."""
    r2_per_prompt_centred: list[float] = field(default_factory=list)  # the headline: residuals centred per prompt
    """Held-out R² of each fit prompt with residuals centred per prompt (the headline)."""

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
    """``W`` with ``W x_i ≈ y_i`` (rows of X, Y), by least squares or ridge (see the module docstring), in
    float64 on the device of ``X`` (``Y`` is moved there)."""
    X, Y = X.double(), Y.to(X.device, torch.float64)
    n, d = X.shape
    if solver == "lstsq":
        if n < d:
            raise ValueError(f"solver 'lstsq' needs at least d = {d} samples, got {n}; use solver='ridge'")
        Q, R = torch.linalg.qr(X)
        diag = R.diagonal().abs()
        if float(diag.min()) <= 1e-12 * float(diag.max()):  # (numerically) rank-deficient: the SVD's minimum norm
            return torch.linalg.lstsq(X.cpu(), Y.cpu(), driver="gelsd").solution.T.to(X.device)
        return torch.linalg.solve_triangular(R, Q.T @ Y, upper=True).T
    if solver == "ridge":
        if not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        G = X.T @ X
        m = float(((X - X.mean(0)) ** 2).sum()) / d
        if m == 0:
            raise ValueError("the perturbed vectors are all equal: ridge needs some spread (noise scales > 0)")
        G = G + ridge * m * torch.eye(d, dtype=G.dtype, device=G.device)
        return torch.linalg.solve(G, X.T @ Y).T
    raise ValueError(f"solver {solver!r} is not valid; choose one of {SOLVERS}")


def r_squared(W: Float[Tensor, "d d"], X: Float[Tensor, "n d"], Y: Float[Tensor, "n d"]) -> float:
    """``1 − Σ‖y − W x‖² / Σ‖y − ȳ‖²`` pooled over all coordinates (float64, on ``W``'s device)."""
    W = W.double()
    X, Y = X.to(W.device, torch.float64), Y.to(W.device, torch.float64)
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
                   layer: int = -1, n_prompts: int = 1, progress: bool = False,
                   device: torch.device | str | None = None, W: Tensor | None = None) -> LinearMap:
    """Fit ``W`` to any batched response ``response(X) -> Y`` (rows ``Δ(x_i)``).

    Used by :func:`fit_tv_map` with the model's response (``device``: the model's, where the least squares and
    the training R² run; ``None``: the CPU); tests pass a known linear function. ``W`` given (solver
    ``"jacobian"``): no fit, the same held-out R², per-prompt R² and ray test of that map.
    """
    t0 = time.perf_counter()
    d = theta.shape[-1]
    n = config.samples_for(d)
    step = config.batch_size or max(1, ROWS_PER_PASS // max(1, n_prompts))
    gen = torch.Generator().manual_seed(config.seed)
    held_gen = torch.Generator().manual_seed(config.seed + 1_000_003)

    def run(X: Tensor, desc: str, keep_prompts: bool = False) -> tuple[Tensor, Tensor | None]:
        """Mean responses ``[n, d]`` and, with ``keep_prompts`` and a per-prompt response, ``[n, P, d]``."""
        out = [response(X[s : s + step]).double().cpu()
               for s in tqdm(range(0, len(X), step), desc=desc, disable=not progress, leave=False)]
        if not out:
            return X.new_zeros(0, d), None
        Y = torch.cat(out)
        if Y.ndim == 3:
            return Y.mean(1), (Y if keep_prompts else None)
        return Y, None

    X = perturbations(theta, n, config.noise_scales, gen)
    Y, _ = run(X, f"fit W (layer {layer})")
    if W is None:
        Xd = X.to(device or "cpu")
        W = solve(Xd, Y, config.solver, config.ridge)
        r2_train = r_squared(W, Xd, Y)
        W = W.cpu()
        del Xd
    else:
        W, r2_train = W.detach().double().cpu(), float("nan")
    Xh = perturbations(theta, config.n_heldout, config.noise_scales, held_gen) if config.n_heldout else X[:0]
    Yh, Yh_p = run(Xh, "held-out", keep_prompts=True) if config.n_heldout else (Y[:0], None)
    th = theta.detach().double().cpu()
    resp = run(th[None], "response to θ")[0][0]
    pred = W @ th
    rel = float((pred - resp).norm() / resp.norm().clamp_min(1e-30))
    cos = float(torch.nn.functional.cosine_similarity(pred, resp, dim=0))
    has = Yh_p is not None and config.n_heldout > 1
    per, per_c = (per_prompt_r2(W, Xh, Yh_p), per_prompt_r2(W, Xh, Yh_p, centred=True)) if has else ([], [])
    return LinearMap(W.float(), th.float(), layer, r2_train,
                     r_squared(W, Xh, Yh) if config.n_heldout > 1 else float("nan"), rel, cos, resp.float(),
                     n, n_prompts, asdict(config), time.perf_counter() - t0, per,
                     ray_test(response, W, th, config.ray_alphas), per_c)


__all__ = ["MapConfig", "LinearMap", "SOLVERS", "MAP_SOLVERS", "RAY_ALPHAS", "ROWS_PER_PASS", "Response",
           "perturbations", "solve", "r_squared", "per_prompt_r2", "ray_test", "fit_linear_map"]
