"""Figures: pure builders (rows -> ``go.Figure``: :mod:`~tvmech.figures.plots`, :mod:`~tvmech.figures.geometry_plots`,
:mod:`~tvmech.figures.peft_plots`, :mod:`~tvmech.figures.mechanism_plots`, :mod:`~tvmech.figures.lens_plots`,
:mod:`~tvmech.figures.synthetic_plots`), export (:mod:`~tvmech.figures.export`) and the command line
(:mod:`~tvmech.figures.run`, whose options come from the configs of :mod:`tvmech.experiments`; the steps are listed
in :mod:`~tvmech.figures.steps` and run by :mod:`~tvmech.figures.runner`).

Run ``python -m tvmech.figures`` to recompute and redraw every figure into ``figures/``.
"""

from tvmech.figures.lens_plots import lens_heatmap, transition_figure
from tvmech.figures.plots import layer_sweep_figure
from tvmech.figures.synthetic_plots import ltv_figure, pca_figure, training_curves_figure, tv_prompting_figure

# the builders the notebooks call (synthetic_plots.robustness_figure is reached through its module: plots.py has
# a robustness_figure of its own)
__all__ = ["layer_sweep_figure", "lens_heatmap", "transition_figure", "training_curves_figure",
           "tv_prompting_figure", "pca_figure", "ltv_figure"]
