"""Figure builders of the mechanism experiments (issue 4): rows in, ``go.Figure`` out. Only means over
rows are taken here; all numbers come from ``tvmech.experiments.{ov_reconstruction,key_heads,sinks}``."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.colors import qualitative

from tvmech.analysis.head_verdicts import comparison, taylor_agreement
from tvmech.plots.spread import error_bars, over_runs, run_seeds, runs_note
from tvmech.plots.style import PALETTE

# one colour per reconstruction variant (there are more than ten): scaled copies share their variant's colour
VARIANT_COLOURS = qualitative.Dark24

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
    "path_v+qk+mlp": "θ through values, queries/keys and MLPs", "path_all": "θ through every path (= the LTV)",
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


# random comparison sets (the ``set`` of their rows) -> legend label; rows saved before issue 11 have "random" only
RANDOM_LABELS = {"random_layer_matched": "layer-matched random heads", "random": "random heads (all layers)"}
ABLATIONS = {"zero": "zero ablation (z = 0)", "mean": "mean ablation (z = mean clean z)"}
SCORE_LABELS = {"tv_reliance": "TV-reliance score |(a_θ − a_clean)·∂p/∂a|", "paper": "Taylor score |a·∂p/∂a|"}


def _score_label(rows: Sequence[dict]) -> str:
    """The head score of ``rows`` (rows without a ``score`` predate issue 11 and used the paper's)."""
    scores = list(dict.fromkeys(r.get("score", "paper") for r in rows)) or ["paper"]
    return " / ".join(SCORE_LABELS.get(s, s) for s in scores)


def by_scoring(rows: Sequence[dict], scoring: str = "own") -> list[dict]:
    """The rows of one scoring: ``"own"`` keeps each task's own (its first ``scoring``; rows without one are
    kept), any other name keeps the rows scored that way."""
    if scoring != "own":
        return [r for r in rows if r.get("scoring") == scoring]
    own: dict[str, str | None] = {}
    for r in rows:
        own.setdefault(r["task"], r.get("scoring"))
    return [r for r in rows if r.get("scoring") == own[r["task"]]]


SCORING_NOTES = {"own": "each task's own scoring (label set for classification tasks)",
                 "first_token": "full-vocabulary first-token scoring", "label_set": "label-set scoring"}


def _scoring_note(rows: Sequence[dict], scoring: str) -> str:
    return f"; {SCORING_NOTES.get(scoring, scoring)}" if any("scoring" in r for r in rows) else ""


def reconstruction_figure(rows: Sequence[dict], model_name: str = "", scoring: str = "own") -> go.Figure:
    """Accuracy per task (and the mean over tasks) of zero-shot, the full LTV, each reconstruction without θ (each
    α) and each path-restricted run, ± sd over run seeds where there are several; one colour per variant
    (scaled copies ``<name>@<α>`` share it, lighter, hidden at first).

    Args:
        rows: ``figures/ov_reconstruction.json`` rows (those of the first computation, with ``method`` only,
            too).
        model_name: shown in the title.
        scoring: which scoring's rows (:func:`by_scoring`).
    """
    all_rows, rows = rows, by_scoring(rows, scoring)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    variants = list(dict.fromkeys(m.partition("@")[0] for m in methods))
    layer = rows[0]["layer"] if rows else None
    per_task = over_runs(rows, lambda r: (r["method"], r["task"]), "accuracy")
    mean = over_runs(rows, lambda r: r["method"], "accuracy")
    fig = go.Figure()
    for m in methods:
        variant, _, alpha = m.partition("@")
        spreads = [per_task.get((m, t)) for t in tasks] + [mean[m]]
        fig.add_trace(go.Bar(x=tasks + ["mean"], y=[v.mean if v else None for v in spreads], name=_label(m),
                             marker_color=VARIANT_COLOURS[variants.index(variant) % len(VARIANT_COLOURS)],
                             opacity=0.55 if alpha else 1.0, error_y=error_bars(spreads),
                             visible=True if m in SHOWN else "legendonly",
                             hovertemplate=f"{_label(m)}<br>%{{x}}: %{{y:.3f}}<extra></extra>"))
    fig.update_layout(barmode="group", template="plotly_white", width=1400, height=560,
                      title=f"What carries a layer-{layer} LTV: accuracy with θ replaced by its OV / MLP / attention "
                            f"effects, or shown only to some paths{runs_note(rows)}{_scoring_note(all_rows, scoring)}"
                            f"{_suffix(model_name)}",
                      yaxis=dict(title="test accuracy", range=[0, 1.02]), legend=dict(title="method"))
    return fig


def alpha_sweep_figure(rows: Sequence[dict], model_name: str = "", scoring: str = "own") -> go.Figure:
    """Mean accuracy over tasks against the scale α of each re-injected effect (``<name>@<α>`` rows; α = 1 is
    the unscaled ``<name>``), zero-shot and the full LTV as dashed lines; ± sd over run seeds."""
    all_rows, rows = rows, by_scoring(rows, scoring)
    mean = over_runs(rows, lambda r: r["method"], "accuracy")
    alphas = {r["method"]: r.get("alpha") for r in rows}
    variants = list(dict.fromkeys(r["method"].partition("@")[0] for r in rows
                                  if r.get("variant") not in ("zero_shot", "ltv", "path_restricted")))
    fig = go.Figure()
    for i, v in enumerate(variants):
        points = sorted((alphas[m] if alphas[m] is not None else 1.0, m) for m in mean
                        if m.partition("@")[0] == v)
        fig.add_trace(go.Scatter(x=[a for a, _ in points], y=[mean[m].mean for _, m in points], mode="lines+markers",
                                 name=_label(v), line=dict(color=VARIANT_COLOURS[i % len(VARIANT_COLOURS)]),
                                 error_y=error_bars([mean[m] for _, m in points]),
                                 hovertemplate=f"{_label(v)}<br>α = %{{x}}<br>mean accuracy %{{y:.3f}}<extra></extra>"))
    for j, ref in enumerate(m for m in ("zero_shot", "ltv") if m in mean):
        fig.add_hline(y=mean[ref].mean, line=dict(dash="dash", color="gray" if ref == "zero_shot" else "black"),
                      annotation_text=f"{_label(ref)} {mean[ref].mean:.2f}", annotation_position="top left")
    fig.update_layout(template="plotly_white", width=1100, height=560,
                      title=f"Wrong direction or too small? Accuracy against the scale α of each re-injected effect"
                            f"{runs_note(rows)}{_scoring_note(all_rows, scoring)}{_suffix(model_name)}",
                      xaxis=dict(title="scale α of the re-injected effect", type="log"),
                      yaxis=dict(title="mean test accuracy over tasks", range=[0, 1.02]))
    return fig


def _agreement(row: dict) -> str:
    """``ρ=0.95, P@14=0.71`` (precision@k only in rows of issue 11)."""
    out = f"ρ={row['spearman']:.2f}"
    return out + (f", P@{row['k_precision']}={row['precision_at_k']:.2f}" if "precision_at_k" in row else "")


# the exact intervention of a Taylor-vs-exact comparison (tvmech.analysis.head_verdicts.comparison)
INTERVENTION_LABELS = {"revert": "revert to the clean z", "zero": "zero ablation"}


def taylor_exact_figure(rows: Sequence[dict], model_name: str = "") -> go.Figure:
    """Each head score against the exact effect mean|Δp| of an intervention, one panel per (score, intervention)
    comparison (rows saved before issue 24: TV-reliance vs zero ablation), one colour per task; the panel title
    says whether the score estimates that intervention and gives the mean ρ and precision@k over tasks."""
    from plotly.subplots import make_subplots

    all_rows = [{**r, "cmp": comparison(r)} for r in rows]
    first = run_seeds(all_rows)[0]
    shown = [r for r in all_rows if r.get("run_seed") == first]  # points of the first run seed; statistics over all
    cmps = list(dict.fromkeys(r["cmp"] for r in all_rows))
    tasks = list(dict.fromkeys(r["task"] for r in shown))
    summary = taylor_agreement(rows)["comparisons"]
    titles = []
    for score, kind in cmps:
        c = summary[f"{score}/{kind}"]
        stat = f"ρ = {c['spearman']:.2f}" + (f", P@k = {c['precision_at_k']:.2f} (null {c['precision_null']:.2f})"
                                             if c["precision_at_k"] is not None and c["precision_null"] else "")
        titles.append(f"{SCORE_LABELS.get(score, score).split(' ')[0]} vs {INTERVENTION_LABELS.get(kind, kind)}"
                      f"<br><sup>{'its first-order estimate' if c['estimates'] else 'not what it estimates'}; "
                      f"mean {stat}</sup>")
    fig = make_subplots(rows=1, cols=len(cmps), subplot_titles=titles, horizontal_spacing=0.08)
    floor = 1e-7
    for j, cmp in enumerate(cmps, start=1):
        for i, t in enumerate(tasks):
            mine = [r for r in shown if r["task"] == t and r["cmp"] == cmp]
            fig.add_trace(go.Scatter(
                x=[max(r["taylor"], floor) for r in mine], y=[max(r["exact"], floor) for r in mine], mode="markers",
                name=f"{t} ({_agreement(mine[0])})" if mine else t, legendgroup=t, showlegend=j == 1,
                marker=dict(color=PALETTE[i % len(PALETTE)], size=6), customdata=[[r["layer"], r["head"], r["rank"]]
                                                                                  for r in mine],
                hovertemplate=f"{t}<br>L%{{customdata[0]}}H%{{customdata[1]}} (rank %{{customdata[2]}})<br>"
                              "score %{x:.2e}<br>exact %{y:.2e}<extra></extra>"), row=1, col=j)
        mine = [r for r in shown if r["cmp"] == cmp]
        lo = min([max(min(r["taylor"], r["exact"]), floor) for r in mine] or [floor])
        hi = max([max(r["taylor"], r["exact"]) for r in mine] or [1.0])
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", showlegend=j == 1,
                                 legendgroup="y = x", line=dict(dash="dash", color="gray")), row=1, col=j)
        fig.update_xaxes(title_text=f"{cmp[0]} score (one forward + backward)", type="log", row=1, col=j)
        fig.update_yaxes(title_text=f"exact {INTERVENTION_LABELS.get(cmp[1], cmp[1])} mean|Δp|", type="log", row=1,
                         col=j)
    runs = len({r.get("run_seed") for r in all_rows})
    over = f" (means over tasks and {runs} run seeds; points of run seed {first})" if runs > 1 else ""
    fig.update_layout(title=f"Taylor head scores vs the exact interventions{over}{_suffix(model_name)}",
                      template="plotly_white", width=560 * len(cmps) + 240, height=620,
                      legend=dict(title="task (Spearman ρ, precision@k)"))
    return fig


