"""Every notebook in notebooks/ runs top to bottom (slow: they load the real default model).

Notebooks carry their own checks as ``assert`` statements in their last cells; a failing assert is a
cell error, which fails the test. The kernel is Jupyter's ``python3``: jupyter_client replaces its
``python`` command with ``sys.executable``, so the notebooks run in the interpreter running pytest
(the venv); ``test_kernel_is_this_interpreter`` checks that.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 900


def execute(nb, cwd: Path = ROOT):
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def stream_text(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.output_type == "stream")


def test_kernel_is_this_interpreter():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    out = stream_text(execute(nb)).strip()
    assert Path(out).resolve() == Path(sys.executable).resolve(), (out, sys.executable)


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks in notebooks/"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path):
    nb = nbformat.read(path, as_version=4)
    try:
        execute(nb)
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    text = stream_text(nb)
    print(f"--- {path.name} printed ---\n{text}")
    # loading is quiet, and progress bars do not warn where ipywidgets is missing (tvmech.core.progress)
    assert "TqdmWarning" not in text and "Moving model to device" not in text
    # each notebook's last cell asserts its claims, then prints a line starting with "OK — "
    expected = {"01_": ["bit-identical vectors: True", "OK — zero-shot"],
                "02_": ["OK — Spearman(Taylor, exact)"],
                "03_": ["OK — lens matches evaluate"],
                "04_": ["OK — task-vector prompting error"]}
    for prefix, lines in expected.items():
        if path.name.startswith(prefix):
            for line in lines:
                assert line in text, line
