"""Claims: README's qualitative statements, computed from the figures' JSON.

A claim is a directional hypothesis ("θ is read mostly through the MLPs": ``path_mlp`` above ``path_v``,
``path_qk`` and zero-shot) with a pure function ``(tables, metas) -> Finding``; :class:`Claim` renders it as
``**<statement>: <verdict>.** <evidence>``, so the README sentence is made from the numbers and cannot disagree
with them. README regions ``<!-- claim: NAME -->`` ... ``<!-- /claim -->`` hold the sentence
(:mod:`tvmech.pipeline.readme`); ``NAME@SUB`` evaluates the same claim on ``figures/SUB/`` (another model's run).

Verdicts (``holds`` / ``does not hold`` / ``not tested``) follow two rules, and nothing else:

- **Comparison** (:func:`exceeds`), "a is above b": with ``m_a, m_b`` the means and ``s_a, s_b`` their spreads,
  ``holds`` iff ``m_a − m_b > 2 s``, ``s = sqrt(mean(s_a², s_b²))`` (the pooled sd; a constant side such as
  chance or 0 has no spread and is left out of the mean). The spread of an estimate (:func:`estimate`) is the
  sample sd over run seeds where the rows hold two or more; for a single run, the binomial sd of its accuracy
  over the test queries, ``sqrt(Σ_t p̃_t (1 − p̃_t) / n_t) / T`` for a mean over ``T`` tasks with Laplace's
  ``p̃ = (x + 1) / (n + 2)`` (``x`` correct of ``n``: an accuracy of 0 or 1 keeps a spread); else none, and a
  comparison with a side without spread is ``not tested``.
- **Null percentile** (:func:`outside_null`): ``holds`` iff the (mean) percentile of the observed value in a
  null distribution lies outside the null's central 95 %, on the claimed side (> 97.5, or < 2.5).

A claim with neither a comparison nor a null (e.g. a cosine without a random-direction baseline) is ``not
tested``; its numbers are still rendered.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean, stdev
from typing import Literal

Rows = list[dict]
Tables = dict[str, Rows]
Metas = dict[str, dict]
Verdict = Literal["holds", "does not hold", "not tested"]
VERDICTS: tuple[str, ...] = ("holds", "does not hold", "not tested")
K_SD = 2.0  # a difference holds when it exceeds K_SD pooled sds


@dataclass(frozen=True)
class Est:
    """An estimate: the mean, its spread ``sd`` (``None``: unknown) and what the spread is over.

    ``basis``: ``"seeds"`` (sample sd over ``runs`` run seeds), ``"binomial"`` (one run, sd of an accuracy over
    its test queries), ``"constant"`` (a fixed reference such as chance, no spread) or ``"none"``.
    """

    mean: float
    sd: float | None
    runs: int = 1
    basis: str = "none"

    def fmt(self, digits: int = 2) -> str:
        """``0.72 ± 0.01`` over seeds, ``0.72`` otherwise."""
        if math.isnan(self.mean):
            return "—"
        text = f"{self.mean:.{digits}f}"
        return f"{text} ± {self.sd:.{digits}f}" if self.basis == "seeds" and self.sd is not None else text


def const(value: float) -> Est:
    """A fixed reference (chance, 0): no spread."""
    return Est(float(value), 0.0, 1, "constant")


MISSING = Est(float("nan"), None)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def estimate(rows: Iterable[dict], value: str = "accuracy", binomial: bool = True) -> Est:
    """Mean of ``value`` over ``rows`` and its spread (the rule in the module docstring).

    Args:
        rows: the rows of one group (e.g. one method, all tasks); ``run_seed`` marks the run of a row.
        value: the field; rows where it is missing or not finite are skipped.
        binomial: for a single run, take the binomial sd of an accuracy (needs ``n`` on every row); else none.

    Returns:
        :data:`MISSING` (NaN mean) when no row has the value.
    """
    rows = [r for r in rows if _finite(r.get(value))]
    if not rows:
        return MISSING
    runs: dict = {}
    for r in rows:
        runs.setdefault(r.get("run_seed"), []).append(float(r[value]))
    means = [fmean(v) for v in runs.values()]
    if len(means) > 1:
        return Est(fmean(means), stdev(means), len(means), "seeds")
    p = means[0]
    if binomial and all(_finite(r.get("n")) and r["n"] > 0 for r in rows):
        var = 0.0
        for r in rows:  # Laplace's p̃ = (x + 1) / (n + 2): an accuracy of 0 or 1 still has a spread
            q = (min(max(float(r[value]), 0.0), 1.0) * r["n"] + 1) / (r["n"] + 2)
            var += q * (1 - q) / r["n"]
        return Est(p, math.sqrt(var) / len(rows), 1, "binomial")
    return Est(p, None, 1, "none")


def pick(rows: Iterable[dict], **where) -> Rows:
    """The rows whose fields equal ``where`` (a tuple/set/list value: any of its members)."""
    def ok(r: dict) -> bool:
        return all(r.get(k) in v if isinstance(v, (tuple, set, list, frozenset)) else r.get(k) == v
                   for k, v in where.items())
    return [r for r in rows if ok(r)]


@dataclass(frozen=True)
class Comparison:
    """``a`` above ``b``: the difference, the threshold ``K_SD × pooled sd`` (``None``: no spread) and the verdict."""

    a: Est
    b: Est
    diff: float
    threshold: float | None

    @property
    def verdict(self) -> Verdict:
        if self.threshold is None or math.isnan(self.diff):
            return "not tested"
        return "holds" if self.diff > self.threshold else "does not hold"

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"

    def fmt(self, digits: int = 3) -> str:
        """``Δ +0.554 > 2 × sd 0.031`` (``≤`` when it does not hold; ``no spread`` when untested)."""
        if self.threshold is None or math.isnan(self.diff):
            return f"Δ {self.diff:+.{digits}f}, no spread"
        op = ">" if self.holds else "≤"
        return f"Δ {self.diff:+.{digits}f} {op} {K_SD:g} × sd {self.threshold / K_SD:.{digits}f}"


def exceeds(a: Est, b: Est, k: float = K_SD) -> Comparison:
    """Whether ``a`` is above ``b`` by more than ``k`` pooled sds (module docstring)."""
    sides = [e for e in (a, b) if e.basis != "constant"]
    if any(e.sd is None for e in sides) or math.isnan(a.mean) or math.isnan(b.mean):
        return Comparison(a, b, a.mean - b.mean, None)
    pooled = math.sqrt(fmean([e.sd ** 2 for e in sides])) if sides else 0.0
    return Comparison(a, b, a.mean - b.mean, k * pooled)


def outside_null(percentile: float, side: Literal["above", "below"] = "above", central: float = 95.0) -> Verdict:
    """``holds`` iff ``percentile`` (0-100) lies outside the null's central ``central`` % on ``side``."""
    if not _finite(percentile):
        return "not tested"
    tail = (100.0 - central) / 2
    out = percentile > 100.0 - tail if side == "above" else percentile < tail
    return "holds" if out else "does not hold"


