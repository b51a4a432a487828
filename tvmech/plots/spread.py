"""Spreads over run seeds for the figure builders: rows in, mean ± sd out.

A step run with several seeds (``python -m tvmech.pipeline --seeds 0 1 2``) tags each row with ``run_seed``
(:mod:`tvmech.pipeline.scheduler`). For a group of rows (e.g. one method, all tasks) the value of a run is the mean
of the group's values within that run (the mean over tasks); the figure shows the mean and the sample standard
deviation of those per-run values. Rows without ``run_seed`` are one run, with sd 0.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from statistics import fmean, stdev


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation over ``n`` runs (sd 0 for one run)."""

    mean: float
    sd: float
    n: int

    def fmt(self, digits: int = 2, signed: bool = False) -> str:
        """``0.72`` for one run, ``0.72 ± 0.01`` for several (``+0.72`` when ``signed``)."""
        text = f"{self.mean:+.{digits}f}" if signed else f"{self.mean:.{digits}f}"
        return f"{text} ± {self.sd:.{digits}f}" if self.n > 1 else text


def run_seeds(rows: Sequence[dict]) -> list:
    """The distinct ``run_seed`` values of ``rows`` in order (``[None]`` for rows without one)."""
    return list(dict.fromkeys(r.get("run_seed") for r in rows)) or [None]


def spread(values: Sequence[float]) -> Spread:
    """Mean and sample sd of per-run values (NaN mean for none)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return Spread(float("nan"), 0.0, 0)
    return Spread(fmean(v), stdev(v) if len(v) > 1 else 0.0, len(v))


def over_runs(rows: Sequence[dict], key: Callable[[dict], Hashable], value: str | Callable[[dict], float]
              ) -> dict[Hashable, Spread]:
    """Group ``rows`` by ``key``; in each group, average ``value`` within each run seed, then take mean ± sd
    over the runs.

    Args:
        rows: figure rows, optionally with ``run_seed``.
        key: the group of a row (e.g. ``lambda r: r["method"]`` for means over tasks).
        value: a row field, or a function of the row (rows whose value is ``None`` are left out).

    Returns:
        Group -> :class:`Spread`, in the order groups first appear.
    """
    get = (lambda r: r.get(value)) if isinstance(value, str) else value
    groups: dict[Hashable, dict] = {}
    for r in rows:
        v = get(r)
        if v is not None:
            groups.setdefault(key(r), {}).setdefault(r.get("run_seed"), []).append(float(v))
    return {k: spread([fmean(v) for v in runs.values()]) for k, runs in groups.items()}


def mean_text(rows: Sequence[dict], value: str = "accuracy", digits: int = 2) -> str:
    """The mean of ``value`` over ``rows`` (within each run seed, then ± sd over the runs) as text, ``—`` for no
    rows: ``0.72``, ``0.72 ± 0.01``."""
    s = over_runs(rows, lambda r: 0, value).get(0)
    return "—" if s is None else s.fmt(digits)


def error_bars(spreads: Sequence[Spread | None]) -> dict | None:
    """A plotly ``error_y`` of the sds, or ``None`` when every spread is of one run."""
    if not any(s is not None and s.n > 1 for s in spreads):
        return None
    return dict(type="data", array=[s.sd if s is not None else 0.0 for s in spreads], visible=True)


def runs_note(rows: Sequence[dict]) -> str:
    """``" (mean ± sd over 3 run seeds)"``, or ``""`` for one run."""
    n = len([s for s in run_seeds(rows) if s is not None])
    return f" (mean ± sd over {n} run seeds)" if n > 1 else ""


__all__ = ["Spread", "run_seeds", "spread", "over_runs", "mean_text", "error_bars", "runs_note"]
