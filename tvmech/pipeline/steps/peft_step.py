"""The ``peft`` step: the LTV against prompt tuning and LoRA at matched training budgets
(:mod:`tvmech.experiments.peft`), computed in one call."""

from tvmech.experiments import peft
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import peft_plots

STEP = register(Step(
    "peft", peft, order=60, jobs="whole",
    figures=(Figure("peft", lambda d: peft_plots.peft_figure(d.rows, d.model_name), "peft",
                    "LTV against prompt tuning and LoRA at matched training budgets."),),
    quick={"task": "sentiment"},
    cost={"quick": "180 s", "paper": "18 s (H100)"},
))
