"""``<out>/index.html``: every figure of an output folder with its PNG thumbnail, a one-line caption, a key number
and its provenance (device, date, preset, seeds), opening offline (plain HTML, no script).

Written at the end of ``python -m tvmech.figures`` (and by :func:`write_index` for any folder). Deterministic:
the same figures and JSON give the same bytes. Sub-folders that hold their own ``index.html`` (another model's
run, e.g. ``figures/gemma3``) are linked at the top.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path

from tvmech.core.io import atomic_write_text
from tvmech.figures.mechanism_plots import by_scoring
from tvmech.figures.spread import over_runs

CAPTIONS = {
    "icl_accuracy": "Zero-shot vs k-shot in-context accuracy per task.",
    "layer_sweep": "One task vector (LTV, Vanilla TV, function vector) injected at one layer: mean accuracy.",
    "layer_sweep_by_task": "The layer sweep per task.",
    "robustness": "LTV, Vanilla TV and FV accuracy in other injection configurations (layers, positions by role).",
    "task_cosine": "Cosine similarity between the tasks' LTVs.",
    "task_transfer": "One task's LTV applied to another task's prompts.",
    "composition": "Sums of two tasks' LTVs on composed tasks.",
    "peft": "LTV against prompt tuning and LoRA at matched training budgets.",
    "ov_reconstruction": "θ replaced by its OV / MLP / attention effects, or shown only to some paths.",
    "ov_reconstruction_first_token": "The same, scored by the full-vocabulary first token.",
    "ov_alpha_sweep": "Each re-injected effect scaled by α: a wrong direction or too small?",
    "ov_alpha_sweep_first_token": "The α sweep, full-vocabulary scoring.",
    "key_heads_ablation": "Ablating the key heads vs random head sets (layer-matched and all layers).",
    "key_heads_ablation_first_token": "Key-head ablation, full-vocabulary scoring.",
    "key_heads_taylor": "First-order (Taylor) head score against exact ablation.",
    "key_heads_layers": "Where the key heads sit, per layer.",
    "attention_sinks": "Attention from the query: key heads vs random heads.",
    "logit_lens": "Logit lens at the query: zero-shot, ICL and TV-injected runs.",
    "linear_map": "W_TV(l) θ at the final stream in place of the layers, and the fit quality.",
    "rotation_scaling": "Polar decomposition W_TV = QΣ: rotation distance, gain, singular values.",
    "rotation_alignment": "Alignment with the label directions before and after the rotation, with a null.",
    "rotation_by_layer": "The alignment at one injection layer (slider), decoded tokens on hover.",
    "logit_lens_by_layer": "The logit lens at one layer (slider), decoded top tokens on hover.",
    "key_heads_heatmap": "Every head's score; hover: exact ablation effect, key-head share, attention-sink statistics.",
}
# figures drawn from another figure's table
SOURCE = {"rotation_by_layer": "linear_map", "logit_lens_by_layer": "logit_lens",
          "key_heads_heatmap": "attention_sinks_heads", "layer_sweep_by_task": "layer_sweep",
          "rotation_scaling": "linear_map", "rotation_alignment": "linear_map",
          "ov_alpha_sweep": "ov_reconstruction", "ov_alpha_sweep_first_token": "ov_reconstruction",
          "ov_reconstruction_first_token": "ov_reconstruction",
          "key_heads_ablation_first_token": "key_heads_ablation"}


def _pm(rows: list[dict], sel: Callable[[dict], bool], field: str = "accuracy") -> str:
    s = over_runs([r for r in rows if sel(r)], lambda r: 0, field).get(0)
    return "—" if s is None else s.fmt()


def _best_layer(rows: list[dict]) -> str:
    ltv = over_runs([r for r in rows if r["method"] == "ltv"], lambda r: r["layer"], "accuracy")
    if not ltv:
        return ""
    layer = max(ltv, key=lambda l: ltv[l].mean)
    return (f"LTV best at layer {layer}: {_pm(rows, lambda r: r['method'] == 'ltv' and r['layer'] == layer)}; "
            f"zero-shot {_pm(rows, lambda r: r['method'] == 'zero_shot')}")


KEY_NUMBERS: dict[str, Callable[[list[dict]], str]] = {
    "icl_accuracy": lambda rows: "mean accuracy " + ", ".join(
        f"k={k}: {_pm(rows, lambda r, k=k: r['k'] == k)}" for k in sorted({r["k"] for r in rows})),
    "layer_sweep": lambda rows: _best_layer(by_scoring(rows)),  # each task's first scoring: the headline
    "ov_reconstruction": lambda rows: "LTV {}, zero-shot {}, θ through MLPs only {}, values only {}".format(
        *(_pm(by_scoring(rows), lambda r, m=m: r["method"] == m) for m in ("ltv", "zero_shot", "path_mlp", "path_v"))),
    "key_heads_ablation": lambda rows: "no ablation {}, key heads zero-ablated {}".format(
        _pm(by_scoring(rows), lambda r: r["set"] == "none"), _pm(by_scoring(rows), lambda r: r["set"] == "key"
                                                           and r["kind"] == "zero")),
    "attention_sinks": lambda rows: "attention to the first token: key heads {}, layer-matched random {}".format(
        _pm(rows, lambda r: r["set"] == "key" and r["metric"] == "first", "value"),
        _pm(rows, lambda r: r["set"] == "random_layer_matched" and r["metric"] == "first", "value")),
    "linear_map": lambda rows: "held-out R² of W_TV at the deepest layer: " + _pm(
        rows, lambda r: r["layer"] == max(x["layer"] for x in rows), "r2_heldout"),
}


def key_number(name: str, rows: list[dict]) -> str:
    """The one-line key number of figure or table ``name`` from its rows (``""`` when it has none, or its rows
    are of an older format)."""
    try:
        return KEY_NUMBERS[name](rows) if name in KEY_NUMBERS and rows else ""
    except (KeyError, TypeError, ValueError):
        return ""


def _provenance(meta: dict) -> str:
    settings = meta.get("settings", {})
    seeds = settings.get("seeds") or ([settings["seed"]] if "seed" in settings else [])
    parts = [meta.get("device", "device unknown"), meta.get("date", "date unknown")]
    parts += [f"preset {settings['preset']}"] if "preset" in settings else []
    parts += [f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"] if seeds else []
    parts += [f"model {settings['model']}"] if "model" in settings else []
    return " · ".join(str(p) for p in parts)


def _entry(out: Path, name: str) -> str:
    source = out / f"{SOURCE.get(name, name)}.json"
    data = json.loads(source.read_text()) if source.is_file() else {}
    rows, meta = data.get("rows", []), data.get("meta", {})
    caption = CAPTIONS.get(name) or (f"Synthetic ICL: {name.removeprefix('synthetic_').replace('_', ' ')}."
                                     if name.startswith("synthetic_") else name.replace("_", " "))
    key = key_number(name, rows)
    thumb = (f'<img src="{name}.png" alt="{html.escape(name)}" loading="lazy">' if (out / f"{name}.png").is_file()
             else '<div class="nopng">no PNG (open the interactive figure)</div>')
    data_links = f' · <a href="{source.name}">data</a>' if source.is_file() else ""
    return (f'<figure><a href="{name}.html">{thumb}</a><figcaption><b><a href="{name}.html">{html.escape(name)}</a>'
            f"</b> — {html.escape(caption)}" + (f"<br><span class=key>{html.escape(key)}</span>" if key else "")
            + (f"<br><small>{html.escape(_provenance(meta))}{data_links}</small>" if meta else "")
            + "</figcaption></figure>")


def write_index(out: Path, title: str = "tvmech figures") -> Path:
    """Write ``out/index.html`` listing every ``*.html`` figure of ``out`` (and linking sub-folder galleries).

    Args:
        out: a figures folder.
        title: the page title.

    Returns:
        The path of the index.
    """
    out = Path(out)
    names = sorted(p.stem for p in out.glob("*.html") if p.stem != "index")
    subs = sorted(p.parent.name for p in out.glob("*/index.html"))
    links = "".join(f'<li><a href="{s}/index.html">{html.escape(s)}/</a></li>' for s in subs)
    body = "\n".join(_entry(out, n) for n in names)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} main{{display:grid;grid-template-columns:repeat(auto-fill,
minmax(360px,1fr));gap:1.5em}} figure{{margin:0}} img{{width:100%;border:1px solid #ddd}} .key{{color:#333}}
.nopng{{height:120px;border:1px dashed #bbb;display:flex;align-items:center;justify-content:center;color:#777}}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(names)} figures in {html.escape(str(out))}; click one for the interactive version.</p>
{f"<p>Other runs:</p><ul>{links}</ul>" if links else ""}
<main>
{body}
</main></body></html>
"""
    path = out / "index.html"
    atomic_write_text(path, page)
    return path


__all__ = ["write_index", "key_number", "CAPTIONS"]
