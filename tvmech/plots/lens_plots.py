"""Figures for the logit lens, the linear map W_TV(l) and its polar decomposition: data in, Figure out.

No computation happens here: the rows come from :mod:`tvmech.analysis.lens`, :mod:`tvmech.analysis.tv_map` and
:mod:`tvmech.analysis.polar` (assembled by ``tvmech.experiments.linear_map``; drawn by the pipeline's ``linear``
step).
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tvmech.plots.spread import error_bars, over_runs, run_seeds, runs_note
from tvmech.plots.style import PALETTE


def _title(text: str, model_name: str) -> str:
    return text + (f" — {model_name}" if model_name else "")


def lens_heatmap(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Two heatmaps over layers (x) for every (task, condition) (y): logit-lens accuracy and task alignment.

    ``rows``: :func:`tvmech.experiments.logit_lens.lens_conditions` records. Hovering a cell shows the top tokens of the
    lens distribution averaged over the prompts, the accuracy, ``p(correct)`` and both alignments.
    """
    keys = list(dict.fromkeys((r["task"], r["condition"]) for r in rows))
    layers = sorted({r["layer"] for r in rows})
    cell = {(r["task"], r["condition"], r["layer"]): r for r in rows}
    labels = [f"{t} · {c}" for t, c in keys]
    final = max(layers)
    x = [str(l) if l < final else f"{l} (out)" for l in layers]

    def grid(field):
        return [[cell[(t, c, l)][field] if (t, c, l) in cell else None for l in layers] for t, c in keys]

    def tip(t, c, l):
        r = cell[(t, c, l)]
        return (f"<b>{t} · {c}</b><br>layer {l}<br>accuracy {r['accuracy']:.2f} · p(correct) {r['p_correct']:.3f}"
                f"<br>task alignment {r['task_alignment']:.3f} · label alignment {r['label_alignment']:.3f}"
                "<br>top tokens: " + r["top_tokens"].replace("<", "&lt;"))

    hover = [[tip(t, c, l) if (t, c, l) in cell else "" for l in layers] for t, c in keys]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.07,
                        subplot_titles=["logit-lens accuracy (label's first token is the argmax)",
                                        "task alignment cos(h, ū)"])
    fig.add_trace(go.Heatmap(z=grid("accuracy"), x=x, y=labels, zmin=0, zmax=1, colorscale="Viridis",
                             text=hover, hoverinfo="text", colorbar=dict(title="acc", x=0.465, len=0.9, thickness=14)),
                  row=1, col=1)
    fig.add_trace(go.Heatmap(z=grid("task_alignment"), x=x, y=labels, colorscale="RdBu", reversescale=True, zmid=0,
                             text=hover, hoverinfo="text", colorbar=dict(title="cos", len=0.9, thickness=14)),
                  row=1, col=2)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="layer (residual entering the block; last = final stream)")
    fig.update_layout(title=_title("Logit lens at the query position: zero-shot, ICL and TV-injected", model_name),
                      template="plotly_white", width=1500, height=180 + 24 * len(keys))
    return fig


def _by_task(rows: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in rows))


def _first_run(rows: Sequence[dict], task: str) -> list[dict]:
    """The task's rows of the first run seed, by layer (hover text and tokens come from them)."""
    first = run_seeds(rows)[0]
    return sorted((r for r in rows if r["task"] == task and r.get("run_seed") == first), key=lambda r: r["layer"])


def _series(rows: Sequence[dict], task: str, key: str, layers: Sequence[int]) -> dict:
    """``y`` (mean over run seeds) and ``error_y`` (their sd, where there are several) of ``key`` per layer."""
    spreads = over_runs([r for r in rows if r["task"] == task], lambda r: r["layer"], key)
    got = [spreads.get(l) for l in layers]
    return {"y": [g.mean if g else None for g in got], "error_y": error_bars(got)}


