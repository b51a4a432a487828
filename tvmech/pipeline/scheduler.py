"""Running the steps: for each, reuse the saved numbers when their settings match, else compute them (job by job,
resumable, shared by ``torchrun`` ranks), then draw and save every figure of the step. The only user of
:mod:`~tvmech.pipeline.distributed`.

The config of a step is resolved once (:func:`resolve`): from the saved settings of this model where they hold
the derived fields, else from the loaded model; every run and job of the step uses that config.

Spreads over seeds: with several ``seeds`` a step runs once per seed (the seed of the splits, the LTV training
and the random sets), each run kept in ``<out>/runs/seed<s>/`` (its tables and its LTVs; reused while its
settings match, so a run can be computed elsewhere, e.g. one process per seed on a GPU, and gathered here). The
step's tables hold every run's rows, each tagged ``run_seed``; their settings name ``seeds`` instead of ``seed``,
and the figures draw mean ± sd over the run seeds.

Under ``torchrun`` the ranks claim the missing jobs of all of a step's runs one at a time from one pool (a step
computed in one call: one rank per run, after the ranks have trained its LTVs in turn), and only rank 0 draws and
writes the step's outputs; every step ends with a barrier.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tvmech.experiments.common import learned_vectors
from tvmech.pipeline import distributed as dist
from tvmech.pipeline.registry import Outcome, Session, Step
from tvmech.pipeline.store import ResultStore, Tables, fresh_meta, gathered_meta, provenance

log = logging.getLogger("tvmech.pipeline")
Job = tuple[ResultStore, str, Callable[[], object]]  # (store it is claimed in, name, work)


@contextlib.contextmanager
def ranks(device: str) -> Iterator[str]:
    """Join the ranks started by ``torchrun`` (if any) for the duration of a run; yields this rank's device."""
    device = dist.init(device)
    try:
        yield device
        dist.release_claims()
    finally:
        dist.shutdown()


def leads() -> bool:
    """Whether this process draws, writes the outputs and prints (rank 0, or the only process)."""
    return dist.is_main()


def settings_of(cfg, session: Session, seeds: Sequence[int] | None = None) -> dict:
    """The settings saved with a step's numbers: the config's, the model's name, and ``seeds`` instead of
    ``seed`` for gathered runs."""
    settings = {**cfg.settings(), "model": session.model_name}
    if seeds is not None and len(seeds) > 1:
        settings.pop("seed", None)
        settings["seeds"] = list(seeds)
    return settings


def resolve(step: Step, cfg, session: Session, seeds: Sequence[int] | None = None):
    """``cfg`` with every field derived from the model filled in, once for the whole step: from the saved
    settings of this model (the step's tables, else a seed's run) when they hold the derived fields (no model is
    loaded), else from the loaded model (checked against its depth)."""
    if cfg.resolved:
        return cfg
    if not session.force:
        for store in (session.store, *(session.store.run(s) for s in seeds or ())):
            saved = store.load(step.tables[0])
            if saved is not None and saved.settings.get("model") == session.model_name:
                adopted = cfg.adopt(saved.settings)
                if adopted is not None:
                    return adopted
    return cfg.for_model(session.model())


@dataclass
class _Run:
    """One run of a step: its config (with its seed), session, and numbers once found or computed."""

    seed: int | None
    cfg: object
    session: Session
    found: tuple[Tables, dict] | None = None  # (tables, metas)

    def settings(self) -> dict:
        return settings_of(self.cfg, self.session)


def _kwargs(step: Step, run: _Run) -> dict:
    """The keyword arguments of the experiment's ``run``: the run's LTV store and no progress bars off rank 0
    where it takes them, and the step's own inputs."""
    params = inspect.signature(step.experiment.run).parameters
    kwargs = {"vectors": run.session.vectors} if "vectors" in params else {}
    if not dist.is_main() and "progress" in params:
        kwargs["progress"] = False
    return {**kwargs, **(step.inputs(run.cfg, run.session) if step.inputs else {})}


def _job_work(step: Step, run: _Run, job: str, fields: dict, key: dict) -> Callable[[], dict]:
    def work() -> dict:
        tables = step.experiment.run(run.session.model(), replace(run.cfg, **fields), **_kwargs(step, run)).tables()
        record = {**fresh_meta(run.session.device, key), "tables": tables}
        if dist.world_size() > 1:
            record["rank"] = dist.rank()
        run.session.store.save_job(step.tables[0], job, record)
        return record
    return work


def pool(jobs: Sequence[Job]) -> None:
    """Under ``torchrun``, every job done by whichever rank claims it first, between two barriers (every rank
    has listed the jobs before any is written; every job is saved after); in one process, every job in order."""
    dist.barrier()
    for store, name, work in jobs:
        if dist.claim(store, name):
            work()
    dist.barrier()


