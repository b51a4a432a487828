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


def save_figure(fig: go.Figure, out_dir: Path, name: str, rows: Sequence[dict] | None = None,
                meta: dict | None = None, png: bool = True) -> dict[str, Path | None]:
    """Write ``name.html`` (plotly.js kept once beside it), ``name.png``, ``name.json`` and ``name.csv``.

    Returns the written paths; the PNG entry is ``None`` when no browser is available.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / f"{name}.html"
    fig.write_html(str(out_dir / f".{name}.tmp.html"), include_plotlyjs="directory", full_html=True)
    (out_dir / f".{name}.tmp.html").replace(html)
    written: dict[str, Path | None] = {"html": html, "png": None}
    if rows is not None:
        data = {"meta": meta or {}, "rows": list(rows)}
        atomic_write_text(out_dir / f"{name}.json", json.dumps(data, indent=2) + "\n")
        write_table(out_dir / f"{name}.csv", rows)
        written["json"], written["csv"] = out_dir / f"{name}.json", out_dir / f"{name}.csv"
    if png:
        try:
            atomic_write_bytes(out_dir / f"{name}.png", fig.to_image(format="png", scale=2))
            written["png"] = out_dir / f"{name}.png"
        except Exception as err:  # kaleido raises several types when no browser is found
            log.warning("%s.png not written (%s). %s", name, type(err).__name__, PNG_HINT)
    return written
