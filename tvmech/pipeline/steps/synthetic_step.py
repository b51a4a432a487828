"""The ``synthetic`` step: small transformers trained from scratch on the synthetic ICL tasks of a preset
(:mod:`tvmech.experiments.synthetic`), one set of figures per task.

It needs no pretrained model and is computed its own way: it keeps its trained models (``<out>/synthetic/``)
and one table per figure and task (``synthetic_<task>_<figure>.json``, each with the task's settings), reuses
the saved figures of these settings and computes only the missing ones. Its (task, vanilla/TVP) models are jobs
that the ranks of a ``torchrun`` run share (:attr:`Step.prefetch`, in the previous step's pool when it has jobs
of its own); rank 0 then computes and draws the figures.
"""

from __future__ import annotations

import functools

from tvmech.experiments import synthetic
from tvmech.pipeline.registry import Drawing, Figure, Outcome, Session, Step, register
from tvmech.pipeline.store import fresh_meta
from tvmech.plots import synthetic_plots as sp

MODELS = "synthetic"  # the folder of the trained models in the store


def table(task: str, figure: str) -> str:
    return f"synthetic_{task}_{figure}"


def _saved(cfg: synthetic.Config, session: Session, name: str) -> tuple[list[str], dict[str, tuple]]:
    """One task's figures and, of those, the saved ones of these settings: ``figure -> (rows, meta)``."""
    task, settings = cfg.task(name), cfg.settings(name)
    wanted = [f for f in synthetic.FIGURES if f != "ltv" or task.discrete]
    found = {f: session.store.load(table(name, f)) for f in wanted} if not session.force else {}
    return wanted, {f: (s.rows, s.meta) for f, s in found.items() if s is not None and s.settings == settings}


def model_jobs(cfg: synthetic.Config, session: Session) -> list:
    """The step's model trainings as claimable jobs ``(store, name, work)``, one per (task, vanilla/TVP) pair; none
    when every figure of the step is saved with these settings (nothing to train)."""
    if all(len(saved) == len(wanted) for wanted, saved in (_saved(cfg, session, n) for n in cfg.task_names())):
        return []
    return [(session.store, f"synthetic/{name}/{which}", functools.partial(
        synthetic.trained_model, cfg, cfg.task(name), which, session.store.folder(MODELS), session.device,
        session.force)) for name in cfg.task_names() for which in synthetic.MODELS]


def compute(cfg: synthetic.Config, session: Session, pretrained: bool) -> Outcome:
    """Per task of the preset, its saved figures or the missing ones computed (training the models unless the
    ranks did: ``pretrained``, which also keeps ``--force`` from retraining them)."""
    tables, metas, computed = {}, {}, False
    for name in cfg.task_names():
        wanted, results = _saved(cfg, session, name)
        missing = tuple(f for f in wanted if f not in results)
        computed = computed or bool(missing)
        if missing:
            rows, scores = synthetic.run_task(cfg, name, session.store.folder(MODELS), session.device,
                                              session.force and not pretrained, missing)
            for fig in missing:
                meta = fresh_meta(session.device, cfg.settings(name))
                results[fig] = (rows[fig], {**meta, "sharpness": scores} if fig == "pca" else meta)
        for fig in wanted:
            tables[table(name, fig)], metas[table(name, fig)] = results[fig]
    return Outcome(cfg, tables, metas, computed)


def _titled(figure, d: Drawing):
    """``figure`` with the task and preset appended to its title."""
    return figure.update_layout(title_text=f"{figure.layout.title.text} — {d.task}, preset {d.config.preset}")


def _layer(d: Drawing) -> int:
    return synthetic.PRESETS[d.config.preset]["train"]["tvp_layer"]


FIGURES = (
    Figure(table("{task}", "curves"), lambda d: sp.training_curves_figure(
        d.rows, f"Training from scratch: ICL loss and TVP-loss — {d.task}, preset {d.config.preset}"),
           table("{task}", "curves"), "Synthetic ICL: {task} curves."),
    Figure(table("{task}", "tv_prompting"), lambda d: _titled(sp.tv_prompting_figure(d.rows, _layer(d)), d),
           table("{task}", "tv_prompting"), "Synthetic ICL: {task} tv prompting."),
    Figure(table("{task}", "pca"), lambda d: _titled(sp.pca_figure(
        d.rows, d.meta["sharpness"], d.config.task(d.task).param_names[0]), d), table("{task}", "pca"),
           "Synthetic ICL: {task} pca."),
    Figure(table("{task}", "robustness"), lambda d: _titled(sp.robustness_figure(d.rows, _layer(d)), d),
           table("{task}", "robustness"), "Synthetic ICL: {task} robustness."),
    Figure(table("{task}", "ltv"), lambda d: _titled(sp.ltv_figure(d.rows, _layer(d)), d), table("{task}", "ltv"),
           "Synthetic ICL: {task} ltv."),
)

STEP = register(Step(
    "synthetic", synthetic, order=120, figures=FIGURES, compute=compute, prefetch=model_jobs,
    tasks=lambda cfg: cfg.task_names(), seeded=False,
    quick={"preset": "small"},
    cost={"quick": "65 s", "paper": "6 s (models trained during linear)"},
))
