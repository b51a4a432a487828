"""Tasks: (input, output) pairs with a prompt template, an optional closed label set and a scoring mode.

Built-in tasks ship as package data (``tvmech/data/builtin/*.json``, written for this project; see the
README there). Any JSON list or JSONL file of ``{"input": ..., "output": ...}`` records loads with
:func:`~tvmech.data.sources.load_task`, as do a few Hugging Face datasets when the hub is reachable
(``"hf:sst2"``, :mod:`tvmech.data.hf`).
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from tvmech.core.checks import as_items

ScoringMode = Literal["first_token", "label_set", "exact_match"]
SCORING_MODES: tuple[str, ...] = ("first_token", "label_set", "exact_match")


@dataclass(frozen=True)
class Example:
    """One (input, output) pair of a task, e.g. ``Example("France", "Paris")``."""

    input: str
    """The task input, put in the prompt through ``Template.query`` (e.g. ``"France"``)."""
    output: str
    """The expected output, the continuation ``Template.answer`` formats (e.g. ``"Paris"``)."""


HOW_EXAMPLES = ("build them with Example(input, output) (tvmech.Example), or take them from a task: task.examples, "
                "task.splits(seed).train / .test (tvmech.load_task reads a task from a file)")


def as_examples(value: Any, what: str = "examples") -> Sequence[Example]:
    """``value`` checked to be a sequence of :class:`Example` (see :func:`~tvmech.core.checks.as_items`).

    Args:
        value: the candidate.
        what: the argument's name in the message (``"queries"``, ``"demos"``, ``"train"``).

    Returns:
        The examples (``value`` itself when it is a list or a tuple).

    Raises:
        ArgumentTypeError: a string, a single example, or an item that is not an :class:`Example`; the message
            says how to build examples.
    """
    return as_items(value, Example, what, HOW_EXAMPLES)


@dataclass(frozen=True)
class Template:
    """How examples become text: ``instruction + sep.join(demos + [query])``.

    A demonstration is ``query.format(input=x) + answer.format(output=y)``; the prompt ends with the
    query of the test input, and the label is the continuation ``answer.format(output=y)``.
    """

    query: str = "Q: {input}\nA:"
    """How an input is asked, with an ``{input}`` placeholder."""
    answer: str = " {output}"
    """How an output follows its query, with an ``{output}`` placeholder (its leading space included)."""
    separator: str = "\n\n"
    """What separates demonstrations and the final query."""
    instruction: str = ""
    """Text put before everything else (empty by default)."""

    def demo(self, ex: Example) -> str:
        """One demonstration: the query of ``ex.input`` followed by the answer ``ex.output``."""
        return self.query.format(input=ex.input) + self.answer.format(output=ex.output)

    def prompt(self, demos: list[Example], query: str) -> str:
        """The prompt text: ``instruction``, the demonstrations and the query of ``query``, joined by
        ``separator``."""
        parts = [self.demo(d) for d in demos] + [self.query.format(input=query)]
        return self.instruction + self.separator.join(parts)

    def label(self, output: str) -> str:
        """The continuation a prompt asks for: ``answer`` formatted with ``output``."""
        return self.answer.format(output=output)


@dataclass(frozen=True)
class Splits:
    """A task's train / validation / test examples (:meth:`Task.splits`); unpacks as
    ``train, val, test = task.splits(seed)``."""

    train: tuple[Example, ...]
    """Examples to train vectors on and to draw demonstrations from."""
    val: tuple[Example, ...]
    """Examples for early stopping (validation loss during training)."""
    test: tuple[Example, ...]
    """Held-out examples every accuracy is measured on."""

    def __iter__(self) -> Iterator[tuple[Example, ...]]:
        """``train``, ``val``, ``test``, in that order."""
        return iter((self.train, self.val, self.test))


@dataclass(frozen=True)
class Task:
    """A named list of examples with its template, optional closed label set and scoring mode.

    Exact duplicate examples (same input and output) are dropped on construction, with one
    :class:`UserWarning`; an input listed with several outputs is kept, and :meth:`splits` keeps all
    of its examples in one split.
    """

    name: str
    """The task's name (a built-in name, a file's stem)."""
    examples: tuple[Example, ...]
    """Its examples, exact duplicates dropped."""
    template: Template = field(default_factory=Template)
    """How its examples become prompt text."""
    labels: tuple[str, ...] | None = None
    """The closed label set of a classification task (every output is one of them), or ``None``."""
    scoring: ScoringMode = "first_token"
    """How accuracy is scored by default: ``"first_token"`` (the label's first token is the argmax over the
    vocabulary), ``"label_set"`` (the best-scoring label among ``labels``) or ``"exact_match"`` (greedy
    continuation equals the label)."""
    description: str = ""
    """One line on what the task maps to what."""

    def __post_init__(self) -> None:
        as_examples(self.examples, f"task {self.name!r}: examples")
        if not self.examples:
            raise ValueError(f"task {self.name!r} has no examples")
        object.__setattr__(self, "examples", drop_duplicates(tuple(self.examples), f"task {self.name!r}"))
        if self.scoring not in SCORING_MODES:
            raise ValueError(f"scoring {self.scoring!r} is not valid; choose one of {SCORING_MODES}")
        if self.scoring == "label_set" and not self.labels:
            raise ValueError(f"task {self.name!r}: scoring 'label_set' needs a closed label set")
        if self.labels:
            stray = sorted({e.output for e in self.examples} - set(self.labels))
            if stray:
                raise ValueError(f"task {self.name!r}: outputs {stray[:5]} are not in its label set {self.labels}")

    def splits(self, seed: int = 0, fractions: tuple[float, float, float] = (0.5, 0.15, 0.35)) -> Splits:
        """Seeded shuffle, then train / validation / test by ``fractions``; the splits share no input.

        Examples are grouped by input, so the examples of an input listed with several outputs all
        land in one split, in file order; the groups are shuffled and cut by ``fractions`` of the
        number of distinct inputs. With distinct inputs (every
        built-in task) this is a plain seeded shuffle of the examples.

        Args:
            seed: seed of the shuffle.
            fractions: train / validation / test shares of the distinct inputs.

        Returns:
            The three splits, each in shuffled order. A split left empty (too few examples) gives one
            :class:`UserWarning` naming the counts; what needs that split refuses it (training without a
            train split, evaluation without a test split), and training without a validation split reports
            ``best_val_loss: inf``.
        """
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
        groups: dict[str, list[Example]] = {}
        for e in self.examples:
            groups.setdefault(e.input, []).append(e)
        order = list(groups.values())
        random.Random(seed).shuffle(order)  # the permutation depends only on len(order)
        n_train = round(fractions[0] * len(order))
        n_val = round(fractions[1] * len(order))

        def flat(part: list[list[Example]]) -> tuple[Example, ...]:
            return tuple(e for g in part for e in g)

        out = Splits(flat(order[:n_train]), flat(order[n_train : n_train + n_val]), flat(order[n_train + n_val :]))
        empty = [name for name, part, f in zip(("train", "val", "test"), out, fractions) if not part and f > 0]
        if empty:
            counts = f"train {len(out.train)}, val {len(out.val)}, test {len(out.test)}"
            warnings.warn(f"task {self.name!r}: its {len(order)} distinct inputs split into {counts} (fractions "
                          f"{tuple(fractions)}): {' and '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty"
                          f"{_too_few(fractions)}", UserWarning, stacklevel=2)
        return out

    def with_template(self, **changes: str) -> Task:
        """The task with its template's fields replaced (``query``, ``answer``, ``separator``, ``instruction``)."""
        return replace(self, template=replace(self.template, **changes))