def all_of(verdicts: Sequence[Verdict]) -> Verdict:
    """A conjunction: ``not tested`` if any part is (or there is none), else ``holds`` iff every part holds."""
    if not verdicts or "not tested" in verdicts:
        return "not tested"
    return "holds" if all(v == "holds" for v in verdicts) else "does not hold"


def majority(verdicts: Sequence[Verdict]) -> Verdict:
    """``holds`` iff more than half of the tested parts hold (``not tested`` when none is tested)."""
    tested = [v for v in verdicts if v != "not tested"]
    if not tested:
        return "not tested"
    return "holds" if sum(v == "holds" for v in tested) * 2 > len(tested) else "does not hold"


@dataclass(frozen=True)
class Finding:
    """What a claim's function returns.

    Attributes:
        verdict: ``holds`` / ``does not hold`` / ``not tested``.
        evidence: the markdown after the verdict (numbers, comparisons, the rule's values).
        numbers: the numbers the verdict rests on (for tests and for other claims).
        null: the null or comparison set, in words (``None`` where there is none).
        headline: a short cell for the agreement table (e.g. ``0.70 ± 0.00 vs 0.24 ± 0.03``).
    """

    verdict: Verdict
    evidence: str
    numbers: dict = field(default_factory=dict)
    null: str | None = None
    headline: str = ""


@dataclass(frozen=True)
class ClaimResult:
    """A rendered claim: its numbers, verdict, null and the README sentence."""

    name: str
    numbers: dict
    verdict: Verdict
    null: str | None
    sentence: str
    headline: str


Compute = Callable[[Tables, Metas], Finding]


@dataclass(frozen=True)
class Claim:
    """A named claim: the JSON stems it reads (``stem``: ``figures/stem.json``, or the region's subfolder;
    ``stem@sub``: ``figures/sub/stem.json``; a trailing ``?``: optional), the statement (the hypothesis, as the
    README words it) and its function."""

    name: str
    files: tuple[str, ...]
    statement: str
    compute: Compute

    def __call__(self, tables: Tables, metas: Metas) -> ClaimResult:
        f = self.compute(tables, metas)
        if f.verdict not in VERDICTS:
            raise ValueError(f"claim {self.name!r}: verdict {f.verdict!r} is not one of {VERDICTS}")
        sentence = f"**{self.statement}: {f.verdict}.** {f.evidence.strip()}".strip()
        return ClaimResult(self.name, dict(f.numbers), f.verdict, f.null, sentence, f.headline)


CLAIMS: dict[str, Claim] = {}


def claim(name: str, statement: str, *files: str) -> Callable[[Compute], Compute]:
    """Register the decorated function as claim ``name`` reading ``files`` (see :class:`Claim`)."""

    def deco(compute: Compute) -> Compute:
        if name in CLAIMS:
            raise ValueError(f"claim {name!r} registered twice")
        CLAIMS[name] = Claim(name, tuple(files), statement, compute)
        return compute

    return deco


def not_run(what: str) -> Finding:
    """The finding of a claim whose data is absent from the JSON."""
    return Finding("not tested", f"({what} is not in the JSON.)", headline="not run")


def fmt_range(values: Sequence[float], digits: int = 2) -> str:
    """``0.17-0.30`` (one value: ``0.17``)."""
    vs = [v for v in values if _finite(v)]
    if not vs:
        return "—"
    lo, hi = min(vs), max(vs)
    return f"{lo:.{digits}f}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else f"{lo:.{digits}f}-{hi:.{digits}f}"


def count(verdicts: Sequence[Verdict]) -> str:
    """``3 of 5`` (holds among the tested)."""
    tested = [v for v in verdicts if v != "not tested"]
    return f"{sum(v == 'holds' for v in tested)} of {len(tested)}"
