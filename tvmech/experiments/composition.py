"""Composition: two tasks' LTVs (and their sum) on a task that needs both (``figures/composition.json``).

A composed task applies one built-in task after another (:data:`COMPOSITIONS`): a singular noun to its plural,
capitalized (cat → Cats, ``singular_plural`` then ``capitalize``; the default), a verb to its past tense,
capitalized (walk → Walked), or an English masculine word to its French feminine counterpart (king → reine:
``english_french`` and ``masculine_feminine``, the first pair, on which this 135M model has no ICL headroom).
:func:`composition_experiment` compares, on the composed task: zero-shot, each part's LTV alone, their sum
``w_1 θ_1 + w_2 θ_2`` (:func:`tvmech.analysis.vector_geometry.add_task_vectors`) and k-shot ICL. So that a
table can show whether there is anything to compose, it also reports each part task's own zero-shot, k-shot ICL and LTV
accuracy (``role = "part"``): a vector sum can only be judged where in-context learning does the composed task
(ICL well above zero-shot). Every accuracy under each scoring of :data:`SCORINGS` (exact match first by default:
first-token scoring cannot tell *Cat* from *Cats*), all from the same forward passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from tvmech.analysis.evaluation import evaluate_multi
from tvmech.analysis.vector_geometry import add_task_vectors
from tvmech.data.tasks import Example, Task, Template, builtin_task, parse_records
from tvmech.experiments.common import ExperimentConfig, RecordsResult, learned_vectors, middle_layer, option
from tvmech.experiments.vectors import VectorStore
from tvmech.interventions.task_vector import TaskVector

SCORINGS = ("exact_match", "first_token")
COMPOSITION_FRACTIONS = (0.3, 0.1, 0.6)


@dataclass(frozen=True)
class Composition:
    """A composed task: its data file (``tvmech/data/builtin/composition/<name>.json``) and the built-in tasks
    it applies, in order."""

    name: str
    parts: tuple[str, str]
    description: str


COMPOSITIONS: dict[str, Composition] = {c.name: c for c in (
    Composition("singular_plural_capitalize", ("singular_plural", "capitalize"),
                "English singular noun -> its plural, capitalized (cat -> Cats)"),
    Composition("present_past_capitalize", ("present_past", "capitalize"),
                "English verb -> its past tense, capitalized (walk -> Walked)"),
    Composition("english_french_feminine", ("english_french", "masculine_feminine"),
                "English masculine word -> French feminine counterpart (king -> reine)"),
)}
DEFAULT = "singular_plural_capitalize"


def check_composition(name: str) -> Composition:
    """The composition named ``name``; a clear error naming the valid ones otherwise."""
    if name not in COMPOSITIONS:
        raise ValueError(f"composition {name!r} is not valid; choose one of {list(COMPOSITIONS)}")
    return COMPOSITIONS[name]


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the composition experiment."""

    PREFIX = "composition"
    DERIVED = {"layer": middle_layer}
    OPTIONAL_SETTINGS = ("n_test",)

    task: str = option(DEFAULT, "the composed task (its two parts' LTVs are trained)", choices=tuple(COMPOSITIONS))
    layer: int | None = option(None, "layer of the two LTVs (None: the model's middle layer n_layers // 2)",
                               flag="--geometry-layer")
    ltv_steps: int = option(150, "training steps per learned task vector")
    k: int = option(5, "demonstrations of the ICL reference")
    n_test: int | None = option(None, "cap on test queries of the composed task and of each part (None: all)")
    seed: int = option(0, "seed of the splits and the LTV training")
    # first-token scoring cannot tell 'Cat' from 'Cats' or French 'mar'(quis) from 'mar'(quise)
    scoring: str = option("exact_match", "the primary scoring (the other of exact_match, first_token is reported "
                                         "too)", choices=SCORINGS)

    def __post_init__(self):
        super().__post_init__()
        check_composition(self.task)
        if self.scoring not in SCORINGS:
            raise ValueError(f"composition scoring {self.scoring!r} is not valid; valid: {list(SCORINGS)}")

    @property
    def parts(self) -> tuple[str, str]:
        """The built-in tasks whose LTVs are composed."""
        return COMPOSITIONS[self.task].parts