def _by_jobs(step: Step, runs: Sequence[_Run], background: Sequence[Job]) -> None:
    """Compute the missing jobs of every run (tasks, or (task, layer) pairs) in one pool (with ``background``,
    jobs of a later step, first) and gather each run's tables from the per-job cache; each job's record is kept
    in the run's store as it finishes, so an interrupted run resumes at the first job without numbers, and runs of
    disjoint task subsets (e.g. parallel processes) share one output folder without overwriting each other."""
    plans = []
    for run in runs:
        key = step.job_key(run.settings())
        plan = {job: (fields, None if run.session.force else run.session.store.job(step.tables[0], job, key,
                                                                                     step.tables))
                for job, fields in step.job_list(run.cfg)}
        plans.append((run, key, plan))
    todo = [(run.session.store, f"{step.name}/{job}", _job_work(step, run, job, fields, key))
            for run, key, plan in plans for job, (fields, found) in plan.items() if found is None]
    if todo:
        pool([*background, *todo])
    for run, key, plan in plans:
        records = []
        for job, (fields, found) in plan.items():
            found = found or run.session.store.job(step.tables[0], job, key, step.tables)
            if found is None:
                raise RuntimeError(f"{run.session.store.job_file(step.tables[0], job)}: no numbers after every "
                                   "rank's share")
            records.append(found)
        meta = {**fresh_meta(run.session.device, run.settings()), **provenance(records)}
        tables = {name: [r for rec in records for r in rec["tables"][name]] for name in step.tables}
        run.found = tables, {name: dict(meta) for name in step.tables}


def share_vectors(step: Step, cfg, session: Session) -> None:
    """Under ``torchrun``, before a step that one rank computes in one call: the LTVs it trains (``step.vectors``),
    task ``i`` on rank ``i % world_size``, saved in the run's vector store, where that rank then finds them. No-op
    in a single process, for a step that names no vectors, or under ``--force`` (which retrains whatever is
    saved)."""
    if dist.world_size() <= 1 or step.vectors is None or session.force:
        return
    tasks, layer = step.vectors(cfg)
    for i, task in enumerate(tasks):
        if dist.mine(i):
            learned_vectors(session.model(), cfg, layer, session.vectors, tasks=(task,))
    dist.barrier()  # every vector is saved


def _whole(step: Step, runs: Sequence[_Run], seeded: bool) -> None:
    """Compute each run in one call: the one run on rank 0 (after :func:`share_vectors`), or with several seeds
    run ``i`` on rank ``i % world_size``."""
    if not seeded:
        share_vectors(step, runs[0].cfg, runs[0].session)
    for i, run in enumerate(runs):
        if dist.mine(i):
            result = step.experiment.run(run.session.model(), run.cfg, **_kwargs(step, run))
            meta = fresh_meta(run.session.device, run.settings())
            run.found = result.tables(), {name: dict(meta) for name in step.tables}


def _saved(step: Step, run: _Run, store: ResultStore | None = None):
    """The run's tables and metas saved with its settings (in ``store``, default its own); ``None`` under
    ``--force``."""
    return None if run.session.force else (store or run.session.store).load_matching(step.tables, run.settings())


def compute(step: Step, cfg, session: Session, seeds: Sequence[int] | None = None, background: Sequence[Job] = ()
            ) -> Outcome | None:
    """The step's numbers: reused where saved with these settings, else computed (see the module docstring).

    Args:
        step: the step.
        cfg: its config (derived fields may still be ``None``).
        session: the pipeline's session.
        seeds: several seeds: one run per seed, gathered; ``None``: ``cfg.seed``.
        background: jobs of a later step that the ranks take in this step's pool.

    Returns:
        The outcome; ``None`` on the ranks other than 0.
    """
    cfg = resolve(step, cfg, session, seeds)
    top = _Run(None, cfg, session)
    saved = None if session.force else session.store.load_matching(step.tables, settings_of(cfg, session, seeds))
    if saved is not None:
        return Outcome(cfg, *saved, computed=False)
    runs = [_Run(s, replace(cfg, seed=s), session.at(s)) for s in seeds] if seeds else [top]
    adopted = []  # seeds whose run is the single-seed <out>'s: saved into their run folder too
    for run in runs if seeds else ():
        run.found = _saved(step, run)
        if run.found is None:
            run.found = _saved(step, run, session.store)
            adopted += [run] if run.found is not None else []
    missing = [run for run in runs if run.found is None]
    if step.jobs == "whole":
        dist.barrier()  # every rank has listed the missing runs before any is written
        _whole(step, missing, bool(seeds))
    else:
        _by_jobs(step, missing, background)
    for run in missing if seeds else ():
        if run.found is not None and (dist.is_main() or step.jobs == "whole"):
            _write_tables(step, run.session.store, *run.found)
    dist.barrier()  # every run is saved
    if not dist.is_main():
        return None
    for run in adopted:
        _write_tables(step, run.session.store, *run.found)
    for run in missing:
        if run.found is None:  # computed by another rank
            run.found = run.session.store.load_matching(step.tables, run.settings())
            if run.found is None:
                raise RuntimeError(f"{run.session.store.root}: no saved {step.name} tables after every rank's share")
    if seeds:
        tables = {n: [{**r, "run_seed": run.seed} for run in runs for r in run.found[0][n]] for n in step.tables}
        settings = settings_of(cfg, session, seeds)
        metas = {n: gathered_meta({run.seed: run.found[1][n] for run in runs}, settings) for n in step.tables}
        cfg = replace(cfg, seed=seeds[0])
    else:
        tables, metas = top.found
    if session.preset:
        for meta in metas.values():
            meta["preset"] = session.preset
    return Outcome(cfg, tables, metas, computed=True)