MAX_LABELS = 10  # a file with at most this many distinct outputs, each used twice on average, looks like labels


def label_set_of(examples: Sequence[Example]) -> tuple[str, ...] | None:
    """The distinct outputs, in order of first use, when they look like a closed label set: from 2 to
    :data:`MAX_LABELS` of them, with at least twice as many examples (so outputs repeat); else ``None``.

    Args:
        examples: a task's examples.

    Returns:
        The labels, or ``None`` (e.g. a word task, whose outputs are mostly distinct).
    """
    labels = tuple(dict.fromkeys(e.output for e in examples))
    return labels if 2 <= len(labels) <= MAX_LABELS and len(examples) >= 2 * len(labels) else None


def suggest_label_set(task: Task, source: str) -> None:
    """One :class:`UserWarning` when a first-token task's outputs look like a closed label set
    (:func:`label_set_of`), suggesting label-set scoring; nothing otherwise.

    Args:
        task: the task as loaded.
        source: how the user named it (shown in the suggested call).
    """
    labels = label_set_of(task.examples) if task.scoring == "first_token" and not task.labels else None
    if labels:
        warnings.warn(f"task {task.name!r}: its {len(task.examples)} examples have only {len(labels)} distinct "
                      f"outputs {list(labels)}; if these are class labels, score by label set: "
                      f"load_task({source!r}, scoring='label_set') (first-token scoring, the default, compares "
                      "first tokens over the whole vocabulary, so zero-shot accuracy can read 0); pass "
                      "scoring='first_token' to keep it without this warning", UserWarning, stacklevel=3)


