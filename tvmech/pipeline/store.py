"""The result store: the one owner of an output folder's layout. Nothing else in the pipeline opens these files.

::

    <out>/<table>.json, <table>.csv       a step's numbers: {"meta": {settings, device, date, ...}, "rows": [...]}
    <out>/<figure>.html, <figure>.png     a figure (plotly.js once beside them: plotly.min.js)
    <out>/index.html                      the gallery
    <out>/.tasks/<table>/<job>.json       one job's numbers of a step computed job by job (its first table names
                                          the folder): {"settings", "tables", "device", "date"[, "rank"]}
    <out>/.tasks/.claims/<run id>/        the jobs claimed by the ranks of a torchrun run
    <out>/runs/seed<s>/                   the run of seed s of a multi-seed step (a store of its own)
    <out>/vectors/                        the LTVs (:class:`~tvmech.experiments.vectors.VectorStore`)
    <out>/synthetic/                      models trained by a step (the synthetic one)

Settings matching: saved numbers are reused when their ``meta.settings`` equal the settings of the run (the
config's, with the model's name; ``seeds`` instead of ``seed`` for gathered runs). Provenance: every table's
meta names the device and date of its numbers (:func:`fresh_meta`, :func:`provenance`). Writes are atomic.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
import torch

from tvmech.core.io import atomic_write_bytes, atomic_write_text, remove_partials, write_json
from tvmech.experiments.vectors import VectorStore
from tvmech.plots.export import PLOTLY_JS, PNG_HINT, figure_html, figure_png, plotly_js, table_csv, table_json

log = logging.getLogger("tvmech.pipeline")
TASKS, CLAIMS, RUNS = ".tasks", ".claims", "runs"
Tables = dict[str, list[dict]]
Metas = dict[str, dict]


def describe_device(device: str) -> str:
    """``'cpu'``, or the accelerator's name with the torch device, e.g. ``'NVIDIA H100 80GB HBM3 (cuda)'``."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    return str(device)


def fresh_meta(device: str, settings: dict) -> dict:
    """The ``meta`` of numbers computed now: ``{"settings", "device", "date"}``.

    Args:
        device: the torch device the numbers were computed on.
        settings: the experiment's settings (see ``Config.settings``), with the model's name.
    """
    return {"settings": settings, "device": describe_device(device), "date": time.strftime("%Y-%m-%d")}


def provenance(parts: Sequence[dict]) -> dict:
    """``{"device", "date"}`` of numbers gathered from ``parts`` (jobs or runs): their distinct devices joined
    by ``"; "`` and the latest date."""
    return {"device": "; ".join(dict.fromkeys(p.get("device", "?") for p in parts)),
            "date": max((p.get("date", "") for p in parts), default="")}


def gathered_meta(metas: dict[int, dict], settings: dict) -> dict:
    """The meta of a multi-seed table: the gathered settings, each run's device and date (and note)."""
    runs = [{"seed": s, **{k: m[k] for k in ("device", "date", "note") if k in m}} for s, m in metas.items()]
    return {"settings": settings, **provenance(list(metas.values())), "runs": runs}


@dataclass(frozen=True)
class Saved:
    """A saved table: its rows and meta."""

    rows: list[dict]
    meta: dict

    @property
    def settings(self) -> dict:
        return self.meta.get("settings", {})


