"""Every drawn figure reads whole in a 1200×800 window and in the gallery's thumbnails: no wider than the window,
its title wrapped, a short legend below the plot inside the figure, long category labels wrapped; its HTML page
takes the window's width (no sideways scrolling)."""

import json
from pathlib import Path

import plotly.graph_objects as go
import pytest

from tvmech.pipeline.registry import Outcome
from tvmech.pipeline.steps import STEPS
from tvmech.plots.export import figure_html
from tvmech.plots.style import LEGEND_BELOW, MAX_HEIGHT, MAX_WIDTH, TITLE_PX, TITLE_ROOM, readable, wrap

FIGURES = Path(__file__).resolve().parents[3] / "figures"


def _check(fig: go.Figure) -> None:
    width = fig.layout.width
    assert width <= MAX_WIDTH
    title = fig.layout.title.text or ""
    assert all(len(line) <= (width - TITLE_ROOM) / TITLE_PX for line in title.split("<br>")), title
    entries = [t.name for t in fig.data if t.showlegend is not False and t.name]
    if 1 < len(entries) <= LEGEND_BELOW and fig.layout.showlegend is not False:
        legend = fig.layout.legend
        assert legend.orientation == "h" and legend.yref == "container" and 0 <= legend.y <= 1


def _figure(n_bars: int = 7, title_words: int = 60) -> go.Figure:
    fig = go.Figure([go.Bar(x=["a", "b", "mean over the 15 of 30 (seed, task) pairs with every set"], y=[1, 2, 3],
                            name=f"a long legend entry number {i} (± sd over 3 run seeds)") for i in range(n_bars)])
    return fig.update_layout(width=1400, height=560, title=" ".join(["word"] * title_words))


def test_readable_wraps_the_title_caps_the_width_and_puts_a_short_legend_below():
    fig = readable(_figure())
    _check(fig)
    assert fig.layout.width == MAX_WIDTH and fig.layout.title.text.count("<br>") >= 1
    assert 560 < fig.layout.height <= MAX_HEIGHT  # grown by the title's lines and the legend
    assert fig.layout.margin.t >= 36 + 24 * (fig.layout.title.text.count("<br>") + 1)
    labels = fig.layout.xaxis.ticktext
    assert list(fig.layout.xaxis.tickvals) == list(fig.data[0].x) and labels[:2] == ("a", "b")
    assert all(len(line) <= 16 for line in labels[2].split("<br>"))


def test_a_long_legend_stays_at_the_right_and_a_tall_figure_keeps_its_height():
    fig = _figure(n_bars=LEGEND_BELOW + 1).update_layout(height=1500)
    readable(fig)
    assert fig.layout.legend.orientation is None and fig.layout.height == 1500


def test_wrap_keeps_line_breaks_and_long_words():
    assert wrap("aaa bbb ccc<br>dd", 7) == "aaa bbb<br>ccc<br>dd"
    assert wrap("a_very_long_word x", 5) == "a_very_long_word<br>x"


def test_the_html_page_takes_the_window_width():
    fig = readable(_figure())
    page = figure_html(fig, "f").replace(" ", "")
    assert '"width":1200' not in page and '"responsive":true' in page
    assert fig.layout.width == MAX_WIDTH  # (the figure itself keeps its PNG width)
    assert '"width":1200' in fig.to_html(include_plotlyjs=False).replace(" ", "")


def test_the_committed_key_ablation_figure_fits_a_1200_window():
    path = FIGURES / "key_heads_ablation.json"
    if not path.is_file():
        pytest.skip("figures not computed")
    step = STEPS["key_heads"]
    tables = {t: json.loads((FIGURES / f"{t}.json").read_text())["rows"] for t in step.tables
              if (FIGURES / f"{t}.json").is_file()}
    drawn = step.draw(Outcome(step.config(), tables, {t: {} for t in tables}, computed=False), "SmolLM2")
    figs = {f.name: d for f, d in drawn}
    assert "key_heads_ablation" in figs
    for fig in figs.values():
        _check(fig)
    legend = figs["key_heads_ablation"].layout.legend
    assert legend.orientation == "h"
