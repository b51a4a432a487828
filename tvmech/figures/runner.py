"""Running one figure step: reuse the saved numbers when their settings match, else compute (task by task,
resumable), then draw and save every figure of the step.

Spreads over seeds: with several ``seeds`` a step runs once per seed (the seed of the splits, the LTV training
and the random sets), each run kept in ``<out>/runs/seed<s>/`` (its tables and its LTVs; reused while its
settings match, so a run can be computed elsewhere, e.g. one process per seed on a GPU, and gathered here). The
step's tables hold every run's rows, each tagged ``run_seed``; their settings name ``seeds`` instead of ``seed``,
and the figures draw mean ± sd over the run seeds.

Under ``torchrun`` the ranks share each step's missing (seed, task) jobs and only rank 0 draws and writes the
step's outputs: see :mod:`tvmech.figures.distributed`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from tvmech.core.adapter import adapt
from tvmech.core.io import write_json
from tvmech.experiments.common import learned_vectors
from tvmech.figures import distributed as dist
from tvmech.figures.cache import meta as fresh_meta
from tvmech.figures.export import save_figure, save_table
from tvmech.figures.steps import Context, Metas, Step, Tables, cached_task, task_cache

log = logging.getLogger("tvmech.figures")
RUNS = "runs"  # <out>/runs/seed<s>/: the single-seed runs of a multi-seed step


def _settings(cfg, ctx: Context, seeds: Sequence[int] | None = None) -> dict:
    settings = {**cfg.settings(), "model": ctx.model_name}
    if seeds is not None and len(seeds) > 1:
        settings.pop("seed", None)
        settings["seeds"] = list(seeds)
    return settings


def seed_dir(out: Path, seed: int) -> Path:
    """Where the run of seed ``seed`` of a multi-seed step is kept: ``<out>/runs/seed<seed>``."""
    return Path(out) / RUNS / f"seed{seed}"


def saved_seeds(step: Step, ctx: Context) -> list[int] | None:
    """The ``seeds`` of the step's saved multi-seed tables in ``<out>`` (``None`` when single-seed or absent):
    a run that names no seed redraws them as they were saved."""
    path = ctx.out / f"{step.tables[0]}.json"
    if ctx.force or not path.is_file():
        return None
    seeds = json.loads(path.read_text()).get("meta", {}).get("settings", {}).get("seeds")
    return list(seeds) if seeds else None


def saved_tables(step: Step, cfg, ctx: Context, seeds: Sequence[int] | None = None):
    """``(resolved config, tables, metas)`` from ``<out>/<table>.json`` when every table exists and was saved
    with the settings of ``cfg`` (and ``seeds``, when several) on this model; ``None`` otherwise (or with
    ``ctx.force``).

    Fields of ``cfg`` that are derived from the model and still ``None`` take the saved values: the saved
    settings name the same model, so the derivation gives the same values without loading it.
    """
    if ctx.force:
        return None
    tables, metas = {}, {}
    for name in step.tables:
        path = ctx.out / f"{name}.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        tables[name], metas[name] = data["rows"], data.get("meta", {})
    saved = metas[step.tables[0]].get("settings", {})
    if saved.get("model") != ctx.model_name:
        return None
    resolved = cfg.adopt(saved)
    if resolved is None or any(metas[n].get("settings") != _settings(resolved, ctx, seeds) for n in step.tables):
        return None
    return resolved, tables, metas


def _missing_jobs(step: Step, cfg, ctx: Context, settings: dict) -> tuple[dict, dict[str, dict | None]]:
    """``(key, done)``: the settings a job's cached numbers must match (:meth:`Step.job_key`), and each job's
    cached record (``None`` where there is none, or under ``--force``), in the order of :meth:`Step.jobs`."""
    key = step.job_key(settings)
    return key, {name: None if ctx.force else cached_task(ctx.out, step, name, key) for name, _ in step.jobs(cfg)}


def _run_job(step: Step, cfg, ctx: Context, job: str, key: dict, model, kwargs: dict) -> dict:
    """Compute one job's tables and save them in the task cache (naming the rank under ``torchrun``)."""
    tables = step.experiment.run(model, replace(cfg, **dict(step.jobs(cfg))[job]), **kwargs).tables()
    found = {**fresh_meta(ctx.device, key), "tables": tables}
    if dist.world_size() > 1:
        found["rank"] = dist.rank()
    write_json(task_cache(ctx.out, step, job), found)
    return found


