"""Figures of the synthetic-ICL experiments (:mod:`tvmech.synthetic`): data in, ``go.Figure`` out.

No computation happens here: rows come from :mod:`tvmech.synthetic.pretraining` (loss curves) and
:mod:`tvmech.synthetic.analysis`. Every builder takes rows with a ``model`` key (``vanilla``, ``tvp``).
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tvmech.plots.style import PALETTE

MODEL_COLORS = {"vanilla": PALETTE[0], "tvp": PALETTE[1]}
MODEL_NAMES = {"vanilla": "vanilla (λ = 0)", "tvp": "TVP-loss"}


def _models(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["model"] for r in rows))


def _label(m: str) -> str:
    return MODEL_NAMES.get(m, m)


def training_curves_figure(rows: Sequence[dict], title: str = "") -> go.Figure:
    """ICL loss and TVP-loss against training step, one line per model (rows ``{model, step, icl_loss, tvp_loss}``)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["ICL loss (every y from its prefix)",
                                                       "TVP-loss (query-only pass, vector injected)"])
    for m in _models(rows):
        mine = [r for r in rows if r["model"] == m]
        for col, key in ((1, "icl_loss"), (2, "tvp_loss")):
            fig.add_trace(go.Scatter(x=[r["step"] for r in mine], y=[r[key] for r in mine], mode="lines",
                                     name=_label(m), legendgroup=m, showlegend=col == 1,
                                     line=dict(color=MODEL_COLORS.get(m, PALETTE[2]), width=2.5),
                                     hovertemplate=f"{_label(m)}<br>step %{{x}}<br>{key} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
    fig.update_xaxes(title_text="training step")
    fig.update_yaxes(title_text="loss", row=1, col=1)
    fig.update_layout(title=title or "Training from scratch: ICL loss and TVP-loss", template="plotly_white",
                      width=1100, height=450)
    return fig


def tv_prompting_figure(rows: Sequence[dict], layer: int | None = None, title: str = "") -> go.Figure:
    """Error of task-vector prompting per injection layer, one panel per model; ICL and zero-shot dashed.

    Rows ``{model, method, layer, error, n}`` from :func:`tvmech.synthetic.tv_prompting`.
    """
    models = _models(rows)
    fig = make_subplots(rows=1, cols=len(models), subplot_titles=[_label(m) for m in models], shared_yaxes=True)
    styles = {"task_vector": ("solid", 3), "shuffled": ("dot", 2), "random": ("dash", 2)}
    for c, m in enumerate(models, start=1):
        mine = [r for r in rows if r["model"] == m]
        layers = sorted({r["layer"] for r in mine if r["layer"] is not None})
        for i, (method, (dash, width)) in enumerate(styles.items()):
            by = {r["layer"]: r["error"] for r in mine if r["method"] == method}
            fig.add_trace(go.Scatter(x=layers, y=[by.get(l) for l in layers], mode="lines+markers", name=method,
                                     legendgroup=method, showlegend=c == 1,
                                     line=dict(color=PALETTE[2 + i], dash=dash, width=width),
                                     hovertemplate=f"{m} {method}<br>layer %{{x}}<br>error %{{y:.3f}}<extra></extra>"),
                          row=1, col=c)
        for j, ref in enumerate(("icl", "zero_shot")):
            val = next((r["error"] for r in mine if r["method"] == ref), None)
            if val is not None:
                fig.add_hline(y=val, line=dict(dash="dash", color=PALETTE[6 + j]), row=1, col=c,
                              annotation_text=f"{ref} {val:.2f}", annotation_position="top left" if j else "top right")
        if layer is not None:
            fig.add_vline(x=layer, line=dict(color="lightgray", width=8), opacity=0.4, row=1, col=c)
    fig.update_xaxes(title_text="injection layer l (hook_resid_pre)", dtick=1)
    fig.update_yaxes(title_text="query error", range=[-0.02, 1.05], row=1, col=1)
    fig.update_layout(title=title or "Task-vector prompting: extract at layer l from the prompt, inject into the "
                      "query alone" + (f" (TVP layer {layer} shaded)" if layer is not None else ""),
                      template="plotly_white", width=1100, height=480)
    return fig


def pca_figure(points: Sequence[dict], scores: Sequence[dict], param_name: str = "k", title: str = "") -> go.Figure:
    """PCA of the extracted vectors: one panel per (model, layer), points coloured by the task parameter,
    cluster sharpness η² in each panel's title. Rows ``{model, layer, pc1, pc2, param}`` and
    ``{model, layer, sharpness}``."""
    models = _models(points)
    layers = sorted({p["layer"] for p in points})
    sharp = {(s["model"], s["layer"]): s["sharpness"] for s in scores}
    titles = [f"{_label(m)}, layer {l}: η² = {sharp.get((m, l), float('nan')):.2f}" for m in models for l in layers]
    fig = make_subplots(rows=len(models), cols=len(layers), subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=0.1)
    lo, hi = min(p["param"] for p in points), max(p["param"] for p in points)
    for r, m in enumerate(models, start=1):
        for c, l in enumerate(layers, start=1):
            mine = [p for p in points if p["model"] == m and p["layer"] == l]
            fig.add_trace(go.Scatter(
                x=[p["pc1"] for p in mine], y=[p["pc2"] for p in mine], mode="markers", showlegend=False,
                marker=dict(color=[p["param"] for p in mine], colorscale="Turbo", cmin=lo, cmax=hi, size=5,
                            showscale=r == 1 and c == len(layers), colorbar=dict(title=param_name)),
                hovertemplate=f"{m} layer {l}<br>{param_name} = %{{marker.color:.2f}}<extra></extra>"), row=r, col=c)
    fig.update_xaxes(showticklabels=False, title_text="PC1")
    fig.update_yaxes(showticklabels=False, title_text="PC2")
    fig.update_layout(title=title or f"Extracted vectors h_l(prompt)[query], top-2 PCA, coloured by {param_name}",
                      template="plotly_white", width=300 * len(layers) + 150, height=320 * len(models) + 80)
    return fig


def robustness_figure(rows: Sequence[dict], layer: int | None = None, title: str = "") -> go.Figure:
    """Grouped bars: ICL and task-vector-prompting error per condition, for each model.

    Rows ``{model, condition, icl_error, tv_error}`` from :func:`tvmech.synthetic.robustness`.
    """
    conds = list(dict.fromkeys(r["condition"] for r in rows))
    fig = go.Figure()
    for i, m in enumerate(_models(rows)):
        by = {r["condition"]: r for r in rows if r["model"] == m}
        for j, (key, what) in enumerate((("icl_error", "ICL"), ("tv_error", "task vector"))):
            y = [by[c][key] if c in by else None for c in conds]
            fig.add_trace(go.Bar(x=conds, y=y, name=f"{_label(m)} · {what}", text=[f"{v:.2f}" for v in y],
                                 textposition="outside", marker_color=MODEL_COLORS.get(m, PALETTE[2 + i]),
                                 marker_pattern_shape="" if j == 0 else "/", opacity=1.0 if j == 0 else 0.75))
    fig.update_layout(title=title or ("Robustness: noisy demonstration labels and out-of-distribution queries"
                                      + (f" (task vector at layer {layer})" if layer is not None else "")),
                      barmode="group", yaxis=dict(title="query error", range=[0, 1.1]), template="plotly_white",
                      width=1000, height=480)
    return fig


def ltv_figure(rows: Sequence[dict], layer: int | None = None, title: str = "") -> go.Figure:
    """Mean held-out accuracy over offsets k per method (zero-shot, LTV, extracted mean / per prompt, ICL),
    one bar group per model; hover lists each k. Rows from :func:`tvmech.synthetic.learned_vs_extracted`."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig = go.Figure()
    for m in _models(rows):
        mine = [r for r in rows if r["model"] == m]
        ks = sorted({r["k"] for r in mine})
        mean = [sum(r["accuracy"] for r in mine if r["method"] == me) / len(ks) for me in methods]
        detail = ["<br>".join(f"k={r['k']}: {r['accuracy']:.2f}" for r in mine if r["method"] == me) for me in methods]
        cos = sum(r["cosine_ltv_vanilla"] for r in mine if r["method"] == "ltv") / len(ks)
        fig.add_trace(go.Bar(x=methods, y=mean, name=f"{_label(m)} (cos LTV·vanilla TV {cos:.2f})",
                             text=[f"{v:.2f}" for v in mean], textposition="outside", customdata=detail,
                             marker_color=MODEL_COLORS.get(m, PALETTE[2]),
                             hovertemplate="%{x}<br>mean %{y:.3f}<br>%{customdata}<extra></extra>"))
    fig.update_layout(title=title or ("Learned vs extracted task vectors on query-only prompts"
                                      + (f" (layer {layer})" if layer is not None else "")),
                      barmode="group", yaxis=dict(title="held-out accuracy (mean over k)", range=[0, 1.1]),
                      template="plotly_white", width=1000, height=480)
    return fig


__all__ = ["training_curves_figure", "tv_prompting_figure", "pca_figure", "robustness_figure", "ltv_figure"]
