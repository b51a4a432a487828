"""The ``robustness`` step: LTV, Vanilla TV and FV injected in other configurations of layers and positions
(:mod:`tvmech.experiments.robustness`); the layer sweep's zero-shot and ICL means are the figure's reference
lines."""

from collections.abc import Sequence

from tvmech.data.tasks import builtin_task
from tvmech.experiments import robustness
from tvmech.pipeline.registry import Drawing, Figure, Step, register
from tvmech.plots import behaviour_plots


def sweep_references(rows: list[dict] | None, tasks: Sequence[str]) -> dict[str, float]:
    """Zero-shot and ICL means of the layer sweep's rows over ``tasks``, each task under its own scoring (as
    robustness scores it); empty without rows."""
    refs = {}
    own = {t: builtin_task(t).scoring for t in tasks}
    for m in ("zero_shot", "icl_5shot"):
        vals = [r["accuracy"] for r in rows or () if r["method"] == m and r["task"] in tasks
                and r.get("scoring", own[r["task"]]) == own[r["task"]]]
        if vals:
            refs[m] = sum(vals) / len(vals)
    return refs


def _figure(d: Drawing):
    refs = sweep_references(d.reads.get("layer_sweep"), d.config.tasks)
    return behaviour_plots.robustness_figure(d.rows, refs, d.meta.get("note"))


STEP = register(Step(
    "robustness", robustness, order=30, reads=("layer_sweep",),
    figures=(Figure("robustness", _figure, "robustness", "LTV, Vanilla TV and FV accuracy in other injection "
                    "configurations (layers, positions by role)."),),
    quick={"tasks": ("antonym",), "ltv_steps": 15, "fv_prompts": 2,
           "configurations": ("query", "input_first", "before_input", "last5", "every2_query", "kshot_query")},
    seeds={"paper": (0, 1, 2)},
    cost={"quick": "167 s, shared CPU", "paper": "401 s, 3 seeds, 3 methods (H100)"},
))