def _per_task(step: Step, cfg, ctx: Context, settings: dict, model, kwargs: dict) -> tuple[Tables, list[dict]]:
    """Run the experiment job by job (task by task, or (task, layer) pair by pair: :meth:`Step.jobs`), keeping
    each job's tables in ``<out>/.tasks/<table>/<job>.json`` (with the settings that do not name the job, the
    device and the date): an interrupted run resumes at the first job without numbers, and runs of disjoint
    task subsets (e.g. parallel processes) share one output directory without overwriting each other. Under
    ``torchrun`` the ranks claim the jobs without numbers one by one (:func:`distributed.claim`; the record
    names the ``rank``) and every rank reads all of them back after a barrier.

    Returns:
        The tables, and each job's saved record (its ``device`` and ``date`` are the provenance).
    """
    key, done = _missing_jobs(step, cfg, ctx, settings)
    missing = [job for job, found in done.items() if found is None]
    dist.barrier()  # every rank has listed the missing jobs before any is written
    for job in missing:
        if dist.claim(ctx.out, f"{step.name}/{job}"):
            done[job] = _run_job(step, cfg, ctx, job, key, model, kwargs)
    if dist.world_size() > 1:
        dist.barrier()  # every missing job is now saved, by one rank or another
        for job in missing:
            done[job] = done[job] or cached_task(ctx.out, step, job, key)
            if done[job] is None:
                raise RuntimeError(f"{task_cache(ctx.out, step, job)}: no numbers after every rank's share")
    tables = {name: [r for job in done for r in done[job]["tables"][name]] for name in step.tables}
    return tables, list(done.values())


def _prepared(step: Step, cfg, ctx: Context) -> tuple[object, object, dict, dict]:
    """``(model, cfg resolved against it, settings, keyword arguments of the experiment)``."""
    model = ctx.model()
    if not cfg.resolved:
        cfg = cfg.resolve(adapt(model).n_layers)
    return model, cfg, _settings(cfg, ctx), _quiet(step, step.inputs(cfg, ctx) if step.inputs else {})


Background = Sequence[tuple[Path, str, Callable[[], object]]]  # (folder, name, work) of jobs of a later step


def share_jobs(step: Step, runs: Sequence[tuple[object, Context]], background: Background = ()) -> None:
    """Under ``torchrun``, before a per-task step's runs (its missing seeds, or its one run) are computed one by
    one: the jobs without numbers of all of them, claimed one at a time by whichever rank is free
    (:func:`distributed.claim`) and saved in each run's task cache, where the runs then find them. Without it
    each seed would end in a barrier, the ranks with no job left idling (10 tasks on 4 ranks: three rounds per
    seed instead of 7.5 over three seeds). ``background``: jobs of a later step put first in the same pool (the
    synthetic step's models, which keep two ranks busy while the others work through this step's jobs). No-op
    in a single process or for a step not computed task by task.

    Args:
        step: the step.
        runs: ``(config, context)`` of each run to compute (the config with its seed, the context writing into
            its folder).
        background: ``(folder, name, work)``: claimed under ``folder`` as ``name``, then ``work()``.
    """
    if dist.world_size() <= 1 or not step.per_task:
        return
    jobs = list(background)
    for cfg, ctx in runs:
        model, cfg, settings, kwargs = _prepared(step, cfg, ctx)
        key, done = _missing_jobs(step, cfg, ctx, settings)
        jobs += [(ctx.out, f"{step.name}/{job}", functools.partial(_run_job, step, cfg, ctx, job, key, model, kwargs))
                 for job, found in done.items() if found is None]
    if len(jobs) == len(background):
        return  # nothing of this step to compute: the background jobs wait for their own step
    dist.barrier()  # every rank has listed the jobs before any is written
    for folder, name, work in jobs:
        if dist.claim(folder, name):
            work()
    dist.barrier()  # every job is saved


