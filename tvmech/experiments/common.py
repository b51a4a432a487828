"""What every experiment module shares: documented config fields, model-derived defaults, test splits.

Conventions of an experiment module (``tvmech.experiments.<name>``):

* ``Config``: a frozen :class:`ExperimentConfig`; each field is declared with :func:`option`, which keeps its
  help text (and, where the command line should use another flag name, that name) in the field's metadata.
  ``Config.DERIVED`` maps the layer fields whose ``None`` is derived from the loaded model to the rule
  ``n_layers -> value`` (:meth:`ExperimentConfig.resolve`), e.g. :func:`middle_layer`; a ``tasks`` field is
  checked against the built-in tasks.
* ``run(model, config, ...) -> Result``: computes; no plotting. :meth:`ExperimentConfig.for_model` resolves and
  checks the config, :func:`learned_vectors` fetches (or trains) the LTVs it names.
* ``Result``: a dataclass with ``.rows()`` (the rows of the experiment's main ``figures/*.json``) and
  ``.tables()`` (every JSON file the experiment writes: name -> rows); :class:`RecordsResult` when the
  experiment writes one table of records.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Generic, TypeVar

from tvmech.core.adapter import adapt, middle_layer  # noqa: F401  (middle_layer: the steps' DERIVED rule)
from tvmech.core.checks import as_ints
from tvmech.data.tasks import BUILTIN, Example, Task
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.task_vector import TaskVector
from tvmech.methods.learned import LTVConfig

ALL_TASKS: tuple[str, ...] = tuple(BUILTIN)


def option(default: Any, help: str, *, flag: str | None = None, choices: Sequence | None = None) -> Any:
    """A config field with its documentation.

    Args:
        default: the default value (a tuple for sequences, so that configs stay hashable).
        help: what the field means; the command line shows it as the flag's help.
        flag: the command-line flag, when it is not ``--<prefix>-<field name>``.
        choices: the valid values (of each item, for a tuple field).

    Returns:
        A :func:`dataclasses.field` carrying ``help``, ``flag`` and ``choices`` in its metadata.
    """
    return field(default=default, metadata={"help": help, "flag": flag, "choices": tuple(choices) if choices else None})


def flag_of(cls: type, f: dataclasses.Field) -> str:
    """The command-line flag of a config field: its ``option(flag=...)``, else ``--<PREFIX>-<field>``."""
    return f.metadata.get("flag") or f"--{cls.PREFIX}-{f.name.replace('_', '-')}"


def with_flags(cls: type, message: str, given: Mapping[str, str] | None = None) -> str:
    """A config error's message as the command line says it: each field it names as that field's flag.

    A config's validation names a bad field as ``"<label> <field>"`` (:attr:`ExperimentConfig.label`, e.g.
    ``"mechanism alphas (0.0,) is not valid: ..."``); the command line says the flag instead
    (``"--mech-alphas (0.0,) is not valid: ..."``).

    Args:
        cls: the config class whose validation raised.
        message: the error's message.
        given: field name -> the flag that set it, where that is not the field's own (``--tasks``).

    Returns:
        The message with flags in place of the fields it names (unchanged when it names none).
    """
    label = getattr(cls, "LABEL", None) or cls.PREFIX  # (the synthetic config is no ExperimentConfig)
    for f in sorted(fields(cls), key=lambda f: -len(f.name)):
        flag = (given or {}).get(f.name) or flag_of(cls, f)
        message = re.sub(rf"\b{re.escape(label)} {re.escape(f.name)}\b", flag, message)
    return message


def every_nth_layer(n_layers: int, step: int, start: int = 0) -> tuple[int, ...]:
    """``start, start + step, ...`` below ``n_layers``; at least layer ``start`` (clipped into range).

    Args:
        n_layers: the model's depth.
        step: the spacing (>= 1).
        start: the first layer.

    Returns:
        The layers as a tuple, e.g. ``(0, 3, ..., 27)`` for 30 layers and step 3, ``(0,)`` for 3 layers.
    """
    if step < 1:
        raise ValueError(f"layer step {step} is not valid: it must be >= 1")
    start = min(start, n_layers - 1)
    return tuple(range(start, n_layers, step))


def check_layers(layers: Sequence[int] | int, n_layers: int, what: str) -> tuple[int, ...]:
    """``layers`` as a tuple of Python ints, after checking that each is in ``0..n_layers-1``.

    Args:
        layers: one integer or a sequence of them (Python, numpy or 0-d tensor integers; not ``bool``).
        n_layers: the model's depth.
        what: how the message names the layers (e.g. ``"geometry layer"``).

    Returns:
        The layers, in order.

    Raises:
        ArgumentTypeError: a layer that is not an integer (e.g. ``1.5`` or ``True``).
        ValueError: naming ``what``, the bad layer and the valid range.
    """
    layers = as_ints(layers, what)
    if not layers:
        raise ValueError(f"{what}: no layers given; valid layers are 0..{n_layers - 1}")
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ValueError(f"{what}: layer(s) {bad} out of range for a {n_layers}-layer model: valid layers are "
                         f"0..{n_layers - 1}")
    return layers


def check_tasks(tasks: Sequence[str], what: str) -> tuple[str, ...]:
    """``tasks`` as a tuple after checking that each names a built-in task."""
    tasks = tuple(tasks)
    bad = [t for t in tasks if t not in BUILTIN]
    if bad or not tasks:
        raise ValueError(f"{what}: unknown task(s) {bad or '(none given)'}; valid: {list(BUILTIN)}")
    return tasks


def heldout_queries(task: Task, seed: int, n_test: int | None) -> list[Example]:
    """The first ``n_test`` test queries of the task's seeded split (all of them for ``None`` or 0)."""
    test = task.splits(seed).test
    return list(test[:n_test] if n_test else test)


