"""Task geometry and composition of task vectors.

* :func:`cosine_matrix`: how aligned the task vectors of different tasks are,
  ``C[i, j] = <θ_i, θ_j> / (‖θ_i‖ ‖θ_j‖)`` over the flattened vectors.
* :func:`transfer_matrix`: accuracy on task B's zero-shot prompts with task A's vector injected,
  for every (A, B); the diagonal is each vector on its own task.
* :func:`compose` / :func:`composition_experiment`: the sum ``w_a θ_a + w_b θ_b`` of two vectors
  (english → french and masculine → feminine) on a task that needs both (king → reine), against each
  vector alone, zero-shot and in-context learning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.evaluation import evaluate
from tvmech.data.tasks import Example, Task, Template, _parse_records
from tvmech.interventions.task_vector import TaskVector

COMPOSITION_TASK = "english_french_feminine"
COMPOSITION_FRACTIONS = (0.3, 0.1, 0.6)


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


def transfer_matrix(model, vectors: Mapping[str, TaskVector], tasks: Mapping[str, Task], n_test: int | None = None,
                    seed: int = 0, *, batch_size: int = 16, progress: bool = False) -> list[dict]:
    """Zero-shot accuracy of every test task with every task's vector injected.

    For train task A (a key of ``vectors``) and test task B (a key of ``tasks``), the record is
    ``acc(A → B) = mean over x in test_B of 1[argmax p(· | prompt_B(x); h_l[q] += θ_A) = y]``, with
    ``prompt_B`` the zero-shot prompt in B's own template, ``test_B`` the first ``n_test`` items of
    ``B.splits(seed).test`` and B's own scoring mode.

    Returns ``[{"train_task", "test_task", "accuracy", "n"}]``, test tasks outer, train tasks inner.
    """
    hooks = {name: vec.hooks_for(model) for name, vec in vectors.items()}
    rows = []
    for test_name, task in tasks.items():
        test = task.splits(seed).test[:n_test]
        if not test:
            raise ValueError(f"task {test_name!r} has an empty test split")
        for train_name, hooks_for in hooks.items():
            res = evaluate(model, task, test, k=0, hooks_for=hooks_for, batch_size=batch_size, progress=progress)
            rows.append({"train_task": train_name, "test_task": test_name, "accuracy": res.accuracy, "n": res.n})
    return rows


def composition_task() -> Task:
    """English masculine word → French feminine counterpart (king → reine), with the default template.

    Written for tvmech (``tvmech/data/builtin/composition/english_french_feminine.json``).
    """
    data = resources.files("tvmech") / "data" / "builtin" / "composition" / f"{COMPOSITION_TASK}.json"
    examples = _parse_records(json.loads(data.read_text(encoding="utf-8")), f"composition task {COMPOSITION_TASK}")
    return Task(name=COMPOSITION_TASK, examples=examples, template=Template(),
                description="English masculine word -> French feminine counterpart (king -> reine)")


def compose(a: TaskVector, b: TaskVector, weights: tuple[float, float] = (1.0, 1.0)) -> TaskVector:
    """``w_a θ_a + w_b θ_b``, injected at the same sites as ``a`` and ``b``.

    Both must be additive vectors of the same shape, at the same layers, positions and hook point,
    and made on the same model (when their fingerprints are recorded); otherwise ``ValueError``.
    """
    for attr in ("layers", "positions", "point"):
        if getattr(a, attr) != getattr(b, attr):
            raise ValueError(f"cannot compose vectors with different {attr}: {getattr(a, attr)} vs {getattr(b, attr)}")
    if a.mode != "add" or b.mode != "add":
        raise ValueError(f"only additive vectors can be summed (modes {a.mode!r}, {b.mode!r})")
    if a.vectors.shape != b.vectors.shape:
        raise ValueError(f"cannot compose vectors of shapes {tuple(a.vectors.shape)} and {tuple(b.vectors.shape)}")
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        raise ValueError(f"the vectors were made on different models ({a.model_name!r}, {b.model_name!r})")
    wa, wb = (float(w) for w in weights)
    return TaskVector(
        vectors=wa * a.vectors.float() + wb * b.vectors.float(), layers=a.layers, positions=a.positions,
        point=a.point, mode="add", model_name=a.model_name or b.model_name, fingerprint=a.fingerprint or b.fingerprint,
        d_model=a.d_model or b.d_model, task=f"{a.task}+{b.task}", method="compose",
        config={"weights": [wa, wb], "parts": [{"task": v.task, "method": v.method} for v in (a, b)]},
    )


def composition_experiment(model, vec_fr: TaskVector, vec_fem: TaskVector, task: Task | None = None, *,
                           n_test: int | None = None, k: int = 5, seed: int = 0,
                           fractions: tuple[float, float, float] = COMPOSITION_FRACTIONS,
                           weights: tuple[float, float] = (1.0, 1.0), demos: Sequence[Example] | None = None,
                           scoring: str | None = None, batch_size: int = 16, progress: bool = False) -> list[dict]:
    """Accuracy on the composition task's test split for five methods.

    ``zero_shot`` (no vector), ``english_french LTV`` (θ_fr alone), ``masculine_feminine LTV``
    (θ_fem alone), ``sum of both`` (:func:`compose`, ``w_fr θ_fr + w_fem θ_fem``) and ``icl_{k}shot``
    (``k`` demonstrations from ``demos``, by default the task's own train split). ``task`` defaults to
    :func:`composition_task`; it is split with ``fractions`` and ``seed``, and the first ``n_test``
    test items are used. ``scoring`` overrides the task's scoring mode.

    Returns ``[{"method", "accuracy", "n", "k", "task", "scoring"}]``.
    """
    task = composition_task() if task is None else task
    sp = task.splits(seed, fractions)
    test = sp.test[:n_test]
    if not test:
        raise ValueError(f"task {task.name!r}: the test split is empty")
    demos = sp.train if demos is None else demos
    runs: list[tuple[str, int, TaskVector | None]] = [
        ("zero_shot", 0, None), ("english_french LTV", 0, vec_fr), ("masculine_feminine LTV", 0, vec_fem),
        ("sum of both", 0, compose(vec_fr, vec_fem, weights)), (f"icl_{k}shot", k, None),
    ]
    rows = []
    for method, shots, vec in runs:
        res = evaluate(model, task, test, k=shots, demos=demos if shots else (), seed=seed, scoring=scoring,
                       batch_size=batch_size, hooks_for=vec.hooks_for(model) if vec is not None else None, progress=progress)
        rows.append({"method": method, "accuracy": res.accuracy, "n": res.n, "k": shots, "task": task.name,
                     "scoring": res.scoring})
    return rows


__all__ = ["cosine_matrix", "transfer_matrix", "composition_task", "compose", "composition_experiment",
           "COMPOSITION_TASK", "COMPOSITION_FRACTIONS"]