def _quiet(step: Step, kwargs: dict) -> dict:
    """``kwargs`` with ``progress=False`` on the ranks other than 0 (when the experiment has progress bars)."""
    if dist.is_main() or "progress" not in inspect.signature(step.experiment.run).parameters:
        return kwargs
    return {**kwargs, "progress": False}


def compute_tables(step: Step, cfg, ctx: Context) -> tuple[object, Tables, Metas]:
    """Compute the step's tables with ``cfg`` (resolved against the loaded model), task by task when the step
    allows it (resumable; the meta then names the devices and the latest date of the tasks' runs).

    Returns:
        ``(resolved config, tables, metas)``.
    """
    model, cfg, settings, kwargs = _prepared(step, cfg, ctx)
    ctx.out.mkdir(parents=True, exist_ok=True)
    meta = fresh_meta(ctx.device, settings)
    if step.per_task:
        tables, runs = _per_task(step, cfg, ctx, settings, model, kwargs)
        meta.update(_provenance(runs))
    else:
        tables = step.experiment.run(model, cfg, **kwargs).tables()
    return cfg, tables, {name: dict(meta) for name in step.tables}


def _provenance(parts: list[dict]) -> dict:
    """``{"device", "date"}`` of numbers gathered from ``parts`` (tasks or runs): their distinct devices joined
    by ``"; "`` and the latest date."""
    return {"device": "; ".join(dict.fromkeys(p.get("device", "?") for p in parts)),
            "date": max((p.get("date", "") for p in parts), default="")}


def _gathered_meta(metas: dict[int, dict], settings: dict) -> dict:
    """The meta of a multi-seed table: the gathered settings, each run's device and date (and note)."""
    runs = [{"seed": s, **{k: m[k] for k in ("device", "date", "note") if k in m}} for s, m in metas.items()]
    return {"settings": settings, **_provenance(list(metas.values())), "runs": runs}


def seeded_tables(step: Step, cfg, ctx: Context, seeds: Sequence[int], background: Background = ()
                  ) -> tuple[object, Tables, Metas] | None:
    """The step's tables over several seeds: each seed's run reused from ``<out>/runs/seed<s>`` (or from a
    single-seed ``<out>`` of that seed) when its settings match, else computed and saved there; rows tagged
    ``run_seed``. Under ``torchrun`` a per-task step shares the missing seeds' jobs over the ranks (with
    ``background``: :func:`share_jobs`); another step gives each rank its share of the missing seeds.

    Returns:
        ``(resolved config of the first seed, tables, metas)``; ``None`` on the ranks other than 0.
    """
    runs: dict[int, tuple | None] = {}
    subs = {s: (replace(ctx, out=seed_dir(ctx.out, s), png=False), replace(cfg, seed=s)) for s in seeds}
    adopted = []  # seeds whose run is the single-seed <out>'s: saved into their run folder too
    for s, (sub, scfg) in subs.items():
        runs[s] = saved_tables(step, scfg, sub)
        if runs[s] is None:
            runs[s] = saved_tables(step, scfg, ctx)
            adopted += [s] if runs[s] is not None else []
    missing = [s for s, found in runs.items() if found is None]
    share_jobs(step, [(subs[s][1], subs[s][0]) for s in missing], background)
    dist.barrier()  # every rank has listed the missing runs before any is written
    for i, s in enumerate(missing):
        if step.per_task or dist.mine(i):  # a per-task step shares the seed's tasks; another step the seeds
            sub, scfg = subs[s]
            runs[s] = compute_tables(step, scfg, sub)
            if dist.is_main() or not step.per_task:
                for name in step.tables:
                    write_json(sub.out / f"{name}.json", {"meta": runs[s][2][name], "rows": runs[s][1][name]})
    dist.barrier()  # every run is saved
    if not dist.is_main():
        return None
    for s in adopted:
        for name in step.tables:
            write_json(subs[s][0].out / f"{name}.json", {"meta": runs[s][2][name], "rows": runs[s][1][name]})
    for s in missing:
        if runs[s] is None:  # computed by another rank
            runs[s] = saved_tables(step, subs[s][1], replace(subs[s][0], force=False))  # (just written)
            if runs[s] is None:
                raise RuntimeError(f"{subs[s][0].out}: no saved {step.name} tables after every rank's share")
    cfg = replace(runs[seeds[0]][0], seed=seeds[0])
    settings = _settings(cfg, ctx, seeds)
    tables = {n: [{**r, "run_seed": s} for s, run in runs.items() for r in run[1][n]] for n in step.tables}
    metas = {n: _gathered_meta({s: run[2][n] for s, run in runs.items()}, settings) for n in step.tables}
    return cfg, tables, metas


