"""Every Python snippet in README.md runs as written, top to bottom in one namespace (as a reader pasting them
into a notebook would), on the default model; files they write go to a temporary directory."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def snippets() -> list[str]:
    return SNIPPET.findall(README.read_text())


def test_the_readme_has_the_snippets_this_test_runs():
    found = snippets()
    assert len(found) >= 5
    first_lines = [s.splitlines()[0] for s in found]
    assert "import tvmech as tv" in first_lines and any("tvmech.synthetic" in s for s in first_lines)


@pytest.mark.slow
def test_every_readme_snippet_runs_as_written(tmp_path, capsys):
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for i, code in enumerate(snippets()):
            try:
                exec(compile(code, f"README.md snippet {i + 1}", "exec"), namespace)
            except Exception as e:  # name the snippet that failed
                raise AssertionError(f"README snippet {i + 1} fails: {type(e).__name__}: {e}\n{code}") from e
    finally:
        os.chdir(cwd)
    assert (tmp_path / "antonym_L15.safetensors").is_file() and (tmp_path / "antonym_L15.json").is_file()
    assert 0.0 <= namespace["acc"] <= 1.0 and namespace["fit"].W.shape == (576, 576)
    assert len(namespace["key"]) == 27 and namespace["rows"]
