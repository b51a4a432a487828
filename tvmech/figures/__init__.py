"""Figures: pure builders (rows -> ``go.Figure``: :mod:`~tvmech.figures.plots`, :mod:`~tvmech.figures.geometry_plots`,
:mod:`~tvmech.figures.peft_plots`, :mod:`~tvmech.figures.mechanism_plots`, :mod:`~tvmech.figures.lens_plots`,
:mod:`~tvmech.figures.synthetic_plots`), export (:mod:`~tvmech.figures.export`) and the command line
(:mod:`~tvmech.figures.run`, whose options come from the configs of :mod:`tvmech.experiments`; the steps are listed
in :mod:`~tvmech.figures.steps` and run by :mod:`~tvmech.figures.runner`).

Run ``python -m tvmech.figures`` to recompute and redraw every figure into ``figures/``.
"""