def _write_tables(step: Step, store: ResultStore, tables: Tables, metas: dict) -> None:
    for name in step.tables:
        store.save_table(name, tables[name], metas[name])


def _own_way(step: Step, cfg, session: Session, background: Sequence[Job]) -> Outcome | None:
    """A step computed its own way (``step.compute``): its prefetch jobs shared by the ranks first."""
    jobs = step.prefetch(cfg, session) if step.prefetch else []
    pretrained = bool(jobs) and dist.world_size() > 1
    if pretrained:
        pool(jobs)
    return step.compute(cfg, session, pretrained) if dist.is_main() else None


def run_step(step: Step, cfg, session: Session, seeds: Sequence[int] | None = None, background: Sequence[Job] = ()
             ) -> list[Path]:
    """Redraw ``step`` from saved numbers or compute them; write every figure and table.

    Args:
        step: the step.
        cfg: its config (derived fields may still be ``None``).
        session: the pipeline's session.
        seeds: run the step once per seed (overriding ``cfg.seed``) and gather the runs; one seed is a plain run
            with that seed; ``None``: ``cfg.seed``.
        background: jobs of a later step that the ranks take in this step's pool.

    Returns:
        The written files (none on the ranks other than 0).
    """
    start = time.time()
    seeds = list(dict.fromkeys(seeds)) if seeds and step.seeded else None
    if seeds is not None and len(seeds) == 1:
        cfg, seeds = replace(cfg, seed=seeds[0]), None
    if step.compute is not None:
        outcome = _own_way(step, cfg, session, background)
    else:
        outcome = compute(step, cfg, session, seeds, background)
    if outcome is None:  # rank 0 draws and writes the step's outputs
        dist.barrier()
        return []
    written = write_outputs(step, outcome, session)
    log.info("%s: %s", step.name, ", ".join(str(p) for p in written))
    session.report.append({"step": step.name, "computed": outcome.computed, "seconds": time.time() - start,
                           "tables": outcome.tables})
    dist.barrier()  # the next step may read this one's tables
    return written


def write_outputs(step: Step, outcome: Outcome, session: Session) -> list[Path]:
    """Save every table of the step as ``<table>.json``/``.csv`` first (the numbers are what a rerun after a
    failure, e.g. a full disk, reuses), then draw its figures and save them."""
    store, written = session.store, []
    for table, rows in outcome.tables.items():
        written += list(store.save_table(table, rows, outcome.metas[table]).values())
    reads = {t: saved.rows for t in step.reads if (saved := store.load(t)) is not None}
    for fig, drawn in step.draw(outcome, session.model_name, reads):
        written += [p for p in store.save_figure(drawn, fig.name, png=session.png).values() if p]
    return written


def run_steps(steps: Sequence[Step], configs: dict, session: Session, seeds_of: Callable[[Step], list | None],
              progress: Callable = lambda it, **kw: it) -> None:
    """Run ``steps`` in order; under ``torchrun`` the prefetch jobs of a step (the synthetic models) are put in
    the pool of the step before it.

    Args:
        steps: the steps.
        configs: step name -> its config.
        session: the pipeline's session.
        seeds_of: a step's seeds (``None``: its config's).
        progress: wraps the steps' iteration (a progress bar shown on rank 0).
    """
    bar = progress(steps, disable=not dist.is_main())
    for i, step in enumerate(bar):
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(step.name)
        later = steps[i + 1] if i + 1 < len(steps) else None
        background = (later.prefetch(configs[later.name], session)
                      if later is not None and later.prefetch and dist.world_size() > 1 else ())
        run_step(step, configs[step.name], session, seeds=seeds_of(step), background=background)


__all__ = ["run_step", "run_steps", "compute", "resolve", "settings_of", "share_vectors", "pool", "write_outputs",
           "ranks", "leads"]
