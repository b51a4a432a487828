"""Figure builders: data in, ``plotly.graph_objects.Figure`` out. No computation happens here."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC"]


def icl_accuracy_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Accuracy against the number of demonstrations k, one line per task and their mean."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    ks = sorted({r["k"] for r in rows})
    fig = go.Figure()
    for i, task in enumerate(tasks):
        acc = {r["k"]: r["accuracy"] for r in rows if r["task"] == task}
        n = next(r["n"] for r in rows if r["task"] == task)
        fig.add_trace(go.Scatter(
            x=[str(k) for k in ks], y=[acc.get(k) for k in ks], mode="lines+markers", name=task,
            line=dict(color=PALETTE[i % len(PALETTE)], width=1.5),
            hovertemplate=f"{task}<br>k=%{{x}}<br>accuracy=%{{y:.3f}} (n={n})<extra></extra>",
        ))
    mean = [sum(r["accuracy"] for r in rows if r["k"] == k) / len(tasks) for k in ks]
    fig.add_trace(go.Scatter(x=[str(k) for k in ks], y=mean, mode="lines+markers", name="mean",
                             line=dict(color="black", width=4),
                             hovertemplate="mean<br>k=%{x}<br>accuracy=%{y:.3f}<extra></extra>"))
    fig.update_layout(
        title=f"Zero-shot vs in-context accuracy{' — ' + model_name if model_name else ''}",
        xaxis_title="demonstrations in the prompt (k)", yaxis_title="test accuracy",
        yaxis=dict(range=[0, 1.02]), template="plotly_white", width=900, height=550,
        legend=dict(title="task"),
    )
    return fig
