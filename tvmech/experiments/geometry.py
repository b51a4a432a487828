"""Task geometry: cosine similarity between the tasks' LTVs and the transfer matrix (every task's vector
on every task's prompts), at one layer (``figures/task_cosine.json``, ``figures/task_transfer.json``).

Cosines: :func:`tvmech.analysis.vector_geometry.cosine_matrix`. Transfer (:func:`transfer_matrix`): for train task A
and test task B, ``acc(A → B)`` is the zero-shot accuracy on B's test queries with θ_A injected; the diagonal
is each vector on its own task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from tvmech.analysis.evaluation import evaluate
from tvmech.analysis.vector_geometry import cosine_matrix
from tvmech.data.tasks import Task, builtin_tasks
from tvmech.experiments.common import ALL_TASKS, ExperimentConfig, learned_vectors, middle_layer, option
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.task_vector import TaskVector


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the task-geometry experiment."""

    PREFIX = "geometry"
    DERIVED = {"layer": middle_layer}

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks compared", choices=ALL_TASKS)
    layer: int | None = option(None, "layer of the LTVs (None: the model's middle layer n_layers // 2)")
    ltv_steps: int = option(150, "training steps per learned task vector")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits and the LTV training")


@dataclass
class Result:
    """The cosine matrix (``names`` x ``names``) and the transfer records ``train_task, test_task, accuracy, n``."""

    TABLES: ClassVar[tuple[str, ...]] = ("task_transfer", "task_cosine")  # the keys of tables()

    config: Config
    names: list[str]
    cosine: list[list[float]]  # cosine[i][j] between the LTVs of names[i] and names[j]
    transfer: list[dict]

    def rows(self) -> list[dict]:
        """The transfer records (``figures/task_transfer.json``)."""
        return list(self.transfer)

    def cosine_rows(self) -> list[dict]:
        """``task_a, task_b, cosine`` for every pair (``figures/task_cosine.json``)."""
        return [{"task_a": a, "task_b": b, "cosine": self.cosine[i][j]}
                for i, a in enumerate(self.names) for j, b in enumerate(self.names)]

    def tables(self) -> dict[str, list[dict]]:
        return {"task_transfer": self.rows(), "task_cosine": self.cosine_rows()}


def transfer_matrix(model, vectors: Mapping[str, TaskVector], tasks: Mapping[str, Task], n_test: int | None = None,
                    seed: int = 0, *, batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Zero-shot accuracy of every test task with every task's vector injected.

    For train task A (a key of ``vectors``) and test task B (a key of ``tasks``), the record is
    ``acc(A → B) = mean over x in test_B of 1[argmax p(· | prompt_B(x); h_l[q] += θ_A) = y]``, with
    ``prompt_B`` the zero-shot prompt in B's own template, ``test_B`` the first ``n_test`` items of
    ``B.splits(seed).test`` and B's own scoring mode.

    Args:
        model: a loaded model.
        vectors: train task name -> its task vector.
        tasks: test task name -> task.
        n_test: cap on test queries per task (``None``: all).
        seed: seed of the splits.
        batch_size: prompts per forward pass.
        progress: show progress bars.

    Returns:
        ``[{"train_task", "test_task", "accuracy", "n"}]``, test tasks outer, train tasks inner.
    """
    rows = []
    for test_name, task in tasks.items():
        test = task.splits(seed).test[:n_test]
        if not test:
            raise ValueError(f"task {test_name!r} has an empty test split")
        for train_name, vec in vectors.items():
            res = evaluate(model, task, test, k=0, intervention=vec, batch_size=batch_size, progress=progress)
            rows.append({"train_task": train_name, "test_task": test_name, "accuracy": res.accuracy, "n": res.n})
    return rows


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None, progress: bool = True) -> Result:
    """LTVs of every task at ``config.layer`` (from ``vectors`` when saved there), their cosines and transfer.

    Args:
        model: a loaded model.
        config: the settings.
        vectors: where the LTVs are kept (in memory when ``None``).
        progress: show a progress bar for the transfer matrix.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vecs = learned_vectors(model, config, config.layer, vectors, progress=progress)
    names, cos = cosine_matrix(vecs)
    tasks = {t.name: t for t in builtin_tasks(config.tasks)}
    rows = transfer_matrix(model, vecs, tasks, n_test=config.n_test, seed=config.seed, progress=progress)
    return Result(config, names, [[float(x) for x in r] for r in cos], rows)
