"""The synthetic step of ``python -m tvmech.figures``: small transformers trained from scratch on the synthetic
ICL tasks of a preset (:mod:`tvmech.experiments.synthetic`), one set of figures per task.

Unlike the other steps it keeps trained models (``<out>/synthetic/``) and one table per figure and task
(``synthetic_<task>_<figure>.json``). Under ``torchrun`` its (task, vanilla/TVP) models are claimed by the ranks
(:func:`synthetic_jobs`, in the previous step's pool when it has jobs of its own), and rank 0 computes and draws
the figures.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tvmech.experiments import synthetic
from tvmech.figures import distributed as dist
from tvmech.figures import synthetic_plots as sp
from tvmech.figures.cache import meta as fresh_meta
from tvmech.figures.export import save_figure
from tvmech.figures.steps import Context

log = logging.getLogger("tvmech.figures")


def _synthetic_figures(name: str, task, cfg: synthetic.Config, results: dict) -> dict:
    layer = synthetic.PRESETS[cfg.preset]["train"]["tvp_layer"]
    title = f" — {name}, preset {cfg.preset}"
    figs = {"curves": sp.training_curves_figure(results["curves"][0], "Training from scratch: ICL loss and TVP-loss"
                                                + title),
            "tv_prompting": sp.tv_prompting_figure(results["tv_prompting"][0], layer),
            "pca": sp.pca_figure(results["pca"][0], results["pca"][1]["sharpness"], task.param_names[0]),
            "robustness": sp.robustness_figure(results["robustness"][0], layer)}
    if "ltv" in results:
        figs["ltv"] = sp.ltv_figure(results["ltv"][0], layer)
    for fig, figure in figs.items():
        if fig != "curves":
            figure.update_layout(title_text=f"{figure.layout.title.text}{title}")
    return figs


def synthetic_jobs(cfg: synthetic.Config, ctx: Context) -> list[tuple[Path, str, Callable[[], object]]]:
    """The synthetic step's model trainings as claimable jobs ``(folder, name, work)``, one per (task,
    vanilla/TVP) pair; none when every figure of the step is saved with these settings (nothing to train)."""
    if all(len(saved) == len(wanted) for wanted, saved in
           (_saved_synthetic(cfg, ctx, name) for name in cfg.task_names())):
        return []
    return _model_jobs(cfg, ctx)


def _model_jobs(cfg: synthetic.Config, ctx: Context) -> list[tuple[Path, str, Callable[[], object]]]:
    return [(ctx.out, f"synthetic/{name}/{which}", functools.partial(
        synthetic.trained_model, cfg, cfg.task(name), which, ctx.out / "synthetic", ctx.device, ctx.force))
        for name in cfg.task_names() for which in synthetic.MODELS]


def pretrain_synthetic(cfg: synthetic.Config, ctx: Context) -> bool:
    """Under ``torchrun``, train (or find saved) the step's models, each claimed by whichever rank is free (those
    already claimed in this run, e.g. in the previous step's pool, are skipped), so that rank 0 then only loads
    them; no-op in a single process. Its caller has found figures to compute (:func:`run_synthetic`).

    Returns:
        Whether the models were made here (rank 0 must then not retrain them under ``--force``).
    """
    if dist.world_size() <= 1:
        return False
    for folder, name, work in _model_jobs(cfg, ctx):
        if dist.claim(folder, name):
            work()
    dist.barrier()  # every model is saved
    return True


def _saved_synthetic(cfg: synthetic.Config, ctx: Context, name: str) -> tuple[list[str], dict[str, tuple]]:
    """One synthetic task's figures and, of those, the saved ones of these settings: ``fig -> (rows, meta)``."""
    task, settings = cfg.task(name), cfg.settings(name)
    wanted = [f for f in synthetic.FIGURES if f != "ltv" or task.discrete]
    saved = {}
    for fig in wanted:
        path = ctx.out / f"synthetic_{name}_{fig}.json"
        if not ctx.force and path.is_file():
            data = json.loads(path.read_text())
            if data.get("meta", {}).get("settings") == settings:
                saved[fig] = (data["rows"], data["meta"])
    return wanted, saved


def run_synthetic(cfg: synthetic.Config, ctx: Context) -> list[Path]:
    """The synthetic step: per task of the preset, redraw its saved figures or train and compute the missing ones
    (under ``torchrun``: the ranks train the models in parallel (:func:`pretrain_synthetic`), then rank 0 alone
    computes and draws, the others wait).

    Args:
        cfg: the synthetic config.
        ctx: the run's context (models are kept under ``<out>/synthetic``).

    Returns:
        The written files (none on the ranks other than 0).
    """
    start = time.time()
    found = {name: _saved_synthetic(cfg, ctx, name) for name in cfg.task_names()}
    missing_any = any(len(saved) < len(wanted) for wanted, saved in found.values())
    pretrained = pretrain_synthetic(cfg, ctx) if missing_any else False
    if not dist.is_main():
        dist.barrier()
        return []
    computed, written = False, []
    for name in cfg.task_names():
        task, settings = cfg.task(name), cfg.settings(name)
        wanted, results = found[name]
        missing = tuple(f for f in wanted if f not in results)
        computed = computed or bool(missing)
        if missing:
            rows, scores = synthetic.run_task(cfg, name, ctx.out / "synthetic", ctx.device,
                                              ctx.force and not pretrained, missing)
            for fig in missing:
                meta = fresh_meta(ctx.device, settings)
                results[fig] = (rows[fig], {**meta, "sharpness": scores} if fig == "pca" else meta)
        for fig, figure in _synthetic_figures(name, task, cfg, results).items():
            rows, meta = results[fig]
            paths = save_figure(figure, ctx.out, f"synthetic_{name}_{fig}", rows, meta, png=ctx.png)
            written += [p for p in paths.values() if p]
    log.info("synthetic: %s", ", ".join(str(p) for p in written))
    ctx.report.append({"step": "synthetic", "computed": computed, "seconds": time.time() - start, "tables": {}})
    dist.barrier()
    return written
