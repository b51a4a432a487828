"""The ``ltv_recipes`` step: tvmech's default LTV training against the released recipe as reported, at the middle
layer (:mod:`tvmech.experiments.ltv_recipes`): accuracy, steps and wall time per task."""

from tvmech.experiments import ltv_recipes
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import methods_plots
from tvmech.plots.mechanism_plots import by_scoring
from tvmech.plots.spread import mean_text


def key_number(rows: list[dict]) -> str:
    """Each recipe's mean test accuracy, steps and wall seconds."""
    rows = by_scoring(rows)
    return "; ".join(f"{n} {mean_text(mine)} ({mean_text(mine, 'steps_run', 0)} steps, "
                     f"{mean_text(mine, 'wall_s', 1)} s)"
                     for n in dict.fromkeys(r["recipe"] for r in rows) if (mine := [r for r in rows
                                                                                   if r["recipe"] == n]))


STEP = register(Step(
    "ltv_recipes", ltv_recipes, order=26,
    figures=(Figure("ltv_recipes", lambda d: methods_plots.recipes_figure(d.rows, d.model_name), "ltv_recipes",
                    "LTV training recipes: tvmech's default against the released recipe as reported (middle layer): "
                    "test accuracy (hover: steps and wall time).", key_number),),
    quick={"tasks": ("antonym",), "max_steps": 20},
    seeds={"paper": (0, 1, 2)},
    cost={"quick": "134 s on the CPU shared by ~8 jobs (32 s CPU time)", "paper": "not measured"},
))