def _set_bars(rows: Sequence[dict], sel, tasks: list[str], groups: Sequence[set] | None = None
              ) -> tuple[list[float], list[float], int]:
    """Per task and for each mean group the ``accuracy``/``value`` of the rows ``sel`` picks: the mean over
    run seeds (within a run: over random sets), and the error bar: sd over run seeds where there are several,
    else sd over the random sets (``seed``) of the one run. Also the number of runs or sets behind the bars.

    ``groups``: per mean bar, the ``(run_seed, task)`` pairs it averages over (``None``: one mean over all the
    selected rows); a selection that lacks one of a group's pairs gets no bar there (``None``), so that every
    bar of a group is a mean over the same tasks."""
    mine = [r for r in rows if sel(r)]
    field = "accuracy" if mine and "accuracy" in mine[0] else "value"
    runs = len(run_seeds(mine))
    have = {(r.get("run_seed"), r["task"]) for r in mine}
    subsets = [mine] if groups is None else [
        [r for r in mine if (r.get("run_seed"), r["task"]) in g] if g <= have else None for g in groups]
    if runs > 1:
        task = over_runs(mine, lambda r: r["task"], field)
        means = [over_runs(sub, lambda r: 0, field).get(0) if sub else None for sub in subsets]
        spreads = [task.get(t) for t in tasks] + means
        return [s.mean if s else None for s in spreads], [s.sd if s else 0.0 for s in spreads], runs
    # one run: the spread over the random sets (a set's value: its mean over tasks for a mean bar)
    by_set = over_runs([{**r, "run_seed": r.get("seed")} for r in mine], lambda r: r["task"], field)
    means = [over_runs([{**r, "run_seed": r.get("seed")} for r in sub], lambda r: 0, field).get(0) if sub else None
             for sub in subsets]
    spreads = [by_set.get(t) for t in tasks] + means
    n_sets = len({r.get("seed") for r in mine})
    return [s.mean if s else None for s in spreads], [s.sd if s else 0.0 for s in spreads], n_sets


