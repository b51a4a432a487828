"""The ``lens`` step: the logit lens at the query for zero-shot, ICL and TV-injected runs
(:mod:`tvmech.experiments.logit_lens`)."""

from tvmech.experiments import logit_lens
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import interactive, lens_plots

STEP = register(Step(
    "lens", logit_lens, order=100,
    figures=(
        Figure("logit_lens", lambda d: lens_plots.lens_heatmap(d.rows, d.model_name), "logit_lens",
               "Logit lens at the query: zero-shot, ICL and TV-injected runs."),
        Figure("logit_lens_by_layer", lambda d: interactive.lens_layer_figure(d.rows, d.model_name), "logit_lens",
               "The logit lens at one layer (slider), decoded top tokens on hover."),
    ),
    cost={"quick": "23 s", "paper": "8 s"},
))
