"""The ``geometry`` step: cosine similarity and transfer between the tasks' LTVs
(:mod:`tvmech.experiments.geometry`), computed in one call (every pair of tasks)."""

from tvmech.experiments import geometry
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import geometry_plots


def cosine_matrix(rows: list[dict]) -> tuple[list[str], list[list[float]]]:
    """The task names and the cosine matrix of ``task_cosine`` rows."""
    names = list(dict.fromkeys(r["task_a"] for r in rows))
    value = {(r["task_a"], r["task_b"]): r["cosine"] for r in rows}
    return names, [[value[(a, b)] for b in names] for a in names]


STEP = register(Step(
    "geometry", geometry, order=40, jobs="whole", vectors=lambda cfg: (cfg.tasks, cfg.layer),
    figures=(
        Figure("task_cosine", lambda d: geometry_plots.cosine_heatmap(*cosine_matrix(d.rows), model_name=d.model_name),
               "task_cosine", "Cosine similarity between the tasks' LTVs."),
        Figure("task_transfer", lambda d: geometry_plots.transfer_heatmap(d.rows, model_name=d.model_name),
               "task_transfer", "One task's LTV applied to another task's prompts."),
    ),
    cost={"quick": "54 s", "paper": "35 s"},
))