def reconstruction_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Left: accuracy per injection layer of θ at layer l (solid), W θ at the final stream (dashed) and the
    logit lens of h_l + θ (dotted), one colour per task, zero-shot as grey dashes. Right: fit quality
    (held-out R² and ‖J − W‖_F/‖J‖_F)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=["accuracy: θ at layer l vs W_TV(l) θ at the final stream",
                                        "fit quality: held-out R² of the mean (solid), per prompt, centred (dashed), "
                                        "‖J − W‖/‖J‖ (dotted)"])
    for i, task in enumerate(_by_task(rows)):
        mine = _first_run(rows, task)
        x = [r["layer"] for r in mine]
        color = PALETTE[i % len(PALETTE)]
        for key, name, dash in (("acc_original", "θ at layer l", "solid"),
                                ("acc_reconstructed", "W θ at final stream", "dash"),
                                ("lens_acc_layer", "lens of h_l + θ", "dot")):
            fig.add_trace(go.Scatter(x=x, **_series(rows, task, key, x), mode="lines+markers", name=f"{task}: {name}",
                                     legendgroup=task, line=dict(color=color, dash=dash),
                                     hovertemplate=f"{task}<br>{name}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=_series(rows, task, "acc_zero_shot", x)["y"], mode="lines",
                                 name=f"{task}: zero-shot",
                                 legendgroup=task, line=dict(color="gray", dash="dash", width=1), showlegend=False,
                                 hovertemplate=f"{task} zero-shot %{{y:.3f}}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, **_series(rows, task, "r2_heldout", x), mode="lines+markers", legendgroup=task,
                                 name=f"{task}: R²", line=dict(color=color), showlegend=False,
                                 hovertemplate=f"{task}<br>layer %{{x}}<br>held-out R² %{{y:.3f}}<extra></extra>"),
                      row=1, col=2)
        if all("r2_per_prompt_centred_mean" in r for r in mine):  # rows of issue 11
            fig.add_trace(go.Scatter(x=x, **_series(rows, task, "r2_per_prompt_centred_mean", x),
                                     mode="lines+markers", legendgroup=task, name=f"{task}: per-prompt R² (centred)",
                                     showlegend=False, line=dict(color=color, dash="dash"),
                                     hovertemplate=f"{task}<br>layer %{{x}}<br>per-prompt R², centred (residuals "
                                                   "centred per prompt; mean over fit prompts) %{y:.3f}"
                                                   "<extra></extra>"),
                          row=1, col=2)
        if all("jac_rel_frobenius" in r for r in mine):
            fig.add_trace(go.Scatter(x=x, **_series(rows, task, "jac_rel_frobenius", x), mode="lines+markers",
                                     legendgroup=task, name=f"{task}: ‖J−W‖/‖J‖", line=dict(color=color, dash="dot"),
                                     showlegend=False,
                                     hovertemplate=f"{task}<br>layer %{{x}}<br>‖J−W‖/‖J‖ %{{y:.3f}}<extra></extra>"),
                          row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], title_text="test accuracy", row=1, col=1)
    fig.update_xaxes(title_text="injection layer l")
    title = _title("Reconstructed task vector: the linear map W_TV(l) in place of the layers" + runs_note(rows),
                   model_name)
    fig.update_layout(title=title,
                      template="plotly_white", width=1400, height=560)
    return fig


TRANSITION_PANELS = (  # (key, panel title)
    ("rotation_distance", "rotation ‖Q₊ − I‖_F / √d (√2 ≈ random)"),
    ("cos_theta_qtheta", "cos(θ, Q₊θ)"),
    ("gain", "gain ‖Σθ‖ / ‖θ‖"),
    ("sv_1", "top singular values σ1 (solid), σ5 (dotted)"),
)


