"""The colours every figure builder shares, and :func:`readable`: the layout pass every drawn figure goes through
so that it reads whole in a 1200×800 window and in the gallery's thumbnails (title wrapped, legend below the plot,
no wider than the window)."""

from __future__ import annotations

import textwrap

import plotly.graph_objects as go

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6",
           "#9D755D", "#BAB0AC"]
MAX_WIDTH, MAX_HEIGHT = 1200, 800  # px: the window a figure must fit without scrolling (and the largest PNG)
TITLE_PX = 9.5  # px per character of a title (17 px sans-serif, generous: wide glyphs such as "W", "—")
LINE_PX = 24  # px per title line
TITLE_ROOM = 220  # px of the width a title leaves free (its margin, plotly's mode bar at the top right)
TICK_CHARS = 16  # category labels longer than this are wrapped
LEGEND_BELOW = 12  # a legend of up to this many entries goes below the plot (a longer one stays at the right)


def wrap(text: str, chars: int) -> str:
    """``text`` with ``<br>`` inserted so that no line is longer than ``chars`` (existing ``<br>`` kept; a
    word longer than a line stays whole)."""
    return "<br>".join(textwrap.fill(part, chars, break_long_words=False, break_on_hyphens=False).replace("\n", "<br>")
                       for part in text.split("<br>"))


def _legend_rows(names: list[str], width: int) -> int:
    """How many rows a horizontal legend of ``names`` takes in ``width`` px (an estimate: 40 px + 7 px a
    character per entry)."""
    rows, used = 1, 0
    for name in names:
        entry = 40 + 7 * len(name)
        if used and used + entry > width:
            rows, used = rows + 1, 0
        used += entry
    return rows


def _wrap_categories(fig: go.Figure, chars: int = TICK_CHARS) -> None:
    """Wrap the long category labels of every x axis (tick text; the categories themselves are unchanged)."""
    by_axis: dict[str, list[str]] = {}
    for t in fig.data:
        xs = getattr(t, "x", None)
        if xs is not None and len(xs) and all(isinstance(x, str) for x in xs):
            cats = by_axis.setdefault("xaxis" + (t.xaxis or "x")[1:], [])
            cats += [x for x in xs if x not in cats]
    for axis, cats in by_axis.items():
        if any(len(c) > chars and "<br>" not in c for c in cats):
            fig.update_layout({axis: dict(tickmode="array", tickvals=cats, ticktext=[wrap(c, chars) for c in cats],
                                          tickangle=-30, automargin=True)})


def readable(fig: go.Figure) -> go.Figure:
    """Fit ``fig`` to a :data:`MAX_WIDTH` × :data:`MAX_HEIGHT` window (in place; returned for chaining): width
    capped; the title wrapped to the width, top-left, with the top margin grown to hold its lines; long category
    labels wrapped; a legend of 2 to :data:`LEGEND_BELOW` entries laid out horizontally at the bottom of the figure
    (long entries then neither narrow the plot nor get cut off); the height grown (up to :data:`MAX_HEIGHT`, a
    taller figure kept as it is) by what the title and legend take. The HTML page of a figure takes the window's
    width (:func:`tvmech.plots.export.figure_html`).

    Args:
        fig: a drawn figure.

    Returns:
        ``fig``.
    """
    width = min(fig.layout.width or MAX_WIDTH, MAX_WIDTH)
    height = fig.layout.height or 500
    extra = 0
    title = fig.layout.title.text
    if title:
        text = wrap(title, int((width - TITLE_ROOM) / TITLE_PX))
        lines = text.count("<br>") + 1
        top = max(fig.layout.margin.t or 0, 36 + LINE_PX * lines)
        extra += top - (fig.layout.margin.t or 80)
        fig.update_layout(title=dict(text=text, x=0.01, xanchor="left", yanchor="top", yref="container"),
                          margin=dict(t=top))
    _wrap_categories(fig)
    names = [t.name for t in fig.data if t.showlegend is not False and t.name]
    if 1 < len(names) <= LEGEND_BELOW and fig.layout.showlegend is not False:
        fig.update_layout(legend=dict(orientation="h", x=0, xanchor="left", y=0, yanchor="bottom", yref="container"))
        extra += 22 * _legend_rows(names, width - 100)
    fig.update_layout(width=width, height=max(height, min(MAX_HEIGHT, height + extra)))
    if title:
        fig.layout.title.y = 1 - 14 / fig.layout.height  # 14 px from the top
    return fig


__all__ = ["PALETTE", "MAX_WIDTH", "MAX_HEIGHT", "wrap", "readable"]
