"""The ``composition`` step: sums of two tasks' LTVs on the composed task (:mod:`tvmech.experiments.composition`),
computed in one call."""

from tvmech.experiments import composition
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import geometry_plots

STEP = register(Step(
    "composition", composition, order=50, jobs="whole", vectors=lambda cfg: (cfg.parts, cfg.layer),
    figures=(Figure("composition", lambda d: geometry_plots.composition_bars(d.rows, model_name=d.model_name),
                    "composition", "Sums of two tasks' LTVs on composed tasks."),),
    cost={"quick": "59 s", "paper": "28 s (2-core CPU)"},
))
