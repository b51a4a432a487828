"""Execute notebooks in place so that they are committed with their outputs (``make notebooks``).

Plotly figures are kept twice: as plotly's JSON mimetype (interactive in Jupyter) and as a PNG (what a code
host shows), through ``PLOTLY_RENDERER=plotly_mimetype+png``, which the kernel inherits. Each notebook is
written back atomically only when it ran without an error.

Usage: python tools/run_notebooks.py notebooks/*.ipynb
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

ROOT = Path(__file__).resolve().parents[1]


def run(path: Path, timeout: int = 1800) -> float:
    """Execute ``path`` in place (kernel cwd: the repository root); returns the seconds it took."""
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype+png")
    nb = nbformat.read(path, as_version=4)
    start = time.time()
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    for cell in nb.cells:  # execution timestamps would make every run a diff
        cell.get("metadata", {}).pop("execution", None)
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)
    return time.time() - start


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(f"{arg}: executed in {run(Path(arg)):.0f} s")
