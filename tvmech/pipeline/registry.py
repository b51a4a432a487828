"""What a step of the pipeline is, and the registry its module adds it to.

A step is one module under :mod:`tvmech.pipeline.steps` that calls :func:`register` with a :class:`Step`: the
experiment it runs (a :mod:`tvmech.experiments` module: ``Config``, ``run``, ``Result``), its tables (those of the
experiment's ``Result``), its figures (:class:`Figure`: name, pure builder, the table it draws, caption, key
number), the tables of earlier steps it reads (through the result store), how its numbers are split into jobs,
its quick-preset values and its measured cost. The command line, ``--list``, the presets, the gallery, the README
generator and the tests read the registry; the scheduler (:mod:`tvmech.pipeline.scheduler`) runs the steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Literal

import plotly.graph_objects as go

from tvmech.experiments.vectors import VectorStore
from tvmech.pipeline.store import Metas, ResultStore, Tables
from tvmech.plots.style import readable

TASK = "{task}"  # in a figure's or table's name: one per task of the step's config (Step.tasks)


@dataclass
class Session:
    """One run of the pipeline, as every step sees it."""

    store: ResultStore  # where the numbers, figures and LTVs go
    model: Callable[[], object]  # loads the model on first call
    model_name: str  # recorded in the settings
    device: str  # torch device
    force: bool = False  # recompute even where saved numbers match
    png: bool = True  # write PNGs
    preset: str | None = None  # recorded in the meta of what is computed
    report: list = field(default_factory=list)  # per step run: {"step", "computed", "seconds", "tables"}

    @property
    def vectors(self) -> VectorStore:
        return self.store.vectors(self.force)

    def at(self, seed: int) -> Session:
        """The session of the run of seed ``seed`` of a multi-seed step (its own store, no PNGs)."""
        return replace(self, store=self.store.run(seed), png=False)


@dataclass(frozen=True)
class Drawing:
    """What a figure builder sees: the step's tables, the tables of earlier steps it reads, the resolved config."""

    tables: Mapping[str, list[dict]]
    metas: Mapping[str, dict]
    config: Any
    model_name: str = ""
    reads: Mapping[str, list[dict]] = field(default_factory=dict)  # Step.reads that are saved
    table: str = ""  # the figure's table (its name filled in for a per-task figure)
    task: str | None = None  # the task of a per-task figure

    @property
    def rows(self) -> list[dict]:
        """The rows of the figure's table."""
        return self.tables[self.table]

    @property
    def meta(self) -> dict:
        return self.metas.get(self.table, {})


@dataclass(frozen=True)
class Figure:
    """A figure of a step.

    ``name`` is its file name; ``table`` the table it draws (the gallery's data link and provenance; saved
    beside the figure under the figure's name when the two names are equal); ``{task}`` in both makes one figure
    per task (:attr:`Step.tasks`). The builder returns ``None`` where there is nothing to draw.
    """

    name: str
    builder: Callable[[Drawing], go.Figure | None]
    table: str
    caption: str
    key_number: Callable[[list[dict]], str] | None = None  # one line from the table's rows (gallery, summary)

    def for_task(self, task: str) -> Figure:
        return replace(self, name=self.name.replace(TASK, task), table=self.table.replace(TASK, task),
                       caption=self.caption.replace(TASK, task))

    def matches(self, name: str) -> bool:
        """Whether ``name`` is this figure's (for a per-task figure: of some task)."""
        if TASK not in self.name:
            return name == self.name
        return re.fullmatch(re.escape(self.name).replace(re.escape(TASK), ".+"), name) is not None


@dataclass(frozen=True)
class Outcome:
    """A step's numbers: the resolved config, tables, metas, and whether they were computed (not reused)."""

    config: Any
    tables: Tables
    metas: Metas
    computed: bool


