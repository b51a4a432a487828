"""The README's results tables, built from the figures' JSON rows (pure: rows and metas in, markdown out).

Every builder is registered in :data:`REGIONS` under the name of its README region
(``<!-- table: NAME -->``) with the JSON files (stems under ``figures/``) it reads. All numbers go through
:func:`aggregate`: a mean per group within each run seed (``run_seed`` field; one run when absent), then the
mean over run seeds, with the sample sd over run seeds when the rows hold more than one (``mean ± sd``).
Where a task was scored both ways (``scoring``: ``label_set`` / ``first_token``), per-task rows show the
scoring and every mean over tasks is given once per scoring (:func:`scoring_views`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tvmech.plots.spread import Spread, over_runs

Rows = list[dict]
Builder = Callable[[dict[str, Rows], dict[str, dict]], str]


@dataclass(frozen=True)
class Region:
    """A README region: the JSON stems it reads and the builder ``(tables, metas) -> markdown``."""

    files: tuple[str, ...]
    build: Builder


REGIONS: dict[str, Region] = {}


def register(name: str, *files: str) -> Callable[[Builder], Builder]:
    """Register ``build`` as the generator of region ``name``, reading ``figures/<file>.json`` for each file."""

    def deco(build: Builder) -> Builder:
        REGIONS[name] = Region(tuple(files), build)
        return build

    return deco


def run_seeds(rows: Rows) -> list:
    """The distinct ``run_seed`` values of ``rows`` (sorted; empty when no row has one)."""
    return sorted({r["run_seed"] for r in rows if r.get("run_seed") is not None})


def aggregate(rows: Rows, by: Sequence[str], value: str) -> dict[tuple, Spread]:
    """Group ``rows`` by the fields ``by`` and summarise ``value``.

    Args:
        rows: JSON rows; ``None`` or non-finite values are skipped.
        by: fields that define a cell (those left out, e.g. ``task``, are averaged over within a run seed).
        value: the field to summarise.

    Returns:
        ``{tuple(row[k] for k in by): Spread}`` (:class:`tvmech.plots.spread.Spread`); the sd is over run seeds,
        shown only when the cell has values from at least two of them.
    """
    def finite(r: dict) -> float | None:
        v = r.get(value)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None

    return over_runs(rows, lambda r: tuple(r.get(k) for k in by), finite)


def cell(stats: dict[tuple, Spread], key: tuple, digits: int = 2, bold: bool = False, signed: bool = False) -> str:
    """A formatted cell of :func:`aggregate`'s result, ``—`` where the data has none."""
    if key not in stats:
        return "—"
    text = stats[key].fmt(digits, signed)
    return f"**{text}**" if bold else text


def scoring_views(rows: Rows, first: str = "label_set") -> list[tuple[str, Rows]]:
    """Rows to average over tasks, once per scoring where some task was scored both ways.

    Args:
        rows: JSON rows.
        first: the scoring whose view comes first (then the others by name).

    Returns:
        ``[("", rows)]`` when no task has two scorings; else ``[(scoring, rows)]`` per such scoring, keeping the
        singly scored tasks' rows in every view.
    """
    per_task: dict = defaultdict(set)
    for r in rows:
        if r.get("scoring") is not None:
            per_task[r.get("task")].add(r["scoring"])
    both = sorted({s for ss in per_task.values() if len(ss) > 1 for s in ss}, key=lambda s: (s != first, s))
    if not both:
        return [("", rows)]
    return [(s, [r for r in rows if len(per_task.get(r.get("task"), ())) <= 1 or r.get("scoring") == s])
            for s in both]


def view_label(label: str, scoring: str) -> str:
    """``label`` with the scoring view appended: ``(own scoring)`` (the tasks' own: label set for the
    classification tasks) or ``(full vocabulary)``."""
    return f"{label} ({VIEW_NAMES.get(scoring, scoring)})" if scoring else label


VIEW_NAMES = {"label_set": "own scoring", "first_token": "full vocabulary"}


def ordered(rows: Rows, *fields: str) -> list:
    """Distinct values (a tuple per row for several fields) in first-appearance order, ``None`` skipped."""
    seen = dict.fromkeys(tuple(r.get(f) for f in fields) if len(fields) > 1 else r.get(fields[0]) for r in rows)
    return [k for k in seen if k is not None and k != (None,) * len(fields)]