def mean_groups(rows: Sequence[dict], sels: Sequence) -> list[tuple[str, set]]:
    """The mean bars of a figure whose bars are the selections ``sels``: ``("mean", all (run seed, task)
    pairs)``, and where some bar lacks some pairs (a layer-matched set that cannot be drawn for a task), also
    ``("mean, n of N tasks", the pairs every bar has)``."""
    pairs = {(r.get("run_seed"), r["task"]) for r in rows}
    common = set(pairs)
    for sel in sels:
        common &= {(r.get("run_seed"), r["task"]) for r in rows if sel(r)}
    out = [("mean", pairs)]
    if common != pairs and common:
        runs = len({run for run, _ in pairs})
        what = f"{len(common)} of {len(pairs)} (seed, task) pairs" if runs > 1 else f"{len(common)} of " \
               f"{len(pairs)} tasks"
        out.append((f"mean over the {what} with every set", common))
    return out


def key_ablation_figure(rows: Sequence[dict], model_name: str = "", scoring: str = "own") -> go.Figure:
    """LTV accuracy with no ablation, with the key heads ablated (zero: z = 0, mean: z = the mean clean z), and
    with random sets of the same size, per task and averaged over tasks; error bars: sd over run seeds where
    there are several, else over the random sets. Every bar of a mean group averages the same tasks: where a
    set is missing for some tasks (layer-matched), it has no bar in the all-tasks mean and a second mean group
    covers the tasks every set has."""
    all_rows, rows = rows, by_scoring(rows, scoring)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    size = next((r["size"] for r in rows if r["set"] == "key"), 0)
    runs = len(run_seeds(rows))
    kinds = [k for k in ("zero", "mean") if any(r["kind"] == k for r in rows)]
    names = [n for n in RANDOM_LABELS if any(r["set"] == n for r in rows)]
    bars = [(lambda r: r["set"] == "none", "LTV, no ablation", PALETTE[0], False)]
    for j, kind in enumerate(kinds):
        bars.append((lambda r, k=kind: r["set"] == "key" and r["kind"] == k, f"key heads, {ABLATIONS[kind]}",
                     PALETTE[1 + 3 * j], False))
        bars += [(lambda r, k=kind, n=name: r["set"] == n and r["kind"] == k, f"{RANDOM_LABELS[name]}, "
                  f"{ABLATIONS[kind]}", PALETTE[(2 + 3 * j + i) % len(PALETTE)], True) for i, name in enumerate(names)]
    groups = mean_groups(rows, [b[0] for b in bars])
    x = tasks + [g[0] for g in groups]
    fig = go.Figure()
    for sel, name, colour, random in bars:
        y, err, n = _set_bars(rows, sel, tasks, [g[1] for g in groups])
        spread = f" (± sd over {n} {'run seeds' if runs > 1 else 'sets'})" if (random or runs > 1) and n > 1 else ""
        fig.add_trace(go.Bar(x=x, y=y, name=name + spread, marker_color=colour,
                             error_y=dict(type="data", array=err) if n > 1 else None))
    fig.update_layout(barmode="group", template="plotly_white", width=1400, height=560,
                      title=f"Ablating the {size} key heads (highest {_score_label(rows)}) vs {size} random other "
                            f"heads, at the query position{runs_note(rows)}{_scoring_note(all_rows, scoring)}"
                            f"{_suffix(model_name)}",
                      yaxis=dict(title="zero-shot + LTV test accuracy", range=[0, 1.05]))
    return fig