@dataclass(frozen=True)
class Step:
    """One step (see the module docstring)."""

    name: str  # the name given to --only
    experiment: ModuleType  # a tvmech.experiments module (Config, run, Result)
    figures: tuple[Figure, ...]
    order: int  # the steps run in this order; a step reads only the tables of steps before it
    # how the numbers are computed: job by job, each job a task ("task") or a (task, layer) pair of the config's
    # ``layers`` ("task_layer"), saved as it finishes (resumable; shared by torchrun ranks); or in one call on one
    # rank ("whole")
    jobs: Literal["task", "task_layer", "whole"] = "task"
    reads: tuple[str, ...] = ()  # tables of earlier steps the figures or inputs read (from the result store)
    inputs: Callable[[Any, Session], dict] | None = None  # keyword arguments of experiment.run besides
    # ``vectors`` and ``progress`` (which every step whose run takes them gets)
    # (tasks, layer) of the LTVs a "whole" step trains (from its resolved config): under torchrun the ranks train
    # them in turn before one rank computes the step
    vectors: Callable[[Any], tuple[Sequence[str], int]] | None = None
    quick: Mapping[str, Any] = field(default_factory=dict)  # config fields of the quick preset (beside its common)
    seeds: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # preset -> the seeds it runs the step with
    cost: Mapping[str, str] = field(default_factory=dict)  # preset -> measured time (where and how in presets.py)
    # a step computed its own way (the synthetic one): ``compute(cfg, session, pretrained) -> Outcome`` on rank 0,
    # after ``prefetch(cfg, session)``'s jobs (store, name, work), which the ranks share
    compute: Callable[[Any, Session, bool], Outcome] | None = None
    prefetch: Callable[[Any, Session], list] | None = None
    tasks: Callable[[Any], Sequence[str]] | None = None  # the tasks of "{task}" figures (default: config.tasks)
    seeded: bool = True  # runs once per seed with --seeds

    @property
    def tables(self) -> tuple[str, ...]:
        """The tables of the experiment's ``Result`` (``TABLES``, or its one ``TABLE``)."""
        result = self.experiment.Result
        return tuple(getattr(result, "TABLES", ())) or (result.TABLE,)

    @property
    def config(self) -> type:
        return self.experiment.Config

    def job_list(self, cfg) -> list[tuple[str, dict]]:
        """The jobs of a step computed job by job: ``(name, fields)``, the name its numbers are cached under and
        the config fields that restrict ``cfg`` (resolved) to it: each task, or each (task, layer) pair named
        ``<task>_L<layer>`` (tasks outer: the order of the step's rows)."""
        if self.jobs == "task_layer":
            return [(f"{t}_L{l}", {"tasks": (t,), "layers": (l,)}) for t in cfg.tasks for l in cfg.layers]
        return [(t, {"tasks": (t,)}) for t in cfg.tasks]

    def job_key(self, settings: dict) -> dict:
        """The settings a job's cached numbers must match: the step's, less the fields that name the job."""
        named = ("tasks", "layers") if self.jobs == "task_layer" else ("tasks",)
        return {k: v for k, v in settings.items() if k not in named}

    def figures_for(self, cfg) -> list[tuple[Figure, str | None]]:
        """The step's figures for ``cfg`` with their task: a per-task figure once per task, others with ``None``."""
        tasks = list(self.tasks(cfg) if self.tasks else getattr(cfg, "tasks", ()))
        return [(f if t is None else f.for_task(t), t)
                for f in self.figures for t in (tasks if TASK in f.name else [None])]

    def draw(self, outcome: Outcome, model_name: str = "", reads: Mapping[str, list[dict]] | None = None
             ) -> list[tuple[Figure, go.Figure]]:
        """Every figure of the step whose table is among the outcome's and whose builder draws something.

        Args:
            outcome: the step's numbers.
            model_name: shown in the titles.
            reads: the saved tables of :attr:`reads` (those absent are left out).

        Returns:
            ``(figure, drawn)`` in the order of :attr:`figures`, each fitted to a 1200×800 window
            (:func:`tvmech.plots.style.readable`).
        """
        out = []
        for fig, task in self.figures_for(outcome.config):
            if fig.table in outcome.tables:
                drawing = Drawing(outcome.tables, outcome.metas, outcome.config, model_name, reads or {}, fig.table,
                                  task)
                drawn = fig.builder(drawing)
                if drawn is not None:
                    out.append((fig, readable(drawn)))
        return out


_STEPS: dict[str, Step] = {}


def register(step: Step) -> Step:
    """Add ``step`` to the registry (called by its module when imported)."""
    if step.name in _STEPS and _STEPS[step.name].experiment is not step.experiment:
        raise ValueError(f"two steps are named {step.name!r}")
    _STEPS[step.name] = step
    return step


def registered() -> dict[str, Step]:
    """The registered steps in their order."""
    return dict(sorted(_STEPS.items(), key=lambda kv: kv[1].order))


def owner(table: str) -> Step:
    """The step whose experiment writes ``table``."""
    for step in _STEPS.values():
        if table in step.tables:
            return step
    raise KeyError(f"no step writes the table {table!r}; steps: {sorted(_STEPS)}")


def figure(name: str) -> Figure | None:
    """The registered figure of file name ``name`` (a per-task figure with its task filled in), or ``None``."""
    for step in _STEPS.values():
        for f in step.figures:
            if f.matches(name):
                if TASK not in f.name:
                    return f
                task = re.fullmatch(re.escape(f.name).replace(re.escape(TASK), "(.+)"), name).group(1)
                return f.for_task(task)
    return None


def cached_rows(session: Session, table: str, job: str, key: dict) -> list[dict] | None:
    """The rows of ``table`` in one job's cached numbers of the step that writes it (saved with the settings
    ``key``), or ``None``."""
    step = owner(table)
    found = session.store.job(step.tables[0], job, key, step.tables)
    return None if found is None else found["tables"][table]


def draw(result, model_name: str = "", out=None) -> dict[str, go.Figure]:
    """The figures of an experiment's result, as ``python -m tvmech.pipeline`` draws them (nothing is written).

    Args:
        result: the ``Result`` of a :mod:`tvmech.experiments` module's ``run``.
        model_name: shown in the titles.
        out: a figures folder to read the tables of earlier steps from (e.g. the robustness figure's reference
            lines, from the layer sweep's table).

    Returns:
        Figure name -> figure.
    """
    import tvmech.pipeline.steps  # noqa: F401  (registers the steps)

    step = next((s for s in _STEPS.values() if isinstance(result, s.experiment.Result)), None)
    if step is None:
        raise TypeError(f"draw() takes the Result of one of {[s.experiment.__name__ for s in registered().values()]}; "
                        f"got {type(result).__qualname__}")
    tables = result.tables()
    store = ResultStore(out) if out is not None else None
    reads = {t: saved.rows for t in step.reads if store is not None and (saved := store.load(t)) is not None}
    outcome = Outcome(result.config, tables, {n: {} for n in tables}, computed=True)
    return {fig.name: drawn for fig, drawn in step.draw(outcome, model_name, reads)}


__all__ = ["draw", "Step", "Figure", "Drawing", "Outcome", "Session", "register", "registered", "owner", "figure",
           "cached_rows", "TASK"]