def share_vectors(step: Step, cfg, ctx: Context) -> None:
    """Under ``torchrun``, before a step that rank 0 computes alone (not task by task): the LTVs it trains
    (``step.vectors``), task ``i`` on rank ``i % world_size``, saved in the run's vector store, where rank 0 then
    finds them. No-op in a single process, for a step that names no vectors, or under ``--force`` (which
    retrains whatever is saved).
    """
    if dist.world_size() <= 1 or step.per_task or step.vectors is None or ctx.force:
        return
    model = ctx.model()
    cfg = cfg.for_model(model)
    tasks, layer = step.vectors(cfg)
    for i, task in enumerate(tasks):
        if dist.mine(i):
            learned_vectors(model, cfg, layer, ctx.vectors, tasks=(task,))
    dist.barrier()  # every vector is saved


def run_step(step: Step, cfg, ctx: Context, seeds: Sequence[int] | None = None, background: Background = ()
             ) -> list[Path]:
    """Redraw ``step`` from saved numbers or compute them; write every figure.

    Args:
        step: the step.
        cfg: its experiment config (derived fields may still be ``None``).
        ctx: the run's context.
        seeds: run the step once per seed (overriding ``cfg.seed``) and gather the runs; one seed is a plain
            run with that seed; ``None``: ``cfg.seed``.
        background: jobs of a later step that the ranks take in this step's pool (:func:`share_jobs`).

    Returns:
        The written files (none on the ranks other than 0).
    """
    start = time.time()
    seeds = list(dict.fromkeys(seeds)) if seeds else None
    if seeds is not None and len(seeds) == 1:
        cfg, seeds = replace(cfg, seed=seeds[0]), None
    found = saved_tables(step, cfg, ctx, seeds)
    computed = found is None
    if computed:
        if seeds:
            found = seeded_tables(step, cfg, ctx, seeds, background)
        else:
            share_jobs(step, [(cfg, ctx)], background)
            share_vectors(step, cfg, ctx)
            if step.per_task or dist.is_main():  # (a step not computed task by task: rank 0 alone)
                found = compute_tables(step, cfg, ctx)
    if not dist.is_main():  # rank 0 draws and writes the step's outputs
        dist.barrier()
        return []
    if computed and ctx.preset:
        for meta in found[2].values():
            meta["preset"] = ctx.preset
    cfg, tables, metas = found
    written = []
    for name, fig, table in step.draw(tables, metas, cfg, ctx):
        rows, meta = (tables[table], metas[table]) if table else (None, None)
        written += [p for p in save_figure(fig, ctx.out, name, rows, meta, png=ctx.png).values() if p]
    for table in step.tables:  # every table as <table>.json/.csv, drawn under its name or not
        if ctx.out / f"{table}.json" not in written:
            written += list(save_table(ctx.out, table, tables[table], metas[table]).values())
    log.info("%s: %s", step.name, ", ".join(str(p) for p in written))
    ctx.report.append({"step": step.name, "computed": computed, "seconds": time.time() - start, "tables": tables})
    dist.barrier()  # the next step may read this one's tables
    return written
