"""Writing figures through the result store: deterministic HTML, a repaired plotly.js, no stale PNG; the gallery."""

import plotly.graph_objects as go

from tvmech.pipeline.store import PLOTLY_JS, ResultStore


def save_figure(fig, folder, name, rows=None, meta=None, png=True):
    return ResultStore(folder).save_figure(fig, name, rows, meta, png=png)


def _fig(y=(1, 2)):
    return go.Figure(go.Scatter(x=[0, 1], y=list(y)))


def test_redrawing_the_same_numbers_writes_identical_html(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_figure(_fig(), a, "f", [{"x": 1}], {"m": 1}, png=False)
    save_figure(_fig(), b, "f", [{"x": 1}], {"m": 1}, png=False)
    assert (a / "f.html").read_bytes() == (b / "f.html").read_bytes()
    assert 'id="f"' in (a / "f.html").read_text() and f'src="{PLOTLY_JS}"' in (a / "f.html").read_text()
    save_figure(_fig((1, 3)), b, "f", png=False)
    assert (a / "f.html").read_bytes() != (b / "f.html").read_bytes()


def test_a_truncated_plotly_js_is_repaired(tmp_path):
    save_figure(_fig(), tmp_path, "f", png=False)
    full = (tmp_path / PLOTLY_JS).read_bytes()
    assert len(full) > 1_000_000
    (tmp_path / PLOTLY_JS).write_bytes(full[:1000])
    save_figure(_fig(), tmp_path, "f", png=False)
    assert (tmp_path / PLOTLY_JS).read_bytes() == full


def test_no_png_removes_a_png_of_earlier_numbers(tmp_path):
    (tmp_path / "f.png").write_bytes(b"old")
    (tmp_path / "g.png").write_bytes(b"other figure")
    save_figure(_fig(), tmp_path, "f", png=False)
    assert not (tmp_path / "f.png").exists() and (tmp_path / "g.png").exists()
    (tmp_path / "f.png").write_bytes(b"png of this very figure")
    before = (tmp_path / "f.html").stat().st_mtime_ns
    assert save_figure(_fig(), tmp_path, "f", png=False)["png"] == tmp_path / "f.png"  # unchanged: kept
    assert (tmp_path / "f.html").stat().st_mtime_ns == before  # and the HTML is not rewritten
    save_figure(_fig((5, 6)), tmp_path, "f", png=False)
    assert not (tmp_path / "f.png").exists()


def _browser():
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_png_export_where_a_browser_exists(tmp_path):
    import pytest

    if _browser() is None:
        pytest.skip("no Chrome/Chromium on this machine: PNG export needs one (make setup installs it with apt-get)")
    paths = save_figure(_fig(), tmp_path, "f")
    assert paths["png"] is not None and (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_html_figure_renders_offline_in_headless_chromium(tmp_path):
    """The HTML opens from disk with the network blocked (plotly.js beside it) and draws an SVG plot."""
    import subprocess

    import pytest

    browser = _browser()
    if browser is None:
        pytest.skip("no Chrome/Chromium on this machine")
    save_figure(_fig(), tmp_path, "f", png=False)
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
                          "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "f.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'class="main-svg"' in out and "scatterlayer" in out


def test_index_lists_every_figure_with_caption_key_number_and_provenance_and_is_deterministic(tmp_path):
    from tvmech.pipeline.gallery import write_index

    rows = [{"task": "a", "k": k, "accuracy": a, "n": 2, "run_seed": s} for s in (0, 1) for k, a in ((0, 0.1 * s),
                                                                                                     (5, 0.5))]
    meta = {"device": "gpu-z", "date": "2026-12-01", "settings": {"seeds": [0, 1], "model": "m"}}
    save_figure(_fig(), tmp_path, "icl_accuracy", rows, meta, png=False)
    save_figure(_fig(), tmp_path, "unknown_thing", png=False)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "index.html").write_text("x")
    page = write_index(ResultStore(tmp_path)).read_text()
    assert page.count("<figure>") == 2 and 'href="icl_accuracy.html"' in page and 'href="sub/index.html"' in page
    assert "k=0: 0.05 ± 0.07, k=5: 0.50 ± 0.00" in page and "gpu-z · 2026-12-01 · seeds 0, 1 · model m" in page
    assert "no PNG" in page and "Zero-shot vs k-shot" in page
    first = (tmp_path / "index.html").read_bytes()
    write_index(ResultStore(tmp_path))
    assert (tmp_path / "index.html").read_bytes() == first
