"""Figure builders for task geometry and composition: data in, ``plotly.graph_objects.Figure`` out.

No computation happens here: the numbers come from :mod:`tvmech.analysis.vector_geometry`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go

from tvmech.plots.style import PALETTE


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
    """The composed task's accuracy per method (in the order given), one bar colour per scoring; where the rows
    have the part tasks' references (``role = "part"``), a second panel with each part's zero-shot, k-shot ICL
    and LTV accuracy (first scoring), so the headroom of both parts and of the composition is in view.

    ``rows`` are :func:`tvmech.experiments.composition.composition_experiment` records (those saved before
    issue 24: the composed task only, one scoring).
    """
    from plotly.subplots import make_subplots

    composed = [r for r in rows if r.get("role", "composed") == "composed"]
    parts = [r for r in rows if r.get("role") == "part"]
    scorings = list(dict.fromkeys(r.get("scoring") for r in composed))
    task = composed[0].get("task", "") if composed else ""
    fig = make_subplots(rows=1, cols=2 if parts else 1, column_widths=[0.6, 0.4] if parts else None,
                        subplot_titles=[f"composed task{': ' + task if task else ''}",
                                        *(["each part on its own task"] if parts else [])])
    for i, sc in enumerate(scorings):
        mine = [r for r in composed if r.get("scoring") == sc]
        fig.add_trace(go.Bar(
            x=[r["method"] for r in mine], y=[r["accuracy"] for r in mine], customdata=[r["n"] for r in mine],
            name=sc or "accuracy", marker_color=PALETTE[i % len(PALETTE)], showlegend=bool(sc),
            text=[f"{r['accuracy']:.2f}" for r in mine], textposition="outside",
            hovertemplate=f"%{{x}}<br>{sc or 'accuracy'} %{{y:.3f}} (n=%{{customdata}})<extra></extra>"), row=1, col=1)
    first = scorings[0] if scorings else None
    for j, kind in enumerate(("zero_shot", "icl", "LTV")):
        mine = [r for r in parts if r.get("scoring") == first and (
            r["method"] == kind if kind == "zero_shot" else r["method"].startswith("icl_") if kind == "icl"
            else r["method"].endswith(" LTV"))]
        if mine:
            label = mine[0]["method"] if kind != "LTV" else "own LTV"
            fig.add_trace(go.Bar(x=[r["task"] for r in mine], y=[r["accuracy"] for r in mine], name=f"part: {label}",
                                 marker_color=PALETTE[(len(scorings) + j) % len(PALETTE)],
                                 text=[f"{r['accuracy']:.2f}" for r in mine], textposition="outside",
                                 hovertemplate=f"%{{x}}<br>{label} ({first}) %{{y:.3f}}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.1], title_text="test accuracy", row=1, col=1)
    if parts:
        fig.update_yaxes(range=[0, 1.1], row=1, col=2)
    fig.update_layout(
        title=title or (f"Composition{': ' + task if task else ''}: each part's LTV, their sum and k-shot ICL"
                        + (f" — {model_name}" if model_name else "")),
        barmode="group", template="plotly_white", width=1200 if parts else 800, height=500)
    return fig


__all__ = ["cosine_heatmap", "transfer_heatmap", "composition_bars"]
