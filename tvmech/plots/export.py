"""A figure and its rows as the bytes of their files: interactive HTML, PNG, JSON and CSV (pure: nothing is
written here; :class:`tvmech.pipeline.store.ResultStore` writes them).

The HTML is deterministic: the plot's element id is the figure's name, plotly.js is referenced as
:data:`PLOTLY_JS` beside it (:func:`plotly_js`), no timestamps; so the same figure gives the same bytes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

import plotly.graph_objects as go

PLOTLY_JS = "plotly.min.js"
PNG_HINT = "PNG export needs Chrome or Chromium for kaleido: `apt-get install chromium` (Debian) or `plotly_get_chrome`"


def figure_html(fig: go.Figure, name: str) -> str:
    """The figure as a full HTML page whose plot has the element id ``name`` and loads :data:`PLOTLY_JS`; the plot
    takes the window's width (its layout's width is the PNG's), so that no window scrolls sideways."""
    page = go.Figure(fig)
    page.layout.width = None
    return page.to_html(include_plotlyjs=PLOTLY_JS, full_html=True, div_id=name, config={"responsive": True})


def figure_png(fig: go.Figure) -> bytes:
    """The figure as a PNG at scale 2 (kaleido; raises when no Chrome or Chromium is found: :data:`PNG_HINT`)."""
    return fig.to_image(format="png", scale=2)


def plotly_js() -> bytes:
    """The plotly.js bundled with the installed plotly (what :data:`PLOTLY_JS` must hold)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode()


def table_json(rows: Sequence[dict], meta: dict | None = None) -> str:
    """A table's JSON file: ``{"meta", "rows"}``, indented, with a final newline."""
    return json.dumps({"meta": meta or {}, "rows": list(rows)}, indent=2) + "\n"


def table_csv(rows: Sequence[dict]) -> str:
    """The rows as CSV, one column per key in first-appearance order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


__all__ = ["PLOTLY_JS", "PNG_HINT", "figure_html", "figure_png", "plotly_js", "table_json", "table_csv"]