def train_val(task: Task, train: Sequence[Example] | None, val: Sequence[Example] | None, seed: int
              ) -> tuple[Sequence[Example], Sequence[Example]]:
    """The examples a training run uses: ``train`` and ``val`` as given, else the task's splits with ``seed``.

    Args:
        task: the task.
        train, val: the caller's examples (``None``: the split's).
        seed: the seed of :meth:`Task.splits`.

    Returns:
        ``(train, val)``; ``val`` may be empty (then no early stopping: ``best_val_loss`` is ``inf``).

    Raises:
        ArgumentTypeError: ``train`` or ``val`` is not a sequence of :class:`Example`.
        ValueError: no training examples (the message names the task's number of examples).
    """
    sp = task.splits(seed) if train is None or val is None else None
    train = as_examples(sp.train if train is None else train, "train")
    val = as_examples(sp.val if val is None else val, "val")
    if not train:
        n = len(task.examples)
        raise ValueError(f"task {task.name!r}: the training split is empty (the task has {n} example{'s' * (n != 1)}); "
                         "pass train=[Example(...), ...] or use a task with more examples")
    return train, val


def _too_few(fractions: Sequence[float]) -> str:
    """``"; N distinct inputs give non-empty splits"`` for the smallest such N (up to 1000), else ``""``."""
    for n in range(1, 1001):
        sizes = (round(fractions[0] * n), round(fractions[1] * n))
        sizes += (n - sum(sizes),)
        if all(size > 0 for size, f in zip(sizes, fractions) if f > 0):
            return f"; at least {n} distinct inputs are needed for every split to hold one"
    return ""


_CLS = dict(separator="\n\n")
BUILTIN: dict[str, dict] = {
    "country_capital": dict(description="country -> capital city"),
    "capitalize": dict(description="word -> Word"),
    "antonym": dict(description="word -> its antonym"),
    "english_french": dict(description="English word -> French word"),
    "masculine_feminine": dict(description="masculine word -> feminine counterpart (king -> queen)"),
    "present_past": dict(description="verb -> simple past"),
    "singular_plural": dict(description="singular noun -> plural"),
    "sentiment": dict(
        description="movie-review snippet -> positive / negative (SST-2 style)",
        template=Template("Review: {input}\nSentiment:", **_CLS),
        labels=("positive", "negative"), scoring="label_set",
    ),
    "question_type": dict(
        description="question -> coarse answer type (the 6 TREC classes)",
        template=Template("Question: {input}\nAnswer type:", **_CLS),
        labels=("abbreviation", "description", "entity", "human", "location", "number"), scoring="label_set",
    ),
    "nli": dict(
        description="premise and hypothesis -> entailment / neutral / contradiction",
        template=Template("{input}\nRelation:", **_CLS),
        labels=("entailment", "neutral", "contradiction"), scoring="label_set",
    ),
}
WORD_TASKS = tuple(k for k, v in BUILTIN.items() if "labels" not in v)
CLASSIFICATION_TASKS = tuple(k for k, v in BUILTIN.items() if "labels" in v)


def drop_duplicates(examples: tuple[Example, ...], origin: str) -> tuple[Example, ...]:
    """Drop examples equal (same input and output) to an earlier one, with one warning.

    Args:
        examples: the examples, in order.
        origin: names the source in the warning (a file, a task).

    Returns:
        ``examples`` without the repeats, first occurrences kept in order (``examples`` itself when
        nothing repeats).
    """
    kept = tuple(dict.fromkeys(examples))
    if len(kept) < len(examples):
        n = len(examples) - len(kept)
        warnings.warn(f"{origin}: dropped {n} duplicate example{'s' * (n != 1)} (same input and output as an "
                      f"earlier one); {len(kept)} remain", UserWarning, stacklevel=3)
        return kept
    return examples


_VALID = ("a string (for 'output' also a non-empty list of strings, whose first is used); "
          "with coerce=True also a number or a boolean")


def _text(value: object, field_name: str, where: str, coerce: bool) -> str:
    """One ``input``/``output`` value as a string, or a ValueError naming the record, field and value."""
    if field_name == "output" and isinstance(value, list):
        if not value:
            raise ValueError(f"{where}: field 'output' is an empty list; expected {_VALID}")
        value = value[0]  # some public files list several accepted outputs; take the first
        field_name = "output[0]"
    if isinstance(value, str):
        return value
    if coerce and isinstance(value, (bool, int, float)):
        return str(value)
    hint = "" if coerce or not isinstance(value, (bool, int, float)) else "; pass coerce=True to convert it with str()"
    raise ValueError(f"{where}: field {field_name!r} is {_show(value)} ({type(value).__name__}); "
                     f"expected {_VALID}{hint}")


