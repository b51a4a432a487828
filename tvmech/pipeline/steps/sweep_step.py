"""The ``sweep`` step: one task vector (LTV, Vanilla TV, function vector) injected at one layer, layer by layer
(:mod:`tvmech.experiments.layer_sweep`)."""

from tvmech.experiments import layer_sweep
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import behaviour_plots
from tvmech.plots.mechanism_plots import by_scoring
from tvmech.plots.spread import mean_text, over_runs


def key_number(rows: list[dict]) -> str:
    """The LTV's best layer and its accuracy against zero-shot (each task's first scoring: the headline)."""
    rows = by_scoring(rows)
    ltv = over_runs([r for r in rows if r["method"] == "ltv"], lambda r: r["layer"], "accuracy")
    if not ltv:
        return ""
    layer = max(ltv, key=lambda l: ltv[l].mean)
    best = mean_text([r for r in rows if r["method"] == "ltv" and r["layer"] == layer])
    return f"LTV best at layer {layer}: {best}; zero-shot {mean_text([r for r in rows if r['method'] == 'zero_shot'])}"


STEP = register(Step(
    "sweep", layer_sweep, order=20,
    figures=(
        Figure("layer_sweep", lambda d: behaviour_plots.layer_sweep_figure(d.rows, d.model_name), "layer_sweep",
               "One task vector (LTV, Vanilla TV, function vector) injected at one layer: mean accuracy.", key_number),
        Figure("layer_sweep_by_task", lambda d: behaviour_plots.layer_sweep_by_task_figure(d.rows, d.model_name),
               "layer_sweep", "The layer sweep per task."),
    ),
    quick={"tasks": ("antonym",), "layer_count": 3, "fv_prompts": 4},
    cost={"quick": "135 s", "paper": "89 s (H100)"},
))
