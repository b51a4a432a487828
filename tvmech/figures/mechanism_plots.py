"""Figure builders of the mechanism experiments (issue 4): rows in, ``go.Figure`` out. Only means over
rows are taken here; all numbers come from ``tvmech.experiments.{ov_reconstruction,key_heads,sinks}``."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from tvmech.analysis.heads import mean_std
from tvmech.figures.plots import PALETTE

METHOD_LABELS = {
    "zero_shot": "zero-shot", "ltv": "full LTV",
    # rows of issue 11 (named for what they are)
    "ov_direct": "OV direct (final layer)", "ov_direct_layerwise": "OV direct, layer by layer (attn_out)",
    "ov_paper": "OV, paper-literal (raw θ, unweighted, l' ≥ l+1)", "mlp_direct": "MLP direct path",
    "mlp_direct_layerwise": "MLP direct path, layer by layer", "mlp_total_measured": "MLP, total measured change",
    "mlp_total_measured_layerwise": "MLP total measured, layer by layer",
    "attn_total_measured": "attention, total measured change",
    "attn_mlp_total_measured": "attention + MLP, total measured", "theta_final": "θ itself at the final layer",
    "path_v": "θ through values only", "path_qk": "θ through queries/keys only", "path_mlp": "θ through MLPs only",
    "path_v+qk+mlp": "θ through values, queries/keys and MLPs",
    # rows of the first computation (figures/ov_reconstruction.json of 2026-11-24)
    "ov": "OV reconstruction", "ov_layerwise": "OV, layer by layer",
    "ov_unweighted": "OV, unweighted", "ov_raw": "OV, raw θ (no norm)", "mlp": "MLP reconstruction",
    "mlp_layerwise": "MLP, layer by layer", "attn": "measured attention change",
    "attn_mlp": "measured attention + MLP change",
}
# the others start hidden (click the legend); so do scaled variants (method "<name>@<α>")
SHOWN = ("zero_shot", "ltv", "ov", "mlp", "attn", "attn_mlp", "ov_direct", "ov_direct_layerwise", "ov_paper",
         "mlp_direct", "mlp_total_measured", "attn_total_measured", "theta_final", "path_v", "path_qk", "path_mlp")


def _label(method: str) -> str:
    name, _, alpha = method.partition("@")
    return METHOD_LABELS.get(name, name) + (f", α = {alpha}" if alpha else "")


def _suffix(model_name: str) -> str:
    return f" — {model_name}" if model_name else ""


def _mean(values: Sequence[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _std(values: Sequence[float]) -> float:
    values = list(values)
    return mean_std(values)[1] if values else 0.0


# random comparison sets (the ``set`` of their rows) -> legend label; rows saved before issue 11 have "random" only
RANDOM_LABELS = {"random_layer_matched": "layer-matched random heads", "random": "random heads (all layers)"}
SCORE_LABELS = {"tv_reliance": "TV-reliance score |(a_θ − a_clean)·∂p/∂a|", "paper": "Taylor score |a·∂p/∂a|"}


def _score_label(rows: Sequence[dict]) -> str:
    """The head score of ``rows`` (rows without a ``score`` predate issue 11 and used the paper's)."""
    scores = list(dict.fromkeys(r.get("score", "paper") for r in rows)) or ["paper"]
    return " / ".join(SCORE_LABELS.get(s, s) for s in scores)


def _primary_scoring(rows: Sequence[dict]) -> tuple[list[dict], str]:
    """The rows of each task's primary scoring (that of its first row; rows without ``scoring``, saved before
    there were several, are all kept) and a title note naming the scorings drawn."""
    first: dict[str, str | None] = {}
    for r in rows:
        first.setdefault(r["task"], r.get("scoring"))
    drawn = [s for s in dict.fromkeys(first.values()) if s]
    note = f", scored by {' / '.join(drawn)} (each task's primary scoring)" if drawn else ""
    return [r for r in rows if r.get("scoring") == first[r["task"]]], note


def reconstruction_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Accuracy per task (and the mean) of zero-shot, the full LTV, each reconstruction without θ (each α) and
    each path-restricted run; draws the rows of the first computation (``method`` only) and those of issue
    11 (``variant``, ``path``, ``alpha`` besides ``method``) alike; only each task's primary scoring."""
    rows, note = _primary_scoring(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    layer = rows[0]["layer"] if rows else None
    fig = go.Figure()
    for i, m in enumerate(methods):
        acc = {r["task"]: r["accuracy"] for r in rows if r["method"] == m}
        y = [acc.get(t) for t in tasks] + [_mean(acc.values())]
        fig.add_trace(go.Bar(x=tasks + ["mean"], y=y, name=_label(m),
                             marker_color=PALETTE[i % len(PALETTE)], visible=True if m in SHOWN else "legendonly",
                             hovertemplate=f"{_label(m)}<br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="group", template="plotly_white", width=1400, height=560,
                      title=f"What carries a layer-{layer} LTV: accuracy with θ replaced by its OV / MLP / attention "
                            f"effects, or shown only to some paths{note}{_suffix(model_name)}",
                      yaxis=dict(title="test accuracy", range=[0, 1.02]), legend=dict(title="method"))
    return fig


def _agreement(row: dict) -> str:
    """``ρ=0.95, P@14=0.71`` (precision@k only in rows of issue 11)."""
    out = f"ρ={row['spearman']:.2f}"
    return out + (f", P@{row['k_precision']}={row['precision_at_k']:.2f}" if "precision_at_k" in row else "")


def taylor_exact_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Taylor score against the exact zero-ablation effect for the checked heads, one colour per task."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = go.Figure()
    floor = 1e-7
    for i, t in enumerate(tasks):
        mine = [r for r in rows if r["task"] == t]
        fig.add_trace(go.Scatter(
            x=[max(r["taylor"], floor) for r in mine], y=[max(r["exact"], floor) for r in mine], mode="markers",
            name=f"{t} ({_agreement(mine[0])})", marker=dict(color=PALETTE[i % len(PALETTE)], size=7),
            customdata=[[r["layer"], r["head"], r["rank"]] for r in mine],
            hovertemplate=f"{t}<br>L%{{customdata[0]}}H%{{customdata[1]}} (rank %{{customdata[2]}})<br>"
                          "Taylor %{x:.2e}<br>exact %{y:.2e}<extra></extra>"))
    lo = min([max(min(r["taylor"], r["exact"]), floor) for r in rows] or [floor])
    hi = max([max(r["taylor"], r["exact"]) for r in rows] or [1.0])
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line=dict(dash="dash", color="gray")))
    rho = _mean({r["task"]: r["spearman"] for r in rows}.values())
    prec = {r["task"]: r["precision_at_k"] for r in rows if "precision_at_k" in r}
    stat = f"mean Spearman ρ = {rho:.2f}" + (f", mean precision@10% = {_mean(prec.values()):.2f}" if prec else "")
    fig.update_layout(title=f"{_score_label(rows)} vs exact zero-ablation effect mean|Δp| ({stat})"
                            f"{_suffix(model_name)}",
                      xaxis=dict(title=f"{_score_label(rows)} (one forward + backward)", type="log"),
                      yaxis=dict(title="exact ablation effect", type="log"), template="plotly_white",
                      width=1000, height=650, legend=dict(title="task (Spearman ρ, precision@k)"))
    return fig


def key_ablation_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """LTV accuracy with no ablation, with the key heads ablated, and with random sets of the same size
    (mean ± standard deviation over seeds), per task and averaged over tasks; only each task's primary scoring."""
    rows, note = _primary_scoring(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    x = tasks + ["mean"]
    size = next((r["size"] for r in rows if r["set"] == "key"), 0)
    fig = go.Figure()

    def per_task(sel):
        return {t: [r["accuracy"] for r in rows if r["task"] == t and sel(r)] for t in tasks}

    base = per_task(lambda r: r["set"] == "none")
    fig.add_trace(go.Bar(x=x, y=[_mean(base[t]) for t in tasks] + [_mean(_mean(v) for v in base.values())],
                         name="LTV, no ablation", marker_color=PALETTE[0]))
    kinds = [k for k in ("zero", "mean") if any(r["kind"] == k for r in rows)]
    for j, kind in enumerate(kinds):
        key = per_task(lambda r: r["set"] == "key" and r["kind"] == kind)
        fig.add_trace(go.Bar(x=x, y=[_mean(key[t]) for t in tasks] + [_mean(_mean(v) for v in key.values())],
                             name=f"key heads, {kind} ablation", marker_color=PALETTE[1 + 3 * j]))
        names = [n for n in RANDOM_LABELS if any(r["set"] == n for r in rows)]
        for i, name in enumerate(names):
            rnd = per_task(lambda r: r["set"] == name and r["kind"] == kind)
            seeds = sorted({r["seed"] for r in rows if r["set"] == name and r["kind"] == kind})
            by_seed = [_mean(r["accuracy"] for r in rows if r["set"] == name and r["kind"] == kind and r["seed"] == s)
                       for s in seeds]
            fig.add_trace(go.Bar(x=x, y=[_mean(rnd[t]) for t in tasks] + [_mean(by_seed)],
                                 error_y=dict(type="data", array=[_std(rnd[t]) for t in tasks] + [_std(by_seed)]),
                                 name=f"{RANDOM_LABELS[name]}, {kind} ablation (± sd over {len(seeds)} seeds)",
                                 marker_color=PALETTE[(2 + 3 * j + i) % len(PALETTE)]))
    fig.update_layout(barmode="group", template="plotly_white", width=1400, height=560,
                      title=f"Ablating the {size} key heads (highest {_score_label(rows)}) vs {size} random other "
                            f"heads, at the query position{note}{_suffix(model_name)}",
                      yaxis=dict(title="zero-shot + LTV test accuracy", range=[0, 1.05]))
    return fig


def key_layers_figure(rows: Sequence[dict], n_layers: int, injection_layer: int | None = None,
                      model_name: str = "") -> go.Figure:
    """Number of key heads per layer, stacked by task; the injection layer is marked."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig = go.Figure()
    for i, t in enumerate(tasks):
        counts = [sum(1 for r in rows if r["task"] == t and r["key"] and r["layer"] == l) for l in range(n_layers)]
        fig.add_trace(go.Bar(x=list(range(n_layers)), y=counts, name=t, marker_color=PALETTE[i % len(PALETTE)]))
    if injection_layer is not None:
        fig.add_vline(x=injection_layer - 0.5, line=dict(dash="dash", color="black"),
                      annotation_text=f"θ injected at layer {injection_layer}", annotation_position="top right")
    fig.update_layout(barmode="stack", template="plotly_white", width=1100, height=520,
                      title=f"Where the key heads are: layer histogram over {len(tasks)} tasks{_suffix(model_name)}",
                      xaxis=dict(title="layer", dtick=1), yaxis_title="key heads (summed over tasks)",
                      legend=dict(title="task"))
    return fig


def sinks_figure(rows: Sequence[dict], model_name: str = "", threshold: float | None = None) -> go.Figure:
    """Attention from the query position (mean over tasks): key heads vs random heads (± sd over seeds), the
    layer-matched sets beside the all-layer ones where the rows have them."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    labels = {"first": "to first token", "self": "to itself", "injected": "to injected position", "rest": "to the rest",
              "sink_rate": f"sink rate (first > {threshold})" if threshold is not None else "sink rate"}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    key = [_mean(r["value"] for r in rows if r["set"] == "key" and r["metric"] == m) for m in metrics]
    xs = [labels.get(m, m) for m in metrics]
    fig = go.Figure([go.Bar(x=xs, y=key, name="key heads", marker_color=PALETTE[1], text=[f"{v:.2f}" for v in key],
                            textposition="outside")])
    for i, name in enumerate(n for n in RANDOM_LABELS if any(r["set"] == n for r in rows)):
        seeds = sorted({r["seed"] for r in rows if r["set"] == name})
        per_seed = {m: [_mean(r["value"] for r in rows if r["set"] == name and r["metric"] == m and r["seed"] == s)
                        for s in seeds] for m in metrics}
        fig.add_trace(go.Bar(x=xs, y=[_mean(per_seed[m]) for m in metrics],
                             name=f"{RANDOM_LABELS[name]} (± sd over {len(seeds)} sets)",
                             error_y=dict(type="data", array=[_std(per_seed[m]) for m in metrics]),
                             marker_color=PALETTE[2 + i], text=[f"{_mean(per_seed[m]):.2f}" for m in metrics],
                             textposition="inside"))
    fig.update_layout(barmode="group", template="plotly_white", width=1000, height=520,
                      title=f"Attention sinks: key heads ({_score_label(rows)}) vs random heads, mean over "
                            f"{len(tasks)} tasks{_suffix(model_name)}",
                      yaxis=dict(title="mean attention from the query position / share of prompts", range=[0, 1.05]))
    return fig