class ResultStore:
    """An output folder (see the module docstring for its layout).

    Args:
        root: the folder (created on the first write).
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, ResultStore) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    # -- tables -------------------------------------------------------------------------------------------------
    def table_file(self, table: str) -> Path:
        """``<out>/<table>.json`` (for messages and links; read it with :meth:`load`)."""
        return self.root / f"{table}.json"

    def load(self, table: str) -> Saved | None:
        """The saved table, or ``None`` when there is none."""
        path = self.table_file(table)
        if not path.is_file():
            return None
        data = json.loads(path.read_bytes().decode("utf-8"))
        return Saved(list(data.get("rows", [])), dict(data.get("meta", {})))

    def load_matching(self, tables: Sequence[str], settings: dict) -> tuple[Tables, Metas] | None:
        """``(rows, metas)`` of every table in ``tables`` when each is saved with exactly ``settings``; else
        ``None``."""
        found = {name: self.load(name) for name in tables}
        if any(s is None or s.settings != settings for s in found.values()):
            return None
        return {n: s.rows for n, s in found.items()}, {n: s.meta for n, s in found.items()}

    def save_table(self, table: str, rows: Sequence[dict], meta: dict | None = None) -> dict[str, Path]:
        """Write ``<table>.json`` (``{"meta", "rows"}``) and ``<table>.csv``; returns their paths."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.table_file(table), table_json(rows, meta))
        atomic_write_text(self.root / f"{table}.csv", table_csv(rows))
        return {"json": self.table_file(table), "csv": self.root / f"{table}.csv"}

    def save_figure(self, fig: go.Figure, name: str, rows: Sequence[dict] | None = None, meta: dict | None = None,
                    png: bool = True) -> dict[str, Path | None]:
        """Write ``<name>.html``, ``<name>.png`` and, with ``rows``, ``<name>.json`` and ``<name>.csv``.

        An unchanged figure leaves its HTML and PNG untouched (the PNG is drawn only for a changed figure or when
        missing). Without ``png`` a PNG of an earlier, different figure is removed (it would disagree with the
        HTML and JSON beside it).

        Returns:
            The written paths; the PNG entry is ``None`` when no browser is available.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self._ensure_plotlyjs()
        html, image = self.root / f"{name}.html", self.root / f"{name}.png"
        page = figure_html(fig, name)
        changed = not html.is_file() or html.read_text(encoding="utf-8") != page
        if changed:
            atomic_write_text(html, page)
        written: dict[str, Path | None] = {"html": html, "png": None}
        if rows is not None:
            written.update(self.save_table(name, rows, meta))
        if not png and changed and image.is_file():
            image.unlink()
            log.info("%s.png removed: it showed another figure than the new HTML (--no-png)", name)
        if png and (changed or not image.is_file()):
            try:
                data = figure_png(fig)
            except Exception as err:  # kaleido raises several types when no browser is found
                log.warning("%s.png not written (%s). %s", name, type(err).__name__, PNG_HINT)
            else:
                atomic_write_bytes(image, data)  # (a full disk is an error, not a missing browser)
                written["png"] = image
        elif image.is_file():
            written["png"] = image  # the figure's own, unchanged
        return written

    def _ensure_plotlyjs(self) -> None:
        """``plotly.min.js``, (re)written when missing or different (a truncated copy is repaired)."""
        path, js = self.root / PLOTLY_JS, plotly_js()
        if not path.is_file() or path.stat().st_size != len(js) or path.read_bytes() != js:
            atomic_write_bytes(path, js)

    def saved_seeds(self, table: str) -> list[int] | None:
        """The ``seeds`` of a saved multi-seed table (``None`` when single-seed or absent)."""
        saved = self.load(table)
        seeds = saved.settings.get("seeds") if saved is not None else None
        return list(seeds) if seeds else None

    # -- one job's numbers of a step computed job by job ----------------------------------------------------------
    def job_file(self, folder: str, job: str) -> Path:
        """``<out>/.tasks/<folder>/<job>.json`` (``folder``: the step's first table)."""
        return self.root / TASKS / folder / f"{job}.json"

    def job(self, folder: str, job: str, key: dict, tables: Sequence[str]) -> dict | None:
        """One job's saved record ``{"settings", "tables", "device", "date"}`` when it holds every table of
        ``tables`` and was computed with the settings ``key``; ``None`` otherwise."""
        path = self.job_file(folder, job)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return data if data.get("settings") == key and all(n in data.get("tables", {}) for n in tables) else None

    def save_job(self, folder: str, job: str, record: dict) -> None:
        """Save one job's record (atomic)."""
        write_json(self.job_file(folder, job), record)

    # -- the rest of the layout ------------------------------------------------------------------------------------
    def run(self, seed: int) -> ResultStore:
        """The store of the run of seed ``seed`` of a multi-seed step: ``<out>/runs/seed<seed>``."""
        return ResultStore(self.root / RUNS / f"seed{seed}")

    def vectors(self, force: bool = False) -> VectorStore:
        """The LTVs kept under ``<out>/vectors`` (retrained where saved with ``force``)."""
        return VectorStore(self.root / "vectors", force)

    def folder(self, name: str) -> Path:
        """``<out>/<name>``: a folder a step keeps its own files in (e.g. the synthetic step's models)."""
        return self.root / name

    def claim(self, run_id: str, job: str) -> bool:
        """Whether ``job`` was not yet claimed in run ``run_id`` (and is now): an exclusive file under
        ``<out>/.tasks/.claims/<run id>/``, so that exactly one of the processes asking gets it."""
        folder = self.root / TASKS / CLAIMS / run_id
        folder.mkdir(parents=True, exist_ok=True)
        try:
            name = hashlib.sha256(job.encode()).hexdigest()[:32]
            os.close(os.open(folder / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def release_claims(self, run_id: str) -> None:
        """Remove the claims of run ``run_id``, and ``.claims`` itself once no other run's are left in it."""
        folder = self.root / TASKS / CLAIMS / run_id
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: another run's claims
            folder.parent.rmdir()

    def figure_names(self) -> list[str]:
        """The figures (``*.html`` but the gallery), sorted."""
        return sorted(p.stem for p in self.root.glob("*.html") if p.stem != "index")

    def galleries(self) -> list[str]:
        """Sub-folders holding a gallery of their own (another model's run), sorted."""
        return sorted(p.parent.name for p in self.root.glob("*/index.html"))

    def has_png(self, name: str) -> bool:
        return (self.root / f"{name}.png").is_file()

    def write_index(self, page: str) -> Path:
        """Write the gallery ``<out>/index.html``."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "index.html", page)
        return self.root / "index.html"

    def remove_partials(self) -> list[Path]:
        """Remove what a killed earlier run was writing; returns the removed files."""
        return remove_partials(self.root)

    def check_writable(self) -> None:
        """Create the folder and write a file there.

        Raises:
            OSError: when it cannot be created or written.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-check-"):
            pass


__all__ = ["ResultStore", "Saved", "fresh_meta", "provenance", "gathered_meta", "describe_device", "PLOTLY_JS"]
