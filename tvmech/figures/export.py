"""Writing a figure: interactive HTML, a static PNG where a browser exists, and the data as JSON + CSV."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from tvmech.core.io import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)
PNG_HINT = "PNG export needs Chrome or Chromium for kaleido: `apt-get install chromium` (Debian) or `plotly_get_chrome`"


def write_table(path: Path, rows: Sequence[dict]) -> None:
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


PLOTLY_JS = "plotly.min.js"


def ensure_plotlyjs(out_dir: Path) -> Path:
    """``out_dir/plotly.min.js``: the plotly.js bundled with the installed plotly, (re)written atomically when
    missing or different (a truncated copy from an interrupted run is repaired)."""
    from plotly.offline import get_plotlyjs

    path = Path(out_dir) / PLOTLY_JS
    js = get_plotlyjs().encode()
    if not path.is_file() or path.stat().st_size != len(js) or path.read_bytes() != js:
        atomic_write_bytes(path, js)
    return path


def save_table(out_dir: Path, name: str, rows: Sequence[dict], meta: dict | None = None) -> dict[str, Path]:
    """Write ``name.json`` (``{"meta", "rows"}``) and ``name.csv``; returns their paths."""
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / f"{name}.json", json.dumps({"meta": meta or {}, "rows": list(rows)}, indent=2) + "\n")
    write_table(out_dir / f"{name}.csv", rows)
    return {"json": out_dir / f"{name}.json", "csv": out_dir / f"{name}.csv"}


def save_figure(fig: go.Figure, out_dir: Path, name: str, rows: Sequence[dict] | None = None,
                meta: dict | None = None, png: bool = True) -> dict[str, Path | None]:
    """Write ``name.html`` (plotly.js kept once beside it), ``name.png``, ``name.json`` and ``name.csv``.

    The HTML is deterministic (the plot's element id is ``name``; no timestamps): an unchanged figure leaves its
    HTML and PNG untouched (the PNG is drawn only for a changed figure or when missing). Without ``png`` a PNG
    of an earlier, different figure is removed (it would disagree with the HTML and JSON beside it).

    Returns the written paths; the PNG entry is ``None`` when no browser is available.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ensure_plotlyjs(out_dir)
    html = out_dir / f"{name}.html"
    page = fig.to_html(include_plotlyjs=PLOTLY_JS, full_html=True, div_id=name)
    changed = not html.is_file() or html.read_text(encoding="utf-8") != page
    if changed:
        atomic_write_text(html, page)
    written: dict[str, Path | None] = {"html": html, "png": None}
    if rows is not None:
        written.update(save_table(out_dir, name, rows, meta))
    if not png and changed and (out_dir / f"{name}.png").is_file():
        (out_dir / f"{name}.png").unlink()
        log.info("%s.png removed: it showed another figure than the new HTML (--no-png)", name)
    if png and (changed or not (out_dir / f"{name}.png").is_file()):
        try:
            atomic_write_bytes(out_dir / f"{name}.png", fig.to_image(format="png", scale=2))
            written["png"] = out_dir / f"{name}.png"
        except Exception as err:  # kaleido raises several types when no browser is found
            log.warning("%s.png not written (%s). %s", name, type(err).__name__, PNG_HINT)
    elif (out_dir / f"{name}.png").is_file():
        written["png"] = out_dir / f"{name}.png"  # the figure's own, unchanged
    return written
