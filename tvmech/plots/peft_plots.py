"""Figure for :func:`tvmech.experiments.peft.compare_peft`: data in, ``plotly.graph_objects.Figure`` out.
No computation."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tvmech.plots.style import PALETTE

PANELS = (  # (key, subplot title, scale applied to the value, number format)
    ("accuracy", "test accuracy", 1.0, ".3f"),
    ("trainable_params", "trainable parameters", 1.0, ",d"),
    ("step_latency_s", "training step (ms, median)", 1e3, ".1f"),
    ("peak_memory_bytes", "activations saved for backward (MiB)", 2.0**-20, ".2f"),
)


SCORINGS = {"first_token": "full vocabulary", "label_set": "label set", "exact_match": "exact match"}


def _hover(r: dict) -> str:
    cuda = r.get("cuda_peak_bytes")
    zero = r.get("zero_shot_by_scoring") or {}
    return "<br>".join([
        f"<b>{r['method']}</b>",
        f"accuracy {r['accuracy']:.3f}"
        + (f" (zero-shot {r['zero_shot_accuracy']:.3f})" if r.get("zero_shot_accuracy") is not None else "")
        + (f", {SCORINGS.get(r['scoring'], r['scoring'])}" if r.get("scoring") else ""),
    ] + [f"accuracy, {SCORINGS.get(s, s)}: {a:.3f}" + (f" (zero-shot {zero[s]:.3f})" if s in zero else "")
         for s, a in (r.get("acc_by_scoring") or {}).items() if s != r.get("scoring")] + [
        f"trainable parameters {r['trainable_params']:,}",
        f"step latency {r['step_latency_s'] * 1e3:.1f} ms (median)"
        + (f", {r['step_latency_min_s'] * 1e3:.1f} ms (fastest)" if r.get("step_latency_min_s") else ""),
        f"saved activations {r['peak_memory_bytes'] / 2**20:.2f} MiB",
    ] + ([f"CUDA peak {cuda / 2**20:.1f} MiB"] if cuda is not None else []))


def peft_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """One bar per method in four panels: accuracy, trainable parameters, step latency, saved activations.

    Hovering any bar shows every number of that method. A dashed line marks the zero-shot accuracy.
    """
    methods = [r["method"] for r in rows]
    colors = [PALETTE[i % len(PALETTE)] for i in range(len(rows))]
    hover = [_hover(r) for r in rows]
    scoring = rows[0].get("scoring") if rows else None
    titles = [p[1] + (f" ({SCORINGS.get(scoring, scoring)})" if p[0] == "accuracy" and scoring else "")
              for p in PANELS]
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=titles, horizontal_spacing=0.07)
    for col, (key, title, scale, fmt) in enumerate(PANELS, start=1):
        y = [r[key] * scale for r in rows]
        fig.add_trace(go.Bar(x=methods, y=y, marker_color=colors, name=title, showlegend=False, hovertext=hover,
                             hoverinfo="text", text=[format(int(v) if fmt == ",d" else v, fmt) for v in y],
                             textposition="outside", cliponaxis=False), row=1, col=col)
    fig.update_yaxes(range=[0, 1.08], row=1, col=1)
    if rows and rows[0].get("zero_shot_accuracy") is not None:
        fig.add_hline(y=rows[0]["zero_shot_accuracy"], line=dict(dash="dash", color="gray"), row=1, col=1,
                      annotation_text="zero-shot", annotation_position="bottom right")
    first = rows[0] if rows else {}
    where = ", ".join(x for x in (first.get("task"), f"layer {first['layer']}" if "layer" in first else None,
                                  model_name) if x)
    fig.update_layout(title=f"Learned task vector vs prefix tuning vs rank-1 LoRA{' — ' + where if where else ''}",
                      template="plotly_white", width=1300, height=450, bargap=0.35)
    return fig
