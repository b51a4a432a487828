"""Tasks: (input, output) pairs with a prompt template, an optional closed label set and a scoring mode.

Built-in tasks ship as package data (``tvmech/data/builtin/*.json``, written for this project; see the
README there). Any JSON list or JSONL file of ``{"input": ..., "output": ...}`` records loads with
:func:`load_task`, as do a few Hugging Face datasets when the hub is reachable (``"hf:sst2"``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Literal

ScoringMode = Literal["first_token", "label_set", "exact_match"]
SCORING_MODES: tuple[str, ...] = ("first_token", "label_set", "exact_match")


@dataclass(frozen=True)
class Example:
    input: str
    output: str


@dataclass(frozen=True)
class Template:
    """How examples become text: ``instruction + sep.join(demos + [query])``.

    A demonstration is ``query.format(input=x) + answer.format(output=y)``; the prompt ends with the
    query of the test input, and the label is the continuation ``answer.format(output=y)``.
    """

    query: str = "Q: {input}\nA:"
    answer: str = " {output}"
    separator: str = "\n\n"
    instruction: str = ""

    def demo(self, ex: Example) -> str:
        return self.query.format(input=ex.input) + self.answer.format(output=ex.output)

    def prompt(self, demos: list[Example], query: str) -> str:
        parts = [self.demo(d) for d in demos] + [self.query.format(input=query)]
        return self.instruction + self.separator.join(parts)

    def label(self, output: str) -> str:
        return self.answer.format(output=output)


@dataclass(frozen=True)
class Splits:
    train: tuple[Example, ...]
    val: tuple[Example, ...]
    test: tuple[Example, ...]


@dataclass(frozen=True)
class Task:
    name: str
    examples: tuple[Example, ...]
    template: Template = field(default_factory=Template)
    labels: tuple[str, ...] | None = None
    scoring: ScoringMode = "first_token"
    description: str = ""

    def __post_init__(self) -> None:
        if not self.examples:
            raise ValueError(f"task {self.name!r} has no examples")
        if self.scoring not in SCORING_MODES:
            raise ValueError(f"scoring {self.scoring!r} is not valid; choose one of {SCORING_MODES}")
        if self.scoring == "label_set" and not self.labels:
            raise ValueError(f"task {self.name!r}: scoring 'label_set' needs a closed label set")
        if self.labels:
            stray = sorted({e.output for e in self.examples} - set(self.labels))
            if stray:
                raise ValueError(f"task {self.name!r}: outputs {stray[:5]} are not in its label set {self.labels}")

    def splits(self, seed: int = 0, fractions: tuple[float, float, float] = (0.5, 0.15, 0.35)) -> Splits:
        """Seeded shuffle, then train / validation / test by ``fractions``."""
        if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
        order = list(self.examples)
        random.Random(seed).shuffle(order)
        n_train = round(fractions[0] * len(order))
        n_val = round(fractions[1] * len(order))
        return Splits(
            tuple(order[:n_train]), tuple(order[n_train : n_train + n_val]), tuple(order[n_train + n_val :])
        )

    def with_template(self, **changes: str) -> Task:
        return replace(self, template=replace(self.template, **changes))


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


def parse_records(records: object, origin: str) -> tuple[Example, ...]:
    if not isinstance(records, list) or not records:
        raise ValueError(f"{origin}: expected a non-empty list of {{'input': ..., 'output': ...}} records")
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "input" not in r or "output" not in r:
            raise ValueError(f"{origin}: record {i} has no 'input'/'output' keys: {str(r)[:80]}")
        x, y = r["input"], r["output"]
        if isinstance(y, list):  # some public files list several accepted outputs; take the first
            y = y[0] if y else ""
        if not str(x).strip() or not str(y).strip():
            raise ValueError(f"{origin}: record {i} has an empty input or output: {str(r)[:80]}")
        out.append(Example(str(x), str(y)))
    return tuple(out)


def read_records(path: str | Path) -> tuple[Example, ...]:
    """Read a JSON list or JSONL file of ``{"input", "output"}`` records."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise ValueError(f"{path}: the task file is empty")
    if path.suffix == ".jsonl":
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        records = json.loads(text)
    return parse_records(records, str(path))


def builtin_task(name: str) -> Task:
    if name not in BUILTIN:
        raise ValueError(f"unknown task {name!r}; built-in tasks: {', '.join(BUILTIN)}")
    data = resources.files("tvmech") / "data" / "builtin" / f"{name}.json"
    examples = parse_records(json.loads(data.read_text(encoding="utf-8")), f"built-in task {name}")
    return Task(name=name, examples=examples, **BUILTIN[name])


def load_task(source: str | Path, **overrides) -> Task:
    """A built-in task name, a ``.json``/``.jsonl`` file path, or ``"hf:<name>"`` (needs the hub).

    ``overrides`` (``template``, ``labels``, ``scoring``, ``name``) replace the defaults.
    """
    src = str(source)
    if src.startswith("hf:"):
        from tvmech.data.hf import load_hf_task

        task = load_hf_task(src[3:])
    elif src in BUILTIN:
        task = builtin_task(src)
    elif src.endswith((".json", ".jsonl")):
        if not Path(src).is_file():
            raise FileNotFoundError(f"task file {src!r} does not exist")
        task = Task(name=Path(src).stem, examples=read_records(src))
    else:
        raise ValueError(
            f"unknown task {src!r}; valid: a built-in name ({', '.join(BUILTIN)}), a .json/.jsonl file, "
            "or 'hf:<dataset>'"
        )
    return replace(task, **overrides) if overrides else task


def builtin_tasks(names: tuple[str, ...] | None = None) -> list[Task]:
    return [builtin_task(n) for n in (names or tuple(BUILTIN))]
