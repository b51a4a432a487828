"""``<out>/index.html``: every figure of an output folder with its PNG thumbnail, a one-line caption, a key number
and its provenance (device, date, preset, seeds), opening offline (plain HTML, no script). Captions and key
numbers are those the steps register with their figures (:class:`~tvmech.pipeline.registry.Figure`).

Written at the end of ``python -m tvmech.pipeline`` (and by :func:`write_index` for any folder). Deterministic:
the same figures and JSON give the same bytes. Sub-folders that hold their own ``index.html`` (another model's
run, e.g. ``figures/gemma3``) are linked at the top.
"""

from __future__ import annotations

import html
from pathlib import Path

from tvmech.pipeline import steps  # noqa: F401  (registers the steps and their figures)
from tvmech.pipeline.registry import Figure, figure
from tvmech.pipeline.store import ResultStore


def key_text(fig: Figure, rows: list[dict]) -> str:
    """The one-line key number of ``fig`` from its table's rows (``""`` when it has none, or its rows are of an
    older format)."""
    try:
        return fig.key_number(rows) if fig.key_number is not None and rows else ""
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


def _entry(store: ResultStore, name: str) -> str:
    fig = figure(name)  # registered: its caption, key number and table; else named after its table
    table = fig.table if fig is not None else name
    saved = store.load(table)
    rows, meta = (saved.rows, saved.meta) if saved is not None else ([], {})
    caption = fig.caption if fig is not None else name.replace("_", " ")
    key = key_text(fig, rows) if fig is not None else ""
    thumb = (f'<img src="{name}.png" alt="{html.escape(name)}" loading="lazy">' if store.has_png(name)
             else '<div class="nopng">no PNG (open the interactive figure)</div>')
    data_links = f' · <a href="{table}.json">data</a>' if saved is not None else ""
    return (f'<figure><a href="{name}.html">{thumb}</a><figcaption><b><a href="{name}.html">{html.escape(name)}</a>'
            f"</b> — {html.escape(caption)}" + (f"<br><span class=key>{html.escape(key)}</span>" if key else "")
            + (f"<br><small>{html.escape(_provenance(meta))}{data_links}</small>" if meta else "")
            + "</figcaption></figure>")


def write_index(store: ResultStore, title: str = "tvmech figures") -> Path:
    """Write the gallery ``<out>/index.html``, listing every figure of the store (and linking sub-folder
    galleries).

    Args:
        store: a figures folder.
        title: the page title.

    Returns:
        The path of the index.
    """
    names, subs = store.figure_names(), store.galleries()
    links = "".join(f'<li><a href="{s}/index.html">{html.escape(s)}/</a></li>' for s in subs)
    body = "\n".join(_entry(store, n) for n in names)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} main{{display:grid;grid-template-columns:repeat(auto-fill,
minmax(360px,1fr));gap:1.5em}} figure{{margin:0}} img{{width:100%;border:1px solid #ddd}} .key{{color:#333}}
.nopng{{height:120px;border:1px dashed #bbb;display:flex;align-items:center;justify-content:center;color:#777}}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(names)} figures in {html.escape(str(store.root))}; click one for the interactive version.</p>
{f"<p>Other runs:</p><ul>{links}</ul>" if links else ""}
<main>
{body}
</main></body></html>
"""
    return store.write_index(page)


__all__ = ["write_index", "key_text"]