class Result(RecordsResult[Config]):
    """One record per (task, method, scoring): ``task, role, method, accuracy, n, k, scoring`` (``role``:
    ``composed`` or ``part``)."""

    TABLE = "composition"


def composition_task(name: str = DEFAULT) -> Task:
    """A composed task of :data:`COMPOSITIONS`, with the default template.

    Args:
        name: its name (default: singular noun -> plural, capitalized).

    Returns:
        The task, written for tvmech (``tvmech/data/builtin/composition/<name>.json``).
    """
    comp = check_composition(name)
    data = resources.files("tvmech") / "data" / "builtin" / "composition" / f"{name}.json"
    examples = parse_records(json.loads(data.read_text(encoding="utf-8")), f"composition task {name}")
    return Task(name=name, examples=examples, template=Template(), description=comp.description)


def _scorings(scoring: str | None) -> tuple[str, ...]:
    first = scoring or SCORINGS[0]
    return (first, *(s for s in SCORINGS if s != first))


def composition_experiment(model, vec_a: TaskVector, vec_b: TaskVector, task: Task | None = None, *,
                           parts: Sequence[str] | None = None, part_tasks: Sequence[Task] | None = None,
                           n_test: int | None = None, k: int = 5, seed: int = 0,
                           fractions: tuple[float, float, float] = COMPOSITION_FRACTIONS,
                           weights: tuple[float, float] = (1.0, 1.0), demos: Sequence[Example] | None = None,
                           scoring: str | None = None, batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Accuracy on the composed task's test split for five methods, and each part task's references.

    On the composed task (``role = "composed"``): ``zero_shot`` (no vector), ``<part> LTV`` for each part (θ_1,
    θ_2 alone), ``sum of both`` (:func:`add_task_vectors`, ``w_1 θ_1 + w_2 θ_2``) and ``icl_{k}shot`` (``k``
    demonstrations from ``demos``, by default the task's own train split). ``task`` defaults to
    :func:`composition_task`; it is split with ``fractions`` and ``seed``, and the first ``n_test`` test items
    are used. On each part task (``role = "part"``, its own seeded split, first ``n_test`` test queries):
    ``zero_shot``, ``icl_{k}shot`` and ``<part> LTV``.

    Args:
        model: a loaded model.
        vec_a: the first part's vector θ_1.
        vec_b: the second part's vector θ_2 (same sites as θ_1).
        task: the composed task (default :func:`composition_task`).
        parts: the two parts' names (default: the composition's, when ``task`` is one of :data:`COMPOSITIONS`).
        part_tasks: the part tasks of the references (default: the built-in tasks ``parts`` names; ``()``: none).
        n_test: cap on test queries (``None``: all).
        k: demonstrations of the ICL runs.
        seed: seed of the splits and the demonstrations.
        fractions: train / val / test fractions of the composed task's split.
        weights: ``(w_1, w_2)``.
        demos: where the composed task's demonstrations come from.
        scoring: the primary scoring (default exact match); the other of :data:`SCORINGS` is reported too.
        batch_size: prompts per forward pass.
        progress: show progress bars.

    Returns:
        ``[{"task", "role", "method", "accuracy", "n", "k", "scoring"}]``, composed task first.
    """
    task = composition_task() if task is None else task
    if parts is None:
        parts = COMPOSITIONS[task.name].parts if task.name in COMPOSITIONS else ("part 1", "part 2")
    if len(parts) != 2:
        raise ValueError(f"a composition has two parts, got {list(parts)}")
    if part_tasks is None:
        part_tasks = [builtin_task(p) for p in parts]
    scorings = _scorings(scoring)
    sp = task.splits(seed, fractions)
    test = sp.test[:n_test]
    if not test:
        raise ValueError(f"task {task.name!r}: the test split is empty")
    demos = sp.train if demos is None else demos
    vecs = dict(zip(parts, (vec_a, vec_b)))
    # (task, role, method, queries, k, demonstrations, vector)
    jobs: list[tuple[Task, str, str, Sequence[Example], int, Sequence[Example], TaskVector | None]] = [
        (task, "composed", "zero_shot", test, 0, (), None),
        *((task, "composed", f"{p} LTV", test, 0, (), vecs[p]) for p in parts),
        (task, "composed", "sum of both", test, 0, (), add_task_vectors(vec_a, vec_b, weights)),
        (task, "composed", f"icl_{k}shot", test, k, demos, None)]
    for part, sub in zip(parts, part_tasks):
        psp = sub.splits(seed)
        ptest = psp.test[:n_test]
        jobs += [(sub, "part", "zero_shot", ptest, 0, (), None),
                 (sub, "part", f"icl_{k}shot", ptest, k, psp.train, None),
                 (sub, "part", f"{part} LTV", ptest, 0, (), vecs[part])]
    rows = []
    for t, role, method, queries, shots, pool, vec in jobs:
        res = evaluate_multi(model, t, queries, shots, pool, scorings=scorings, seed=seed, batch_size=batch_size,
                             intervention=vec, progress=progress)
        rows += [{"task": t.name, "role": role, "method": method, "accuracy": r.accuracy, "n": r.n, "k": shots,
                  "scoring": s} for s, r in res.items()]
    return rows


def headroom(rows: Sequence[dict], scoring: str | None = None, min_gain: float = 0.2) -> dict:
    """Whether in-context learning does the composed task (its null: zero-shot), beside each part's own numbers.

    Args:
        rows: ``figures/composition.json`` rows (those saved before issue 24 have no ``role``: all composed).
        scoring: the scoring to read (default: the composed task's first).
        min_gain: how far k-shot ICL must be above zero-shot on the composed task to count as headroom.

    Returns:
        ``{"scoring", "composed": {"task", "zero_shot", "icl", "gain", "vectors": {method: accuracy}},
        "parts": {task: {"zero_shot", "icl", "ltv", "gain"}}, "icl_headroom": bool | None}`` (``gain``: ICL
        minus zero-shot). Only with ICL headroom does a vector sum that stays at zero-shot say something about
        vector arithmetic rather than about the model.
    """
    composed = [r for r in rows if r.get("role", "composed") == "composed"]
    scoring = scoring or next((r.get("scoring") for r in composed), None)
    pick = [r for r in rows if r.get("scoring") == scoring]

    def acc(role: str, task, kind: str) -> float | None:
        return next((r["accuracy"] for r in pick if r.get("role", "composed") == role and r["task"] == task and (
            r["method"] == "zero_shot" if kind == "zero" else r["method"].startswith("icl_") if kind == "icl"
            else r["method"].endswith(" LTV"))), None)

    def gain(zero, icl):
        return None if zero is None or icl is None else icl - zero

    name = next((r["task"] for r in composed), None)
    zs, icl = acc("composed", name, "zero"), acc("composed", name, "icl")
    vectors = {r["method"]: r["accuracy"] for r in pick if r.get("role", "composed") == "composed"
               and (r["method"].endswith(" LTV") or r["method"] == "sum of both")}
    parts = {t: {"zero_shot": acc("part", t, "zero"), "icl": acc("part", t, "icl"), "ltv": acc("part", t, "ltv")}
             for t in dict.fromkeys(r["task"] for r in pick if r.get("role") == "part")}
    for p in parts.values():
        p["gain"] = gain(p["zero_shot"], p["icl"])
    room = gain(zs, icl)
    return {"scoring": scoring, "composed": {"task": name, "zero_shot": zs, "icl": icl, "gain": room,
                                             "vectors": vectors},
            "parts": parts, "icl_headroom": None if room is None else room >= min_gain}


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None, progress: bool = True) -> Result:
    """Zero-shot, each LTV, their sum and k-shot ICL on the composed task, and each part's references.

    Args:
        model: a loaded model.
        config: the settings.
        vectors: where the two LTVs are kept (in memory when ``None``).
        progress: show progress bars (also off under ``TQDM_DISABLE=1``).

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    parts = config.parts
    vecs = learned_vectors(model, config, config.layer, vectors, parts, progress=progress)
    rows = composition_experiment(model, vecs[parts[0]], vecs[parts[1]], composition_task(config.task), parts=parts,
                                  n_test=config.n_test, k=config.k, seed=config.seed, scoring=config.scoring,
                                  progress=progress)
    return Result(config, rows)
