"""Figure builders (:mod:`tvmech.figures.plots`), export, and the regeneration script.

Run ``python -m tvmech.figures`` to recompute and redraw every figure into ``figures/``.
"""
