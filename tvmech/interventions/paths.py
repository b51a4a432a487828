"""Path-restricted task vectors: θ kept out of the residual stream, visible only to chosen inputs.

A task vector θ added at ``blocks.{l}.hook_resid_pre``, position ``p``, reaches the output through what
the later blocks read from the residual stream ``h`` at ``p``. With pre-norm blocks, block ``l' ≥ l`` reads it

* through its heads' **values**: ``v = ln1(h + θ) W_V``;
* through its heads' **queries and keys** (the attention pattern): ``q = ln1(h + θ) W_Q``, ``k = ln1(h + θ) W_K``;
* through its **MLP**: ``MLP(ln2(h_mid + θ))``;

and the final norm reads it **directly** (``direct``: θ added to the final residual stream at ``p``).
:class:`PathRestricted` leaves the residual stream without θ and gives only the chosen ``paths`` the
input they would have with θ, each computed from the residual of the *same* pass (``h`` is the
residual this run has, so downstream processing goes on): ``"v"`` replaces row ``p`` of the value
projection's input by ``ln1(h + θ)`` while queries and keys read ``ln1(h)``; ``"qk"`` does the same for the
query and key projections; ``"mlp"`` adds θ to the MLP-norm input at ``p`` (on the bridge that edits only
what the MLP reads: ``hook_resid_mid`` is an alias of that input, the residual stream is not changed).
With every path open the run is the full θ-injected run (tested: equal final residual).

Points used: ``attn_in`` (``ln1.hook_in``, read), ``q_in`` / ``k_in`` / ``v_in`` (``attn.{q,k,v}.hook_in``),
``mlp_in`` (``ln2.hook_in``) and ``resid_post`` of the last block; TransformerLens hooks only (not the
native KV-cache path), blocks with separate q/k/v projections and pre-norms (Llama, Qwen, Mistral, Gemma).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import adapt
from tvmech.interventions.engine import Intervention, Write, site_name
from tvmech.interventions.sites import Context, local_targets

Path = Literal["v", "qk", "mlp", "direct"]
PATHS: tuple[str, ...] = get_args(Path)


def check_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """``paths`` as a tuple of known, distinct paths (at least one); a clear error otherwise."""
    paths = tuple(paths)
    bad = [p for p in paths if p not in PATHS]
    if bad or not paths or len(set(paths)) != len(paths):
        raise ValueError(f"paths {list(paths)} are not valid: give one or more distinct of {PATHS}")
    return paths


@dataclass
class PathRestricted(Intervention):
    """θ at ``position`` of blocks ``layer..L-1``, seen only through ``paths`` (see the module docstring).

    ``theta``: ``[d_model]`` (one vector for every row) or ``[batch, d_model]`` (one per row).
    """

    theta: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"]
    layer: int
    """The first block θ is seen by."""
    paths: tuple[str, ...] = PATHS
    position: int = -1

    def __post_init__(self) -> None:
        self.paths = check_paths(self.paths)
        if self.theta.ndim not in (1, 2):
            raise ValueError(f"theta must be [d_model] or [batch, d_model], got shape {tuple(self.theta.shape)}")

    def writes(self, model) -> list[Write]:
        ad = adapt(model)
        ad.check_layer(self.layer)
        if self.theta.shape[-1] != ad.d_model:
            raise ValueError(f"theta has size {self.theta.shape[-1]}; the model's d_model is {ad.d_model}")
        attn = [pt for pt, on in (("q_in", "qk" in self.paths), ("k_in", "qk" in self.paths),
                                  ("v_in", "v" in self.paths)) if on]
        points = (["attn_in", *attn] if attn else []) + (["mlp_in"] if "mlp" in self.paths else [])
        for l in range(self.layer, ad.n_layers):
            for pt in points:
                if site_name(ad, l, pt) not in ad.model.hook_dict:
                    raise ValueError(f"this model has no {site_name(ad, l, pt)} hook: the {pt!r} input cannot be "
                                     "restricted on this architecture")
        out: list[Write] = []
        for l in range(self.layer, ad.n_layers):
            if attn:
                seen: dict[str, tuple[Tensor, ...]] = {}
                out.append(Write(l, "attn_in", self._read(ad, l, seen)))
                out += [Write(l, pt, self._put(l, seen)) for pt in attn]
            if "mlp" in self.paths:
                out.append(Write(l, "mlp_in", self._add))
        if "direct" in self.paths:
            out.append(Write(ad.n_layers - 1, "resid_post", self._add))
        return out

    def _targets(self, x: Tensor, ctx: Context) -> tuple[Tensor, Tensor, Tensor]:
        """Rows, columns and per-target θ (``[m, d_model]``) of the injected position in ``x``."""
        batch, seq = x.shape[:2]
        rows = torch.arange(batch, device=x.device)
        r, c, _ = local_targets((self.position,), ctx, rows, batch, seq, x.device)
        theta = self.theta.to(x.device, x.dtype)
        if theta.ndim == 2:
            if theta.shape[0] != batch:
                raise ValueError(f"{theta.shape[0]} per-row vectors do not fit a batch of {batch} rows")
            theta = theta[r]
        return r, c, theta.expand(len(r), -1)

    def _add(self, x: Tensor, ctx: Context) -> Tensor:
        r, c, theta = self._targets(x, ctx)
        return x.index_put((r, c), theta, accumulate=True)

    def _read(self, ad, layer: int, seen: dict):
        def edit(x: Tensor, ctx: Context) -> None:  # x: the residual entering the attention norm
            r, c, theta = self._targets(x, ctx)
            seen["in"] = (r, c, ad.input_norm(layer, x[r, c] + theta))
            return None

        return edit

    def _put(self, layer: int, seen: dict):
        def edit(x: Tensor, ctx: Context) -> Tensor:  # x: ln1(h), the projection's input
            if "in" not in seen:
                raise RuntimeError(f"block {layer}'s projection input came before its attention input was read")
            r, c, normed = seen["in"]
            return x.index_put((r, c), normed.to(x.dtype))

        return edit


__all__ = ["Path", "PATHS", "check_paths", "PathRestricted"]
