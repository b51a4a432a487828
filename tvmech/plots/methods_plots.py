"""Figures of :mod:`tvmech.experiments.method_comparison` (accuracy per method and task, each method at its dev-chosen
site and strength, shown on hover with the budget; zero-shot and ICL as references) and of
:mod:`tvmech.experiments.ltv_recipes`. Rows in, ``go.Figure`` out."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from tvmech.plots.behaviour_plots import headline
from tvmech.plots.spread import error_bars, over_runs, runs_note
from tvmech.plots.style import PALETTE

NAMES = {"zero_shot": "zero-shot", "mean_diff": "mean difference (Vanilla TV)", "pca_diff": "PCA of differences",
         "pca_center": "PCA, pairs centred", "fv": "function vector", "ltv": "LTV"}


def _choices(rows: Sequence[dict], method: str, task: str) -> str:
    """The dev choice of each run seed: ``L12 α=2 (dev 0.81)``, one per seed."""
    picks = [f"L{r['layer']}" + (f" α={r['alpha']:g}" if r.get("alpha") is not None else "")
             + (f" (dev {r['dev_accuracy']:.2f})" if r.get("dev_accuracy") is not None else "")
             for r in rows if r["method"] == method and r["task"] == task and r.get("layer") is not None]
    return "; ".join(dict.fromkeys(picks))


def methods_figure(rows: Sequence[dict], model_name: str = "", scoring: str | None = None) -> go.Figure:
    """Grouped bars: one group per task (and the mean over tasks), one bar per method; mean ± sd over run seeds.

    Args:
        rows: the ``methods`` table.
        model_name: shown in the title.
        scoring: the scoring shown (default: each task's first, the headline).

    Returns:
        The figure.
    """
    rows, note = headline(rows, scoring)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    per = over_runs(rows, lambda r: (r["method"], r["task"]), "accuracy")
    mean = over_runs(rows, lambda r: r["method"], "accuracy")
    budget = {r["task"]: r.get("budget") for r in rows}
    fig = go.Figure()
    x = [*tasks, "mean"]
    for i, m in enumerate(methods):
        spreads = [per.get((m, t)) for t in tasks] + [mean.get(m)]
        hover = [f"<b>{NAMES.get(m, m)}</b><br>{t}<br>accuracy {s.fmt(3) if s else '—'}"
                 + (f"<br>budget {budget[t]} examples" if t in budget and budget[t] is not None else "")
                 + (f"<br>site (dev-chosen): {c}" if t in budget and (c := _choices(rows, m, t)) else "")
                 for t, s in zip(x, spreads)]
        fig.add_trace(go.Bar(x=x, y=[s.mean if s else None for s in spreads], name=NAMES.get(m, m),
                             marker_color=PALETTE[i % len(PALETTE)], error_y=error_bars(spreads),
                             hovertext=hover, hoverinfo="text"))
    b = sorted({v for v in budget.values() if v is not None})
    budget_note = f"; budget {b[0]}–{b[-1]} examples" if len(b) > 1 else (f"; budget {b[0]} examples" if b else "")
    fig.update_layout(barmode="group", template="plotly_white", width=1300, height=520,
                      title="Task-vector methods, each at its dev-chosen layer and strength" + runs_note(rows) + note
                      + budget_note + (f" — {model_name}" if model_name else ""),
                      yaxis=dict(title="test accuracy", range=[0, 1.05]), legend=dict(title="method"))
    return fig


def recipes_figure(rows: Sequence[dict], model_name: str = "", scoring: str | None = None) -> go.Figure:
    """Test accuracy per task of each LTV recipe (default, released); hover: steps run and wall seconds (mean over
    run seeds)."""
    rows, note = headline(rows, scoring)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = go.Figure()
    for i, name in enumerate(dict.fromkeys(r["recipe"] for r in rows)):
        mine = [r for r in rows if r["recipe"] == name]
        acc = over_runs(mine, lambda r: r["task"], "accuracy")
        steps = over_runs(mine, lambda r: r["task"], "steps_run")
        wall = over_runs(mine, lambda r: r["task"], "wall_s")
        spreads = [acc.get(t) for t in tasks]
        hover = [f"<b>{name}</b><br>{t}<br>accuracy {acc[t].fmt(3)}<br>steps {steps[t].fmt(0)}"
                 f"<br>wall {wall[t].fmt(1)} s" if t in acc else "" for t in tasks]
        fig.add_trace(go.Bar(x=tasks, y=[s.mean if s else None for s in spreads], name=name,
                             marker_color=PALETTE[i % len(PALETTE)], error_y=error_bars(spreads),
                             hovertext=hover, hoverinfo="text"))
    layer = next((r.get("layer") for r in rows), None)
    fig.update_layout(barmode="group", template="plotly_white", width=1100, height=480,
                      title=f"LTV recipes: default vs released (as reported){runs_note(rows)}{note}"
                      + (f"; layer {layer}" if layer is not None else "") + (f" — {model_name}" if model_name else ""),
                      yaxis=dict(title="test accuracy", range=[0, 1.05]), legend=dict(title="recipe"))
    return fig


__all__ = ["methods_figure", "recipes_figure", "NAMES"]