def _show(value: object) -> str:
    """A value as JSON (as it stands in the file), cut to 80 characters; ``repr`` when not JSON."""
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


_JSON_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def parse_records(records: object, origin: str, *, coerce: bool = False,
                  lines: Sequence[int] | None = None) -> tuple[Example, ...]:
    """Examples from decoded ``{"input": ..., "output": ...}`` records.

    ``input`` must be a string; ``output`` a string or a non-empty list of strings (several accepted
    outputs: the first is used). Exact duplicates are dropped with one :class:`UserWarning`.

    Args:
        records: the decoded JSON, a non-empty list of records (extra keys are ignored).
        origin: names the source in error messages (a file path, a task).
        coerce: also accept numbers and booleans, converted with ``str()`` (``1`` -> ``"1"``,
            ``1.0`` -> ``"1.0"``, ``true`` -> ``"True"``); ``null``, objects, lists as an input, and
            lists within an output list are refused all the same.
        lines: the file line of each record (JSONL), added to error messages.

    Errors name a record by its 1-based number in the file (``record 8``), plus its line for JSONL, and a
    missing key by name (``has no 'output' key``).

    Returns:
        The examples, in file order, without exact duplicates.
    """
    if not isinstance(records, list) or not records:
        raise ValueError(f"{origin}: expected a non-empty list of {{'input': ..., 'output': ...}} records")
    out = []
    for i, r in enumerate(records):
        where = f"{origin}: record {i + 1}" + (f" (line {lines[i]})" if lines is not None else "")
        if not isinstance(r, dict):
            raise ValueError(f"{where} is a JSON {_JSON_TYPES.get(type(r), type(r).__name__)} ({_show(r)}), "
                             "not an object with 'input' and 'output' keys")
        missing = [k for k in ("input", "output") if k not in r]
        if missing:
            keys = ", ".join(map(repr, r)) or "none"
            raise ValueError(f"{where} has no {' or '.join(map(repr, missing))} key (its keys: {keys}): {_show(r)}")
        x, y = _text(r["input"], "input", where, coerce), _text(r["output"], "output", where, coerce)
        if not x.strip() or not y.strip():
            raise ValueError(f"{where} has an empty input or output: {str(r)[:80]}")
        out.append(Example(x, y))
    return drop_duplicates(tuple(out), origin)


def read_records(path: str | Path, *, coerce: bool = False) -> tuple[Example, ...]:
    """Read a JSON list (any suffix but ``.jsonl``) or JSONL file of ``{"input", "output"}`` records.

    The file is UTF-8, with or without a byte-order mark, with ``\\n`` or ``\\r\\n`` line ends (what
    spreadsheet exports and Windows editors write).

    Args:
        path: the file; ``.jsonl`` is read as one record per non-blank line.
        coerce: convert number and boolean inputs/outputs with ``str()`` (see :func:`parse_records`);
            without it they are an error.

    Returns:
        The examples, in file order, without exact duplicates (dropped with one warning).

    Raises:
        ValueError: the file is empty or not valid JSON/JSONL (the message names the file, line and
            column), or a record is malformed (the message names the record and field).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark (spreadsheet exports) is skipped
    if not text.strip():
        raise ValueError(f"{path}: the task file is empty")
    lines = None
    if path.suffix == ".jsonl":
        records, lines = [], []
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {n}, column {e.colno}: invalid JSON ({e.msg}); "
                                     "a .jsonl file holds one JSON record per line") from e
                lines.append(n)
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno}, column {e.colno}: invalid JSON ({e.msg}); expected a "
                             "JSON list of records (name the file .jsonl for one record per line)") from e
    return parse_records(records, str(path), coerce=coerce, lines=lines)


def builtin_task(name: str) -> Task:
    if name not in BUILTIN:
        raise ValueError(f"unknown task {name!r}; built-in tasks: {', '.join(BUILTIN)}")
    data = resources.files("tvmech") / "data" / "builtin" / f"{name}.json"
    examples = parse_records(json.loads(data.read_text(encoding="utf-8")), f"built-in task {name}")
    return Task(name=name, examples=examples, **BUILTIN[name])


def builtin_tasks(names: tuple[str, ...] | None = None) -> list[Task]:
    return [builtin_task(n) for n in (names or tuple(BUILTIN))]
