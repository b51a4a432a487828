"""Builders of the behavioural figures (ICL accuracy, the layer sweep, robustness): rows in, ``go.Figure`` out."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import plotly.graph_objects as go

from tvmech.plots.spread import error_bars, over_runs, runs_note
from tvmech.plots.style import PALETTE


def icl_accuracy_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Accuracy against the number of demonstrations k, one line per task and their mean."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    ks = sorted({r["k"] for r in rows})
    fig = go.Figure()
    for i, task in enumerate(tasks):
        acc = {k: v.mean for (t, k), v in over_runs(rows, lambda r: (r["task"], r["k"]), "accuracy").items()
               if t == task}
        n = next(r["n"] for r in rows if r["task"] == task)
        fig.add_trace(go.Scatter(
            x=[str(k) for k in ks], y=[acc.get(k) for k in ks], mode="lines+markers", name=task,
            line=dict(color=PALETTE[i % len(PALETTE)], width=1.5),
            hovertemplate=f"{task}<br>k=%{{x}}<br>accuracy=%{{y:.3f}} (n={n})<extra></extra>",
        ))
    mean = over_runs(rows, lambda r: r["k"], "accuracy")
    fig.add_trace(go.Scatter(x=[str(k) for k in ks], y=[mean[k].mean for k in ks], mode="lines+markers",
                             name="mean", line=dict(color="black", width=4),
                             error_y=error_bars([mean[k] for k in ks]),
                             hovertemplate="mean<br>k=%{x}<br>accuracy=%{y:.3f}<extra></extra>"))
    fig.update_layout(
        title=f"Zero-shot vs in-context accuracy{runs_note(rows)}{' — ' + model_name if model_name else ''}",
        xaxis_title="demonstrations in the prompt (k)", yaxis_title="test accuracy",
        yaxis=dict(range=[0, 1.02]), template="plotly_white", width=900, height=550,
        legend=dict(title="task"),
    )
    return fig


SCORING_NAMES = {"first_token": "full-vocabulary first-token scoring", "label_set": "label-set scoring",
                 "exact_match": "exact match"}


def headline(rows: Sequence[dict], scoring: str | None = None) -> tuple[list[dict], str]:
    """The rows of one scoring and a title note naming it: ``scoring``, or each task's first (the headline;
    rows without ``scoring`` are all kept, with no note)."""
    if not any("scoring" in r for r in rows):
        return list(rows), ""
    first: dict = {}
    for r in rows:
        first.setdefault(r["task"], r.get("scoring"))
    kept = [r for r in rows if r.get("scoring") == (scoring or first[r["task"]])]
    names = list(dict.fromkeys(r.get("scoring") for r in kept))
    return kept, "; " + ", ".join(SCORING_NAMES.get(n, str(n)) for n in names)


def layer_sweep_figure(rows: Sequence[dict], model_name: str = "", scoring: str | None = None) -> go.Figure:
    """Mean accuracy over tasks per injection layer for each vector method, with reference lines; under one
    scoring (default: each task's first, the headline)."""
    rows, note = headline(rows, scoring)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = go.Figure()
    methods = [m for m in dict.fromkeys(r["method"] for r in rows)
               if any(r["layer"] is not None for r in rows if r["method"] == m)]
    mean = over_runs(rows, lambda r: (r["method"], r["layer"]), "accuracy")
    for i, method in enumerate(methods):
        layers = sorted({r["layer"] for r in rows if r["method"] == method})
        spreads = [mean[(method, l)] for l in layers]
        fig.add_trace(go.Scatter(x=layers, y=[v.mean for v in spreads], mode="lines+markers", name=method,
                                 line=dict(color=PALETTE[i], width=3), error_y=error_bars(spreads),
                                 hovertemplate=f"{method}<br>layer %{{x}}<br>mean accuracy %{{y:.3f}}<extra></extra>"))
    for j, ref in enumerate(m for m in dict.fromkeys(r["method"] for r in rows) if m not in methods):
        v = mean[(ref, None)]
        sd = f" ± {v.sd:.2f}" if v.n > 1 else ""
        fig.add_hline(y=v.mean, line=dict(dash="dash", color=PALETTE[len(methods) + j]),
                      annotation_text=f"{ref} {v.mean:.2f}{sd}", annotation_position="top left")
    fig.update_layout(title=f"Task vector injected at one layer (last position), mean over {len(tasks)} tasks"
                      + runs_note(rows) + note + (f" — {model_name}" if model_name else ""),
                      xaxis_title="injection layer (hook_resid_pre)", yaxis_title="test accuracy",
                      yaxis=dict(range=[0, 1.02]), template="plotly_white", width=900, height=550)
    return fig


def layer_sweep_by_task_figure(rows: Sequence[dict], model_name: str = "", cols: int = 5,
                               scoring: str | None = None) -> go.Figure:
    """Small multiples: accuracy per injection layer for each task and method, references dashed; under one
    scoring (default: each task's first, the headline)."""
    from plotly.subplots import make_subplots

    rows, note = headline(rows, scoring)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    n_rows = -(-len(tasks) // cols)
    fig = make_subplots(rows=n_rows, cols=cols, subplot_titles=tasks, shared_yaxes=True,
                        horizontal_spacing=0.03, vertical_spacing=0.12)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    acc = over_runs(rows, lambda r: (r["task"], r["method"], r["layer"]), "accuracy")
    known = [r["layer"] for r in rows if r["layer"] is not None]
    for t, task in enumerate(tasks):
        row, col = t // cols + 1, t % cols + 1
        for i, method in enumerate(methods):
            layers = sorted({r["layer"] for r in rows if r["task"] == task and r["method"] == method},
                            key=lambda l: -1 if l is None else l)
            if not layers:
                continue
            if layers[0] is None:
                x, spreads, dash = [min(known), max(known)], [acc[(task, method, None)]] * 2, "dash"
            else:
                x, spreads, dash = layers, [acc[(task, method, l)] for l in layers], "solid"
            fig.add_trace(go.Scatter(x=x, y=[v.mean for v in spreads], mode="lines", name=method, legendgroup=method,
                                     showlegend=t == 0, line=dict(color=PALETTE[i % len(PALETTE)], dash=dash),
                                     error_y=error_bars(spreads) if dash == "solid" else None,
                                     hovertemplate=f"{task} {method}<br>layer %{{x}}<br>%{{y:.3f}}<extra></extra>"),
                          row=row, col=col)
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title="Layer sweep per task" + runs_note(rows) + note
                      + (f" — {model_name}" if model_name else ""),
                      template="plotly_white", width=1400, height=330 * n_rows)
    return fig


ROBUSTNESS_METHODS = {"ltv": "LTV", "vanilla": "Vanilla TV", "fv": "Function vector"}


def robustness_figure(rows: Sequence[dict], references: dict[str, float] | None = None,
                      note: str | None = None) -> go.Figure:
    """Mean accuracy over tasks for each injection configuration, one bar per method (rows without ``method``:
    the LTV), ± sd over run seeds; references dashed. A configuration whose role is undefined for some task
    (``accuracy`` ``None``) is averaged over the other tasks, and its hover says over how many."""
    rows = [{**r, "method": r.get("method") or "ltv"} for r in rows]
    confs = list(dict.fromkeys(r["configuration"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = [m for m in ROBUSTNESS_METHODS if any(r["method"] == m for r in rows)]
    spreads = over_runs(rows, lambda r: (r["method"], r["configuration"]), "accuracy")
    per_task = over_runs(rows, lambda r: (r["method"], r["configuration"], r["task"]), "accuracy")
    fig = go.Figure()
    for i, m in enumerate(methods):
        here = [c for c in confs if (m, c) in spreads]
        done = {c: [t for t in tasks if (m, c, t) in per_task] for c in here}
        detail = [(f"over {len(done[c])} of {len(tasks)} tasks<br>" if len(done[c]) < len(tasks) else "")
                  + "<br>".join(f"{t}: {per_task[(m, c, t)].mean:.2f}" for t in done[c]) for c in here]
        mean = [spreads[(m, c)].mean for c in here]
        fig.add_trace(go.Bar(x=here, y=mean, name=ROBUSTNESS_METHODS[m], text=[f"{v:.2f}" for v in mean],
                             textposition="outside", error_y=error_bars([spreads[(m, c)] for c in here]),
                             customdata=detail, marker_color=PALETTE[i % len(PALETTE)],
                             hovertemplate=f"{ROBUSTNESS_METHODS[m]}<br>%{{x}}<br>mean %{{y:.3f}}<br>%{{customdata}}"
                                           "<extra></extra>"))
    for j, (name, value) in enumerate((references or {}).items()):
        fig.add_hline(y=value, line=dict(dash="dash", color=PALETTE[j + 3]), annotation_text=f"{name} {value:.2f}")
    title = f"Robustness: mean test accuracy over {len(tasks)} tasks{runs_note(rows)}"
    if note:
        title += "".join(f"<br><sup>{line}</sup>" for line in textwrap.wrap(note, 150))
    fig.update_layout(title=title, yaxis=dict(range=[0, 1.05]), margin=dict(r=150, t=130), barmode="group",
                      yaxis_title="test accuracy", template="plotly_white", width=1100, height=550)
    return fig
