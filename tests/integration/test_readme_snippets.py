"""Every Python snippet in README.md runs as written, top to bottom in one namespace (as a reader pasting them
into a notebook would), on the default model, with smaller sizes (``SMALL``: fewer training steps, samples and
prompts); files they write go to a temporary directory."""

import os
import re
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPET = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# the test's smaller sizes (each must occur in README as written, so a changed snippet fails here, not silently)
SMALL = {"LTVConfig(steps=40)": "LTVConfig(steps=8)", "n_prompts=4)": "n_prompts=2)",
         "config=MapConfig())": "config=MapConfig(n_samples=576, n_heldout=8, noise_scales=(0.1,)))",
         "steps=1500,": "steps=40,", "n=512,": "n=32,", "split.test[:8]": "split.test[:4]",
         # a clone of the function_vectors repository: the test folder in its layout
         '"~/function_vectors/dataset_files"': repr(str(README.parent / "tests" / "data" / "task_folder"))}


def snippets(small: bool = False) -> list[str]:
    found = SNIPPET.findall(README.read_text())
    if small:
        text = "\n".join(found)
        missing = [k for k in SMALL if k not in text]
        assert not missing, f"README snippets no longer contain {missing}: update SMALL in this test"
        for k, v in SMALL.items():
            found = [c.replace(k, v) for c in found]
    return found


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
        for i, code in enumerate(snippets(small=True)):
            start = time.time()
            try:
                exec(compile(code, f"README.md snippet {i + 1}", "exec"), namespace)
                print(f"snippet {i + 1}: {time.time() - start:.1f} s")
            except Exception as e:  # name the snippet that failed
                raise AssertionError(f"README snippet {i + 1} fails: {type(e).__name__}: {e}\n{code}") from e
    finally:
        os.chdir(cwd)
    assert (tmp_path / "antonym_L15.safetensors").is_file() and (tmp_path / "antonym_L15.json").is_file()
    assert 0.0 <= namespace["acc"] <= 1.0 and namespace["fit"].W.shape == (576, 576)
    assert len(namespace["key"]) == 27 and namespace["rows"]
