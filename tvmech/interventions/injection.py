"""Adding vectors to (or writing them over) the residual stream at chosen layers, points and positions.

An :class:`Injection` holds one vector per (layer, position) site, one vector shared by all sites, or
one vector per batch row and site, and acts at ``blocks.{l}.hook_resid_pre`` (default),
``hook_resid_post``, ``hook_attn_out`` or ``hook_mlp_out``. ``mode="add"`` computes ``h[b, p] + v``;
``mode="replace"`` sets ``h[b, p] = v``. ``rows=(start, stop)`` restricts it to a slice of the batch
(one row group of a batched sweep, where each group carries its own vector).

Positions follow :mod:`tvmech.interventions.sites` (negative: relative to each row's query token; a string:
the token of that role in each row, e.g. ``"input_first"``, resolved from the batch's role positions;
``"all"``: every token, as llama.cpp's control vectors are added).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.core.adapter import Adapter, adapt
from tvmech.core.checks import as_int, as_ints
from tvmech.interventions.engine import Intervention, Write
from tvmech.interventions.sites import (
    RESIDUAL_POINTS,
    Context,
    Mode,
    Point,
    Position,
    as_positions,
    check_mode,
    check_point,
    local_targets,
    site_key,
)


def check_vectors(vectors, what: str = "vectors", *, finite: bool = True) -> Tensor:
    """``vectors`` if it is a floating-point tensor without NaN or inf; ``TypeError``/``ValueError`` otherwise.

    The finiteness check (``finite``) reads the values (a device synchronisation); it is skipped for tensors
    that require a gradient, i.e. vectors being trained, whose training loop checks its loss instead.
    """
    if not isinstance(vectors, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(vectors).__name__}")
    if not vectors.is_floating_point():
        raise TypeError(f"{what} must be floating point (float32, bfloat16, ...), got {vectors.dtype}")
    if finite and not vectors.requires_grad:
        bad = int((~torch.isfinite(vectors)).sum())
        if bad:
            raise ValueError(f"{what} hold {bad} non-finite value(s) (NaN or inf) of {vectors.numel()}")
    return vectors


@dataclass
class Injection(Intervention):
    """Vectors for (layer, position) sites; ``vectors[i, j]`` goes to ``layers[i]``, ``positions[j]``.

    Shapes of ``vectors``: ``[n_layers, n_positions, d_model]``; ``[1, 1, d_model]`` (one vector shared by
    every site); ``[d_model]`` (one site); or ``[n_rows, n_layers, n_positions, d_model]`` (a vector per
    batch row, ``n_rows`` = the rows the injection covers).

    ``layers`` take one integer or a sequence of them (Python, numpy or 0-d tensor integers; not ``bool``);
    ``positions`` the same, or role names (:data:`~tvmech.interventions.sites.ROLES`); they are stored as tuples
    of Python ints (and strings).
    """

    vectors: Float[Tensor, "... d_model"]
    """The vectors (shapes above; stored as ``[n_layers, n_positions, d_model]`` or per row)."""
    layers: tuple[int, ...]
    """The blocks whose ``point`` receives them."""
    positions: tuple[Position, ...] = (-1,)
    """Token positions (negative: relative to each row's query) or role names."""
    point: Point = "resid_pre"
    """Where in the block: ``resid_pre``, ``resid_post``, ``attn_out`` or ``mlp_out``."""
    mode: Mode = "add"
    """``"add"`` the vectors to the stream, or ``"replace"`` the stream with them."""
    rows: tuple[int, int] | None = None
    """``(start, stop)``: the batch rows the injection covers (``None``: every row)."""
    check_finite: bool = field(default=True, repr=False)
    """``False`` skips the NaN/inf check (training loops, which check their loss instead, and must not sync per
    step)."""

    def __post_init__(self) -> None:
        self.layers, self.positions = as_ints(self.layers, "layer"), as_positions(self.positions, "position")
        check_vectors(self.vectors, "injected vectors", finite=self.check_finite)
        if self.vectors.ndim == 1:
            self.vectors = self.vectors[None, None]
        if not self.layers or not self.positions:
            raise ValueError("an injection needs at least one layer and one position")
        named = {site_key(p) for p in self.positions}  # "query" and -1 are one site
        if len(set(self.layers)) != len(self.layers) or len(named) != len(self.positions):
            raise ValueError(f"layers {self.layers} and positions {self.positions} must not repeat")
        check_mode(self.mode)
        check_point(self.point, RESIDUAL_POINTS)
        sites = (len(self.layers), len(self.positions))
        shape = tuple(self.vectors.shape)
        ok = shape[-3:-1] == sites if self.per_row else shape[:2] in ((1, 1), sites)
        if not ok or self.vectors.ndim not in (3, 4):
            raise ValueError(
                f"vectors of shape {shape} do not fit {sites[0]} layers x {sites[1]} positions: expected "
                f"[{sites[0]}, {sites[1]}, d_model], [1, 1, d_model] (shared) or "
                f"[n_rows, {sites[0]}, {sites[1]}, d_model] (one per row)"
            )
        if self.rows is not None:
            self.rows = as_ints(self.rows, "row")
        if self.rows is not None and (len(self.rows) != 2 or not 0 <= self.rows[0] < self.rows[1]):
            raise ValueError(f"rows {self.rows} is not a valid (start, stop) slice of the batch")

    @classmethod
    def single(cls, vector: Float[Tensor, " d_model"], layer: int, position: Position = -1, **kw) -> Injection:
        """One vector at one (layer, position) site.

        Args:
            vector: ``[d_model]``.
            layer: the block (any integer, see :func:`tvmech.core.checks.as_int`).
            position: the token position (negative: relative to the query; a string: a role).
            **kw: ``point``, ``mode``, ``rows``.

        Returns:
            The injection.
        """
        position = position if isinstance(position, str) else as_int(position, "position")
        return cls(vector[None, None], (as_int(layer, "layer"),), (position,), **kw)

    @property
    def per_row(self) -> bool:
        """Whether each batch row has its own vectors (``vectors`` is 4-d)."""
        return self.vectors.ndim == 4

    @property
    def shared(self) -> bool:
        """Whether one vector goes to several sites (``vectors`` is ``[1, 1, d_model]``)."""
        return not self.per_row and self.vectors.shape[:2] == (1, 1) and len(self.layers) * len(self.positions) > 1

    def vector_at(self, i: int) -> Float[Tensor, "n_positions d_model"]:
        """The vectors of layer ``layers[i]``, one per position (not for per-row injections)."""
        v = self.vectors[0 if self.vectors.shape[0] == 1 else i]
        return v.expand(len(self.positions), -1)

    def check(self, model) -> Adapter:
        """Check the vectors' width and the layers against ``model``; returns its adapter."""
        ad = adapt(model)
        if self.vectors.shape[-1] != ad.d_model:
            raise ValueError(f"vector size {self.vectors.shape[-1]} does not match the model's d_model {ad.d_model}")
        for layer in self.layers:
            ad.check_layer(layer)
        return ad

    def writes(self, model) -> list[Write]:
        self.check(model)
        return [Write(layer, self.point, self._edit(i)) for i, layer in enumerate(self.layers)]

    def _edit(self, i: int):
        def edit(x: Tensor, ctx: Context) -> Tensor:
            batch, seq = x.shape[:2]
            start, stop = self.rows if self.rows is not None else (0, batch)
            if stop > batch:
                raise ValueError(f"rows {self.rows} do not fit a batch of {batch} rows")
            rows = torch.arange(start, stop, device=x.device)
            r, c, flat = local_targets(self.positions, ctx, rows, batch, seq, x.device)
            if self.per_row:
                if self.vectors.shape[0] != len(rows):
                    raise ValueError(f"{self.vectors.shape[0]} per-row vectors do not fit {len(rows)} rows")
                grid = self.vectors[:, i]
            else:
                grid = self.vector_at(i)[None].expand(len(rows), -1, -1)
            values = grid.reshape(-1, x.shape[-1])[flat.to(grid.device)].to(x.device, x.dtype)
            if self.mode == "add" and ctx.checked:  # distinct targets: a plain scatter (CUDA-graph safe)
                return x.index_put((r, c), x[r, c] + values)
            return x.index_put((r, c), values, accumulate=self.mode == "add")

        return edit


__all__ = ["Injection"]
