"""Task geometry and composition of task vectors.

* :func:`cosine_matrix`: how aligned the task vectors of different tasks are,
  ``C[i, j] = <θ_i, θ_j> / (‖θ_i‖ ‖θ_j‖)`` over the flattened vectors.
* :func:`add_task_vectors`: the sum ``w_a θ_a + w_b θ_b`` of two vectors injected at the same sites (the vector
  of a composed task; joining interventions is :func:`tvmech.interventions.engine.compose`).

The experiments built on them: :mod:`tvmech.experiments.geometry` (cosines and the transfer matrix) and
:mod:`tvmech.experiments.composition` (english → french + masculine → feminine on king → reine).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.interventions.task_vector import TaskVector


def cosine_matrix(vectors: Mapping[str, TaskVector]) -> tuple[list[str], Float[Tensor, "n n"]]:
    """Names (in the mapping's order) and the cosine similarity of every pair of flattened vectors.

    With ``x_i = vec(θ_i) ∈ R^{n_layers·n_pos·d}``, ``C[i, j] = x_i·x_j / (‖x_i‖ ‖x_j‖)``, clipped to
    [-1, 1]; ``C`` is symmetric with unit diagonal. A zero vector has no direction: its row and
    column are NaN. All vectors must have the same shape (they may sit at different layers).
    """
    if not vectors:
        raise ValueError("cosine_matrix needs at least one task vector")
    names = list(vectors)
    shapes = {n: tuple(v.vectors.shape) for n, v in vectors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"task vectors must all have the same shape to be compared; got {shapes}")
    x: Float[Tensor, "n flat"] = torch.stack([v.vectors.detach().reshape(-1).double().cpu() for v in vectors.values()])
    norm = x.norm(dim=1)
    unit = x / norm.clamp_min(torch.finfo(x.dtype).tiny)[:, None]
    c = (unit @ unit.T).clamp(-1, 1)
    c.fill_diagonal_(1.0)
    zero = norm == 0
    c[zero, :] = float("nan")
    c[:, zero] = float("nan")
    return names, c.float()


def add_task_vectors(a: TaskVector, b: TaskVector, weights: tuple[float, float] = (1.0, 1.0)) -> TaskVector:
    """``w_a θ_a + w_b θ_b``, injected at the same sites as ``a`` and ``b``.

    Both must be additive vectors of the same shape, at the same layers, positions and hook point,
    and made on the same model (when their fingerprints are recorded); otherwise ``ValueError``.
    """
    for attr in ("layers", "positions", "point"):
        if getattr(a, attr) != getattr(b, attr):
            raise ValueError(f"cannot add vectors with different {attr}: {getattr(a, attr)} vs {getattr(b, attr)}")
    if a.mode != "add" or b.mode != "add":
        raise ValueError(f"only additive vectors can be summed (modes {a.mode!r}, {b.mode!r})")
    if a.vectors.shape != b.vectors.shape:
        raise ValueError(f"cannot add vectors of shapes {tuple(a.vectors.shape)} and {tuple(b.vectors.shape)}")
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        raise ValueError(f"the vectors were made on different models ({a.model_name!r}, {b.model_name!r})")
    wa, wb = (float(w) for w in weights)
    return TaskVector(
        vectors=wa * a.vectors.float() + wb * b.vectors.float(), layers=a.layers, positions=a.positions,
        point=a.point, mode="add", model_name=a.model_name or b.model_name, fingerprint=a.fingerprint or b.fingerprint,
        d_model=a.d_model or b.d_model, task=f"{a.task}+{b.task}", method="sum",
        config={"weights": [wa, wb], "parts": [{"task": v.task, "method": v.method} for v in (a, b)]},
    )


__all__ = ["cosine_matrix", "add_task_vectors"]