def has(rows: Rows, field: str) -> bool:
    """Whether any row holds a non-``None`` ``field``."""
    return any(r.get(field) is not None for r in rows)


def table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _setting(value) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
        else f"{value:g}" if isinstance(value, float) else str(value)


def provenance(stem: str, rows: Rows, meta: dict, keys: Sequence[str] = ()) -> str:
    """The italic line under a table: file, device, date, seeds and the settings ``keys`` found in the meta."""
    settings = meta.get("settings", {})
    seeds = run_seeds(rows)
    parts = [meta.get("device", "device unknown"), meta.get("date", "date unknown")]
    if len(seeds) > 1:
        parts.append("seeds " + ", ".join(str(s) for s in seeds))
    elif seeds or settings.get("seed") is not None:
        parts.append(f"seed {seeds[0] if seeds else settings['seed']}")
    parts += [f"{k} {_setting(settings[k])}" for k in keys if settings.get(k) is not None]
    return f"*figures/{stem}.json — " + ", ".join(str(p) for p in parts) + "*"


def _task_keys(rows: Rows) -> list[tuple]:
    return ordered(rows, "task", "scoring")


@register("icl", "icl_accuracy")
def icl(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Zero-shot and k-shot accuracy per task (and scoring) with the mean over tasks per k."""
    rows = tables["icl_accuracy"]
    ks = sorted(ordered(rows, "k"))
    per_task = aggregate(rows, ("task", "scoring", "k"), "accuracy")
    n = {key: Spread(s.mean, 0.0, 1) for key, s in aggregate(rows, ("task", "scoring"), "n").items()}  # a count
    body = [[t, cell(n, (t, s), 0), s or "", *(cell(per_task, (t, s, k)) for k in ks)] for t, s in _task_keys(rows)]
    for scoring, view in scoring_views(rows):
        mean = aggregate(view, ("k",), "accuracy")
        body.append([view_label("**mean**", scoring), "", "", *(cell(mean, (k,), bold=True) for k in ks)])
    out = table(["task", "n", "scoring", *(f"k={k}" for k in ks)], body)
    return out + "\n\n" + provenance("icl_accuracy", rows, metas["icl_accuracy"], ("model", "ks"))


SWEEP_METHODS = {"ltv": "LTV", "vanilla": "Vanilla TV", "fv": "Function vector"}
SWEEP_SHORT = {"ltv": "LTV", "vanilla": "Vanilla", "fv": "FV"}


@register("layer_sweep", "layer_sweep")
def layer_sweep(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Mean accuracy per method and layer (full-vocabulary scoring first where tasks were scored two ways), then
    per task and scoring: references, LTV at the middle layer, best layers."""
    rows = tables["layer_sweep"]
    layers = sorted(ordered(rows, "layer"))
    swept = ordered([r for r in rows if r.get("layer") is not None], "method")
    methods = [m for m in SWEEP_METHODS if m in swept] + [m for m in swept if m not in SWEEP_METHODS]
    body = []
    for scoring, view in scoring_views(rows, first="first_token"):  # the headline first
        mean = aggregate(view, ("method", "layer"), "accuracy")
        body += [[view_label(SWEEP_METHODS.get(m, m), scoring), *(cell(mean, (m, layer)) for layer in layers)]
                 for m in methods]
    first = table(["method", *(f"L{layer}" for layer in layers)], body)
    mid = 15 if 15 in layers else layers[len(layers) // 2]
    acc = aggregate(rows, ("task", "scoring", "method", "layer"), "accuracy")
    present = set(ordered(rows, "method"))
    refs = [(m, label) for m, label in (("zero_shot", "zero-shot"), ("icl_5shot", "5-shot ICL")) if m in present]
    scored = has(rows, "scoring")
    header = ["task", *(["scoring"] if scored else []), *(label for _, label in refs), f"LTV L{mid}",
              *(f"best {SWEEP_SHORT.get(m, m)} (layer)" for m in methods)]
    body = []
    for t, s in _task_keys(rows):
        line = [t, *([s or ""] if scored else []), *(cell(acc, (t, s, m, None)) for m, _ in refs),
                cell(acc, (t, s, "ltv", mid))]
        for m in methods:
            done = [layer for layer in layers if (t, s, m, layer) in acc]
            best = max(done, key=lambda la: acc[(t, s, m, la)].mean, default=None)
            line.append("—" if best is None else f"{cell(acc, (t, s, m, best))} (L{best})")
        body.append(line)
    return (first + "\n\n" + table(header, body) + "\n\n"
            + provenance("layer_sweep", rows, metas["layer_sweep"], ("model", "ltv_steps", "k")))


def _span(values: list) -> str:
    """A list of layers or positions, short: ``15``; ``-5..-1``; ``0, 2, …, 28``; roles by name."""
    if len(values) > 2 and all(isinstance(v, int) for v in values):
        steps = {b - a for a, b in zip(values, values[1:])}
        if steps == {1}:
            return f"{values[0]}..{values[-1]}"
        if len(steps) == 1:
            return f"{values[0]}, {values[1]}, …, {values[-1]}"
    return ", ".join(str(v) for v in values)


def _robustness_methods(rows: Rows) -> str:
    """Mean accuracy over tasks per configuration (rows) and method (columns), with each configuration's sites;
    a cell averaged over fewer tasks than the table has says over how many (a role undefined for the others)."""
    tasks = ordered(rows, "task")
    methods = [m for m in SWEEP_METHODS if m in ordered(rows, "method")]
    body = []
    for scoring, view in scoring_views(rows):
        mean = aggregate(view, ("configuration", "method"), "accuracy")
        for c in ordered(view, "configuration"):
            first = next(r for r in view if r["configuration"] == c)
            line = [view_label(c, scoring), _span(first.get("layers") or []) or "—",
                    _span(first.get("positions") or []) or "—", str(first.get("k", "—"))]
            for m in methods:
                done = {r["task"] for r in view if (r["configuration"], r["method"]) == (c, m)
                        and r.get("accuracy") is not None}
                short = f" ({len(done)} of {len(tasks)} tasks)" if 0 < len(done) < len(tasks) else ""
                line.append(cell(mean, (c, m)) + short)
            body.append(line)
    return table(["configuration", "layers", "positions", "k", *(SWEEP_METHODS[m] for m in methods)], body)


@register("robustness", "robustness")
def robustness(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Accuracy per configuration: with several methods first their means over tasks side by side (with each
    configuration's sites), then the LTV's mean over tasks and each task (rows without ``method``: the LTV)."""
    rows = tables["robustness"]
    tasks = ordered(rows, "task")
    ltv = [r for r in rows if r.get("method", "ltv") == "ltv"]
    mean_over = f"LTV, mean over {len(tasks)} tasks" if has(rows, "method") else f"mean over {len(tasks)} tasks"
    body = []
    for scoring, view in scoring_views(ltv):
        mean = aggregate(view, ("configuration",), "accuracy")
        per_task = aggregate(view, ("configuration", "task"), "accuracy")
        body += [[view_label(c, scoring), cell(mean, (c,)), *(cell(per_task, (c, t)) for t in tasks)]
                 for c in ordered(view, "configuration")]
    out = table(["configuration", mean_over, *tasks], body)
    if has(rows, "method"):
        out = _robustness_methods(rows) + "\n\n" + out
    return out + "\n\n" + provenance("robustness", rows, metas["robustness"], ("model", "ltv_steps", "k"))


ACCURACY_VIEWS = {"first_token": "full vocabulary", "label_set": "label set", "exact_match": "exact match"}
PEFT_METHODS = {"zero_shot": "zero-shot (no training)", "ltv": "LTV",
                "prefix": "prefix tuning (1 virtual token)", "lora_rank1": "rank-1 LoRA on W_O"}


@register("peft", "peft")
def peft(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """Accuracy (each scoring, the headline first) and cost of LTV, prefix tuning and LoRA on one task, with the
    untrained model's zero-shot accuracy as the first row."""
    rows = tables["peft"]
    scorings = list(dict.fromkeys(s for r in rows for s in r.get("acc_by_scoring") or {}))
    # accuracy columns: one per scoring where the rows have them (rows before issue 24: the task's own, one)
    accs = [(f"acc:{s}", f"accuracy, {ACCURACY_VIEWS.get(s, s)}") for s in scorings] or [("accuracy", "accuracy")]
    flat = [{**r, **{f"acc:{s}": v for s, v in (r.get("acc_by_scoring") or {}).items()}} for r in rows]
    columns = [(field, header, 1, 2, "") for field, header in accs] + [  # field, header, scale, digits, unit
        ("trainable_params", "trainable params", 1, 0, ""), ("step_latency_s", "step latency", 1e3, 0, " ms"),
        ("peak_memory_bytes", "saved for backward", 1e-6, 0, " MB"), ("cuda_peak_bytes", "CUDA peak", 1e-6, 0, " MB")]
    columns = [c for c in columns if has(flat, c[0])]
    body = []
    zero = [{**r, "method": "zero_shot", "accuracy": r.get("zero_shot_accuracy"),
             **{f"acc:{s}": v for s, v in (r.get("zero_shot_by_scoring") or {}).items()}}
            for r in rows if r.get("zero_shot_accuracy") is not None and r.get("method") == rows[0].get("method")]
    for m in ordered(zero + flat, "method"):
        line = [PEFT_METHODS.get(m, m)]
        for field, _, scale, digits, unit in columns:
            if m == "zero_shot" and not field.startswith("acc"):
                line.append("—")
                continue
            scaled = [{**r, field: r[field] * scale} for r in zero + flat
                      if r.get("method") == m and r.get(field) is not None]
            stats = aggregate(scaled, ("method",), field)
            line.append(cell(stats, (m,), digits) + (unit if stats else ""))
        body.append(line)
    out = table(["method", *(c[1] for c in columns)], body)
    return out + "\n\n" + provenance("peft", rows, metas["peft"], ("model", "task", "layer", "steps"))


@register("composition", "composition")
def composition(tables: dict[str, Rows], metas: dict[str, dict]) -> str:
    """The composed task's accuracy per method and scoring; where the rows have them, each part's zero-shot, ICL
    and own-LTV accuracy; and the ICL headroom verdict (:func:`tvmech.experiments.composition.headroom`)."""
    from tvmech.experiments.composition import headroom

    rows = tables["composition"]
    composed = [r for r in rows if r.get("role", "composed") == "composed"]
    task = ordered(composed, "task")[0] if has(composed, "task") else "the composed task"
    scorings = ordered(composed, "scoring")
    acc = aggregate(composed, ("method", "scoring"), "accuracy")
    out = table([f"method (on {task})", *(f"accuracy, {ACCURACY_VIEWS.get(s, s)}" for s in scorings)],
                [[m, *(cell(acc, (m, s)) for s in scorings)] for m in ordered(composed, "method")])
    parts = [r for r in rows if r.get("role") == "part"]
    if parts:
        kinds = (("zero-shot", lambda m: m == "zero_shot"), ("k-shot ICL", lambda m: m.startswith("icl_")),
                 ("own LTV", lambda m: m.endswith(" LTV")))
        pacc = aggregate([{**r, "kind": next(k for k, f in kinds if f(r["method"]))} for r in parts],
                         ("task", "scoring", "kind"), "accuracy")
        body = [[f"{t} ({ACCURACY_VIEWS.get(s, s)})", *(cell(pacc, (t, s, k)) for k, _ in kinds)]
                for t, s in ordered(parts, "task", "scoring")]
        out += "\n\n" + table(["part task", *(k for k, _ in kinds)], body)
    room = headroom(rows)
    c = room["composed"]
    if c["gain"] is not None:
        out += (f"\n\nICL headroom on {task} ({ACCURACY_VIEWS.get(room['scoring'], room['scoring'])}): zero-shot "
                f"{c['zero_shot']:.2f}, k-shot ICL {c['icl']:.2f}, gain {c['gain']:+.2f}: "
                + ("ICL does the composed task" if room["icl_headroom"] else "ICL does not do the composed task, "
                   "so the vectors' sum cannot be judged on it") + " (headroom: a gain of at least 0.20).")
    return out + "\n\n" + provenance("composition", rows, metas["composition"], ("model", "task", "layer", "ltv_steps",
                                                                                 "k"))
