"""Figure builders for task geometry and composition: data in, ``plotly.graph_objects.Figure`` out.

No computation happens here: the numbers come from :mod:`tvmech.analysis.geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from tvmech.figures.plots import PALETTE


def _cell(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def cosine_heatmap(names: Sequence[str], matrix, title: str = "", model_name: str = "") -> go.Figure:
    """Symmetric heatmap of the cosine similarities ``matrix[i][j]`` (n×n, a tensor, array or lists)."""
    z = matrix.tolist() if hasattr(matrix, "tolist") else [list(r) for r in matrix]
    names = list(names)
    if len(z) != len(names) or any(len(r) != len(names) for r in z):
        raise ValueError(f"matrix must be {len(names)}x{len(names)} for {len(names)} names")
    z = [[None if isinstance(v, float) and math.isnan(v) else v for v in r] for r in z]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu", reversescale=True,
        text=[[_cell(v) for v in r] for r in z], texttemplate="%{text}",
        colorbar=dict(title="cosine"), hovertemplate="%{y} · %{x}<br>cosine %{z:.3f}<extra></extra>",
    ))
    fig.update_layout(
        title=title or ("Cosine similarity of task vectors" + (f" — {model_name}" if model_name else "")),
        yaxis=dict(autorange="reversed", scaleanchor="x"), template="plotly_white",
        width=200 + 60 * len(names), height=150 + 60 * len(names),
    )
    return fig


def transfer_heatmap(rows: Sequence[dict], title: str = "", model_name: str = "") -> go.Figure:
    """Accuracy of each test task (columns) with each train task's vector injected (rows), annotated.

    ``rows`` are :func:`tvmech.experiments.geometry.transfer_matrix` records; a missing pair is left blank.
    """
    train = list(dict.fromkeys(r["train_task"] for r in rows))
    test = list(dict.fromkeys(r["test_task"] for r in rows))
    cell = {(r["train_task"], r["test_task"]): r for r in rows}
    z = [[cell[(a, b)]["accuracy"] if (a, b) in cell else None for b in test] for a in train]
    n = [[cell[(a, b)]["n"] if (a, b) in cell else None for b in test] for a in train]
    fig = go.Figure(go.Heatmap(
        z=z, x=test, y=train, zmin=0, zmax=1, colorscale="Viridis", customdata=n,
        text=[[_cell(v) for v in r] for r in z], texttemplate="%{text}", colorbar=dict(title="accuracy"),
        hovertemplate="vector: %{y}<br>tested on: %{x}<br>accuracy %{z:.3f} (n=%{customdata})<extra></extra>",
    ))
    fig.update_layout(
        title=title or ("Transfer: task vector of one task, zero-shot prompts of another"
                        + (f" — {model_name}" if model_name else "")),
        xaxis_title="test task (zero-shot prompts)", yaxis_title="task vector trained on",
        yaxis=dict(autorange="reversed"), template="plotly_white",
        width=300 + 70 * len(test), height=200 + 55 * len(train),
    )
    return fig


def composition_bars(rows: Sequence[dict], title: str = "", model_name: str = "") -> go.Figure:
    """One bar per method (in the order given) with its accuracy written on it.

    ``rows`` are :func:`tvmech.experiments.composition.composition_experiment` records.
    """
    methods = [r["method"] for r in rows]
    fig = go.Figure(go.Bar(
        x=methods, y=[r["accuracy"] for r in rows], customdata=[r["n"] for r in rows],
        text=[f"{r['accuracy']:.2f}" for r in rows], textposition="outside",
        marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(rows))],
        hovertemplate="%{x}<br>accuracy %{y:.3f} (n=%{customdata})<extra></extra>",
    ))
    task = rows[0].get("task", "") if rows else ""
    fig.update_layout(
        title=title or (f"Composition{': ' + task if task else ''} (king → reine)"
                        + (f" — {model_name}" if model_name else "")),
        xaxis_title="method", yaxis_title="test accuracy", yaxis=dict(range=[0, 1.05]),
        template="plotly_white", width=800, height=500, showlegend=False,
    )
    return fig


__all__ = ["cosine_heatmap", "transfer_heatmap", "composition_bars"]