def transition_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """The rotation-to-scaling transition: four panels over the injection layer, one line per task: W's
    statistics (solid); where the rows hold them, the exact Jacobian's (dashed) and the central 95 % of the
    random vectors of θ's norm (J, shaded: the null a task-vector-specific effect must leave)."""
    fig = make_subplots(rows=1, cols=len(TRANSITION_PANELS), subplot_titles=[t for _, t in TRANSITION_PANELS],
                        horizontal_spacing=0.06)
    for i, task in enumerate(_by_task(rows)):
        mine = _first_run(rows, task)
        x = [r["layer"] for r in mine]
        color = PALETTE[i % len(PALETTE)]
        for col, (key, title) in enumerate(TRANSITION_PANELS, start=1):
            fig.add_trace(go.Scatter(x=x, **_series(rows, task, key, x), mode="lines+markers", name=task,
                                     legendgroup=task,
                                     showlegend=col == 1, line=dict(color=color),
                                     hovertemplate=f"{task}<br>layer %{{x}}<br>{key} %{{y:.3f}}<extra></extra>"),
                          row=1, col=col)
            if all(f"jac_{key}" in r for r in mine):  # rows of issue 24: J's polar statistics
                fig.add_trace(go.Scatter(x=x, **_series(rows, task, f"jac_{key}", x), mode="lines+markers",
                                         name=f"{task}: J", legendgroup=task, showlegend=False,
                                         line=dict(color=color, dash="dash"),
                                         hovertemplate=f"{task}<br>layer %{{x}}<br>{key} of J %{{y:.3f}}"
                                                       "<extra></extra>"), row=1, col=col)
            if all(f"null_jac_{key}_q025" in r for r in mine):  # and the random-vector null of J's
                lo, hi = (_series(rows, task, f"null_jac_{key}_{q}", x)["y"] for q in ("q025", "q975"))
                fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", mode="lines",
                                         line=dict(width=0, color=color), opacity=0.15, legendgroup=task,
                                         showlegend=False, name=f"{task}: random vectors (J), 2.5-97.5%",
                                         hoverinfo="skip"), row=1, col=col)
        if all("sv_5" in r for r in mine):
            fig.add_trace(go.Scatter(x=x, **_series(rows, task, "sv_5", x), mode="lines+markers", legendgroup=task,
                                     showlegend=False, line=dict(color=color, dash="dot"), name=f"{task} σ5",
                                     hovertemplate=f"{task}<br>layer %{{x}}<br>σ5 %{{y:.3f}}<extra></extra>"),
                          row=1, col=4)
    fig.update_yaxes(range=[0, 2.05], row=1, col=1)
    fig.update_yaxes(range=[-1.05, 1.05], row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=3)
    fig.update_yaxes(type="log", row=1, col=4)
    fig.update_xaxes(title_text="injection layer l")
    null = any("null_jac_rotation_distance_q025" in r for r in rows)
    fig.update_layout(title=_title("Rotation vs scaling: W_TV(l) = Q₊ Σ₊ (solid)"
                                   + ("; exact Jacobian J (dashed), random vectors of θ's norm (J, shaded)"
                                      if null else "") + runs_note(rows), model_name),
                      template="plotly_white", width=1500, height=480)
    return fig


def alignment_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Alignment with the task's mean label direction ū of θ (before rotation, dotted), Qθ (after the
    rotation, solid; the proper rotation Q₊ in rows of issue 24) and Wθ (dashed) per injection layer; hovering
    shows the tokens each decodes to."""
    fig = go.Figure()
    for i, task in enumerate(_by_task(rows)):
        mine = _first_run(rows, task)
        x = [r["layer"] for r in mine]
        color = PALETTE[i % len(PALETTE)]
        for v, name, dash in (("theta", "θ", "dot"), ("qtheta", "Qθ", "solid"), ("wtheta", "Wθ", "dash")):
            hover = [f"<b>{task}</b> · {name} at layer {r['layer']}<br>cos(·, ū) {r[f'align_{v}']:.3f}, "
                     f"max over labels {r[f'align_max_{v}']:.3f}<br>tokens: "
                     + r[f"tokens_{v}"].replace("<", "&lt;") for r in mine]
            fig.add_trace(go.Scatter(x=x, **_series(rows, task, f"align_{v}", x), mode="lines+markers",
                                     name=f"{task}: {name}", legendgroup=task, line=dict(color=color, dash=dash),
                                     hovertext=hover, hoverinfo="text"))
        if all("rot_null_q95" in r for r in mine):  # rows of issue 11: the Haar-rotation null of cos(Rθ, ū)
            fig.add_trace(go.Scatter(x=x + x[::-1], y=[r["rot_null_q95"] for r in mine]
                                     + [r["rot_null_q05"] for r in mine][::-1], fill="toself", mode="lines",
                                     line=dict(width=0, color=color), opacity=0.15, legendgroup=task,
                                     name=f"{task}: random rotations, 5-95%", hoverinfo="skip"))
    fig.add_hline(y=0, line=dict(color="gray", width=1))
    fig.update_layout(title=_title("Alignment with the label unembeddings before (θ) and after (Qθ) the rotation"
                                   + runs_note(rows), model_name),
                      xaxis_title="injection layer l", yaxis_title="cos(v, ū)  (ū: mean label direction)",
                      template="plotly_white", width=1000, height=560)
    return fig


__all__ = ["lens_heatmap", "reconstruction_figure", "transition_figure", "alignment_figure"]
