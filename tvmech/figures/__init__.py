"""The former name of :mod:`tvmech.pipeline`, kept for its commands: ``python -m tvmech.figures`` runs
``python -m tvmech.pipeline`` and ``python -m tvmech.figures.readme`` runs ``python -m tvmech.pipeline.readme``.
The figure builders are in :mod:`tvmech.plots`.
"""
