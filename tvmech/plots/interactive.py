"""Interactive figures with a layer slider, and the head heatmap: rows in, ``go.Figure`` out.

* :func:`lens_layer_figure`: the logit lens at one layer (slider): p(correct) per task and condition, hover with
  the decoded top tokens.
* :func:`rotation_layer_figure`: at one injection layer (slider), each task's alignment with the label
  directions of θ, Qθ and Wθ, the random-rotation null's 5-95% range as error bars, hover with decoded tokens.
* :func:`head_heatmap_figure`: layer × head, the mean TV-reliance (Taylor) score over tasks and run seeds;
  hover with the score, the exact zero-ablation effect, how often the head is a key head and (from the sinks step)
  its attention statistics: to the first token, to itself, elsewhere, and its sink rate.

A slider step shows one layer's traces (``visible`` toggles), so the page needs no Python to move.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from tvmech.plots.spread import over_runs, run_seeds
from tvmech.plots.style import PALETTE

SINK_METRICS = ("first", "self", "rest", "sink_rate")
SINK_LABELS = {"first": "attention to the first token", "self": "attention to itself",
               "rest": "attention elsewhere", "sink_rate": "sink rate (share of prompts)"}


def _slider(fig: go.Figure, layers: Sequence[int], per_layer: int, prefix: str = "layer ", active: int = 0
            ) -> go.Figure:
    """Add a slider showing the ``per_layer`` traces of one layer at a time (traces are in layer order), starting
    at the ``active``-th layer."""
    n = len(layers) * per_layer
    active = active % len(layers)
    steps = [dict(method="update", label=str(l),
                  args=[{"visible": [i // per_layer == j for i in range(n)]}]) for j, l in enumerate(layers)]
    for i, trace in enumerate(fig.data):
        trace.visible = i // per_layer == active
    fig.update_layout(sliders=[dict(active=active, currentvalue=dict(prefix=prefix), steps=steps, pad=dict(t=50))])
    return fig


def _tip(text: str) -> str:
    return text.replace("<", "&lt;")


def lens_layer_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """p(correct) of the logit lens per (task, condition) at one layer, chosen with a slider.

    Args:
        rows: ``figures/logit_lens.json`` rows (task, condition, layer, accuracy, p_correct, top_tokens, ...).
        model_name: shown in the title.
    """
    layers = sorted({r["layer"] for r in rows})
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    cell = {(r["task"], r["condition"], r["layer"]): r for r in rows}
    fig = go.Figure()
    for layer in layers:
        for i, c in enumerate(conditions):
            mine = [cell.get((t, c, layer)) for t in tasks]
            fig.add_trace(go.Bar(
                x=tasks, y=[m["p_correct"] if m else None for m in mine], name=c, legendgroup=c,
                marker_color=PALETTE[i % len(PALETTE)], showlegend=True,
                hovertext=[_tip(f"{t} · {c} · layer {layer}<br>p(correct) {m['p_correct']:.3f}, accuracy "
                                f"{m['accuracy']:.2f}<br>top tokens: {m['top_tokens']}") if m else ""
                           for t, m in zip(tasks, mine)], hoverinfo="text"))
    fig.update_layout(barmode="group", template="plotly_white", width=1200, height=560,
                      title="Logit lens at the query, one layer at a time (slider): p(correct label)"
                            + (f" — {model_name}" if model_name else ""),
                      yaxis=dict(title="p(correct) under the lens", range=[0, 1.02]))
    return _slider(fig, layers, len(conditions), active=-1)  # opens at the last layer, where the lens reads labels


def _reflection(row: dict, v: str) -> str:
    """A hover line for Qθ: whether the orthogonal polar factor had det −1 (and, in rows of issue 24, Q is the
    proper rotation Q₊ with the reflection split off)."""
    if v != "qtheta" or row.get("det_q", 1) > 0:
        return ""
    return ("<br>det Q = −1: reflection split off, Q₊ shown" if "reflection" in row
            else "<br>det Q = −1: this Q includes a reflection")


def rotation_layer_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """cos(·, ū) of θ, Qθ and Wθ per task at one injection layer (slider), with the random-rotation null.

    Args:
        rows: ``figures/linear_map.json`` rows (mean over run seeds; tokens from the first run seed).
        model_name: shown in the title.
    """
    layers = sorted({r["layer"] for r in rows})
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    first = run_seeds(rows)[0]
    one = {(r["task"], r["layer"]): r for r in rows if r.get("run_seed") == first}
    fig = go.Figure()
    for layer in layers:
        mine = [r for r in rows if r["layer"] == layer]
        for i, (v, name) in enumerate((("theta", "θ"), ("qtheta", "Qθ (rotated)"), ("wtheta", "Wθ"))):
            mean = over_runs(mine, lambda r: r["task"], f"align_{v}")
            err = None
            if v == "qtheta" and all("rot_null_q95" in r for r in mine):
                lo = over_runs(mine, lambda r: r["task"], "rot_null_q05")
                hi = over_runs(mine, lambda r: r["task"], "rot_null_q95")
                err = dict(type="data", symmetric=False, array=[hi[t].mean - mean[t].mean for t in tasks],
                           arrayminus=[mean[t].mean - lo[t].mean for t in tasks], color="gray", thickness=1)
            hover = [f"{t} · {name} · layer {layer}<br>cos(·, ū) {mean[t].mean:+.3f}<br>tokens: "
                     + _tip(one[(t, layer)][f"tokens_{v}"]) + _reflection(one[(t, layer)], v)
                     if (t, layer) in one else "" for t in tasks]
            fig.add_trace(go.Bar(x=tasks, y=[mean[t].mean for t in tasks], name=name, legendgroup=name,
                                 marker_color=PALETTE[i], error_y=err, hovertext=hover, hoverinfo="text"))
    fig.update_layout(barmode="group", template="plotly_white", width=1000, height=560,
                      title="Alignment with the label directions at one injection layer (slider); grey bars on Qθ: "
                            "the 5-95% range of random rotations" + (f" — {model_name}" if model_name else ""),
                      yaxis_title="cos(v, ū)")
    return _slider(fig, layers, 3, "injection layer ")


def head_heatmap_figure(rows: Sequence[dict], model_name: str = "",
                        sinks: Sequence[dict] | None = None) -> go.Figure:
    """Layer × head heatmap of the mean head score over tasks and run seeds.

    Args:
        rows: ``figures/key_heads_layers.json`` rows (task, layer, head, taylor, key, exact, ...).
        model_name: shown in the title.
        sinks: ``figures/attention_sinks_heads.json`` rows (task, layer, head, first, self, injected, rest,
            sink_rate); when given, each head's hover adds its attention statistics (mean over tasks and seeds).
    """
    n_layers = max(r["layer"] for r in rows) + 1
    n_heads = max(r["head"] for r in rows) + 1
    score = over_runs(rows, lambda r: (r["layer"], r["head"]), "taylor")
    exact = over_runs(rows, lambda r: (r["layer"], r["head"]), "exact")
    key = over_runs(rows, lambda r: (r["layer"], r["head"]), lambda r: float(r["key"]))
    attn = {m: over_runs(sinks, lambda r: (r["layer"], r["head"]), m) for m in SINK_METRICS} if sinks else {}
    z = [[score[(l, h)].mean if (l, h) in score else None for l in range(n_layers)] for h in range(n_heads)]

    def tip(l, h):
        s, e, k = score.get((l, h)), exact.get((l, h)), key.get((l, h))
        return (f"L{l}H{h}<br>score {s.mean:.2e}" if s else f"L{l}H{h}") + (
            f"<br>exact ablation effect {e.mean:.2e}" if e else "<br>exact ablation: not checked") + (
            f"<br>key head in {k.mean:.0%} of tasks × seeds" if k else "") + "".join(
            f"<br>{SINK_LABELS[m]} {attn[m][(l, h)].mean:.3f}" for m in SINK_METRICS if (l, h) in attn.get(m, {}))

    fig = go.Figure(go.Heatmap(z=z, x=list(range(n_layers)), y=list(range(n_heads)), colorscale="Viridis",
                               text=[[tip(l, h) for l in range(n_layers)] for h in range(n_heads)],
                               hoverinfo="text", colorbar=dict(title="score")))
    fig.update_layout(template="plotly_white", width=1100, height=420,
                      title="Head scores (mean over tasks and run seeds); hover: exact ablation, key-head share"
                            + (", attention statistics" if attn else "")
                            + (f" — {model_name}" if model_name else ""),
                      xaxis=dict(title="layer", dtick=1), yaxis=dict(title="head", dtick=1))
    return fig


__all__ = ["lens_layer_figure", "rotation_layer_figure", "head_heatmap_figure"]
