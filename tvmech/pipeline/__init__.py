"""The figure pipeline: ``python -m tvmech.pipeline`` runs the experiments of :mod:`tvmech.experiments`, keeps
their numbers and draws every figure with the pure builders of :mod:`tvmech.plots`.

* :mod:`~tvmech.pipeline.registry`: what a step is (:class:`~tvmech.pipeline.registry.Step`,
  :class:`~tvmech.pipeline.registry.Figure`); :mod:`~tvmech.pipeline.steps`: one module per step, each
  registering itself.
* :mod:`~tvmech.pipeline.store`: the result store, the one owner of an output folder's layout (tables, per-job
  caches, runs per seed, provenance, settings matching).
* :mod:`~tvmech.pipeline.scheduler`: reuse or compute each step (job by job, resumable, over seeds, shared by
  ``torchrun`` ranks through :mod:`~tvmech.pipeline.distributed`), then draw and save.
* :mod:`~tvmech.pipeline.cli`: the command line, generated from the steps' configs;
  :mod:`~tvmech.pipeline.presets`: ``quick`` and ``paper``.
* :mod:`~tvmech.pipeline.gallery`: ``index.html``; :mod:`~tvmech.pipeline.readme` (with
  :mod:`~tvmech.pipeline.readme_tables`, :mod:`~tvmech.pipeline.readme_mechanism`,
  :mod:`~tvmech.pipeline.readme_agreement` and :mod:`~tvmech.pipeline.claims`): README's tables and verdict
  sentences from the JSON.

:func:`tvmech.pipeline.registry.draw` gives the figures of an experiment's result as the pipeline draws them.
"""