def _apply(rule: Callable, n_layers: int, config) -> Any:
    """A derivation rule ``n_layers -> value``, or ``(n_layers, config) -> value`` when it takes two."""
    return rule(n_layers, config) if rule.__code__.co_argcount == 2 else rule(n_layers)


def evenly_spaced_layers(n_layers: int, count: int) -> tuple[int, ...]:
    """``count`` layers spread over the model's depth, away from both ends: the centres of ``count`` equal
    slices (e.g. 5, 15, 25 for 3 of 30 layers; 1, 4, 7 of 9)."""
    if count < 1:
        raise ValueError(f"layer count {count} is not valid: it must be >= 1")
    return tuple(dict.fromkeys(min(n_layers - 1, (2 * i + 1) * n_layers // (2 * count)) for i in range(count)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


C = TypeVar("C", bound="ExperimentConfig")


@dataclass(frozen=True)
class ExperimentConfig:
    """Base of the experiment configs: resolution of model-derived fields and the saved settings."""

    # command-line prefix of the fields' flags (``--<PREFIX>-<field>``); set by each subclass
    PREFIX: ClassVar[str] = ""
    # how error messages name the experiment ("<LABEL> tasks", "<LABEL> layer"); PREFIX when empty. A bad value
    # is named "<label> <field>" (never a flag): the command line maps that to the flag (:func:`with_flags`)
    LABEL: ClassVar[str] = ""
    # layer fields whose ``None`` means "derived from the loaded model": field -> rule ``n_layers -> value``
    DERIVED: ClassVar[dict[str, Callable[[int], Any]]] = {}
    # fields left out of :meth:`settings` while they are ``None`` (so older saved settings stay valid)
    OPTIONAL_SETTINGS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        names = {f.name for f in fields(self)}
        if "tasks" in names:
            check_tasks(self.tasks, f"{self.label} tasks")
        for name in names & {"ltv_steps", "steps"}:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.label} {name} {value!r} is not valid: give a whole number of steps >= 1")
        if "n_test" in names and self.n_test is not None:
            if isinstance(self.n_test, bool) or not isinstance(self.n_test, int) or self.n_test < 1:
                raise ValueError(f"{self.label} n_test {self.n_test!r} is not valid: give a number of test queries "
                                 ">= 1, or None for the whole test split")
        for name in self.DERIVED:
            value = getattr(self, name)
            bad = [v for v in (value if isinstance(value, Sequence) else (value,)) if v is not None and v < 0]
            if bad:
                raise ValueError(f"{self.label} {name}: layer(s) {bad} are not valid: layers count from 0")

    @property
    def label(self) -> str:
        """The experiment's name in error messages."""
        return self.LABEL or self.PREFIX

    def resolve(self: C, n_layers: int) -> C:
        """A copy with every derived field that is ``None`` filled in for a model of ``n_layers`` layers.

        Args:
            n_layers: the loaded model's depth.

        Returns:
            The resolved config (itself when nothing is left to derive).
        """
        todo = {n: _apply(rule, n_layers, self) for n, rule in self.DERIVED.items() if getattr(self, n) is None}
        return replace(self, **todo) if todo else self

    def for_model(self: C, model) -> C:
        """:meth:`resolve` for ``model``'s depth, then a check that every derived layer field is in range.

        Args:
            model: the loaded model the experiment runs on.

        Returns:
            The resolved config.

        Raises:
            ValueError: a layer out of range, naming the field (e.g. ``geometry layer``).
        """
        n_layers = adapt(model).n_layers
        config = self.resolve(n_layers)
        for name in self.DERIVED:
            value = getattr(config, name)
            check_layers(value if isinstance(value, Sequence) else (value,), n_layers, f"{self.label} {name}")
        return config

    @property
    def resolved(self) -> bool:
        """Whether no derived field is still ``None``."""
        return all(getattr(self, n) is not None for n in self.DERIVED)

    def adopt(self, saved: dict) -> ExperimentConfig | None:
        """This config with its unresolved derived fields taken from ``saved`` settings (of the same model,
        which the caller checks); ``None`` when ``saved`` lacks one of them."""
        todo = {}
        for n in self.DERIVED:
            if getattr(self, n) is None:
                if n not in saved:
                    return None
                v = saved[n]
                todo[n] = tuple(v) if isinstance(v, list) else v
        return replace(self, **todo) if todo else self

    def settings(self) -> dict:
        """The JSON settings saved with the experiment's numbers (every field; a resolved config)."""
        if not self.resolved:
            raise ValueError(f"{type(self).__name__}.settings() needs a resolved config: call resolve(n_layers)")
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in self.OPTIONAL_SETTINGS and v is None:
                continue
            out[f.name] = _jsonable(v)
        return out


def config_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config class, in declaration order."""
    return list(fields(cls))


@dataclass
class RecordsResult(Generic[C]):
    """The result of an experiment that writes one table: its resolved config and its records.

    A subclass names the table (``figures/<TABLE>.json``) and documents the records' keys.
    """

    TABLE: ClassVar[str] = ""

    config: C
    records: list[dict]

    def rows(self) -> list[dict]:
        """The records (a new list)."""
        return list(self.records)

    def tables(self) -> dict[str, list[dict]]:
        """``{TABLE: rows}``."""
        return {self.TABLE: self.rows()}


def learned_vectors(model, config: ExperimentConfig, layer: int, vectors: VectorStore | None = None,
                    tasks: Sequence[str] | None = None, *, progress: bool = True) -> dict[str, TaskVector]:
    """The LTVs of ``tasks`` (default ``config.tasks``) at ``layer``, trained with ``config.ltv_steps`` and
    ``config.seed`` unless ``vectors`` holds them.

    Args:
        model: the loaded model.
        config: a config with ``ltv_steps`` and ``seed`` fields.
        layer: the injection layer.
        vectors: where the LTVs are kept (in memory when ``None``).
        tasks: built-in task names.
        progress: show the training bar of each vector trained.

    Returns:
        Task name -> its learned task vector.
    """
    names = config.tasks if tasks is None else tasks
    return (vectors or VectorStore()).get(model, names, layer, LTVConfig(steps=config.ltv_steps, seed=config.seed),
                                          progress=progress)