def key_layers_figure(rows: Sequence[dict], n_layers: int, injection_layer: int | None = None,
                      model_name: str = "") -> go.Figure:
    """Number of key heads per layer, stacked by task; the injection layer is marked."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    runs = len(run_seeds(rows))
    fig = go.Figure()
    for i, t in enumerate(tasks):
        counts = [sum(1 for r in rows if r["task"] == t and r["key"] and r["layer"] == l) / runs
                  for l in range(n_layers)]
        fig.add_trace(go.Bar(x=list(range(n_layers)), y=counts, name=t, marker_color=PALETTE[i % len(PALETTE)]))
    if injection_layer is not None:
        fig.add_vline(x=injection_layer - 0.5, line=dict(dash="dash", color="black"),
                      annotation_text=f"θ injected at layer {injection_layer}", annotation_position="top right")
    fig.update_layout(barmode="stack", template="plotly_white", width=1100, height=520,
                      title=f"Where the key heads are: layer histogram over {len(tasks)} tasks"
                            f"{f' (mean over {runs} run seeds)' if runs > 1 else ''}{_suffix(model_name)}",
                      xaxis=dict(title="layer", dtick=1), yaxis_title="key heads (summed over tasks)",
                      legend=dict(title="task"))
    return fig


def sinks_figure(rows: Sequence[dict], model_name: str = "", threshold: float | None = None) -> go.Figure:
    """Attention from the query position (mean over tasks): key heads vs random heads (± sd over seeds), the
    layer-matched sets beside the all-layer ones where the rows have them. Every bar averages the same tasks: those
    every set has (a layer-matched set cannot be drawn for some tasks), the title says how many."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    labels = {"first": "to first token", "self": "to itself", "injected": "to injected position", "rest": "to the rest",
              "sink_rate": f"sink rate (first > {threshold})" if threshold is not None else "sink rate"}
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    runs = len(run_seeds(rows))
    xs = [labels.get(m, m) for m in metrics]
    names = [n for n in RANDOM_LABELS if any(r["set"] == n for r in rows)]
    sels = [lambda r: r["set"] == "key"] + [lambda r, n=n: r["set"] == n for n in names]
    common = mean_groups(rows, sels)[-1][1]  # the (run seed, task) pairs every set has
    shared = list(dict.fromkeys(t for t in tasks if any(t == task for _, task in common)))

    def bars(sel):  # per metric: the mean over the shared tasks, its sd over run seeds (one run: over random sets)
        got = [_set_bars(rows, lambda r, m=m: sel(r) and r["metric"] == m, [], [common]) for m in metrics]
        return [g[0][-1] for g in got], [g[1][-1] for g in got], max((g[2] for g in got), default=0)

    def text(ys):
        return ["" if v is None else f"{v:.2f}" for v in ys]

    key, key_err, n_key = bars(sels[0])
    fig = go.Figure([go.Bar(x=xs, y=key, name="key heads" + (f" (± sd over {n_key} run seeds)" if runs > 1 else ""),
                            marker_color=PALETTE[1], text=text(key), textposition="outside",
                            error_y=dict(type="data", array=key_err) if runs > 1 else None)])
    for i, (name, sel) in enumerate(zip(names, sels[1:])):
        y, err, n = bars(sel)
        over = "run seeds" if runs > 1 else "sets"
        fig.add_trace(go.Bar(x=xs, y=y, name=f"{RANDOM_LABELS[name]} (± sd over {n} {over})",
                             error_y=dict(type="data", array=err), marker_color=PALETTE[2 + i],
                             text=text(y), textposition="inside"))
    over_tasks = f"{len(tasks)} tasks" if len(shared) == len(tasks) else \
        f"the {len(shared)} of {len(tasks)} tasks every set has"
    fig.update_layout(barmode="group", template="plotly_white", width=1000, height=520,
                      title=f"Attention sinks: key heads ({_score_label(rows)}) vs random heads, mean over "
                            f"{over_tasks}{runs_note(rows)}{_suffix(model_name)}",
                      yaxis=dict(title="mean attention from the query position / share of prompts", range=[0, 1.05]))
    return fig
