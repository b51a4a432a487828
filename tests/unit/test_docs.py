"""The API reference (``docs/``, ``make docs``): it builds with warnings as errors, offline, and documents every
exported name, including every tvmech name the notebooks call."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))

import reference  # noqa: E402

# Sphinx's own napoleon reads autodoc's options the way Sphinx 11 will drop
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


def _packages() -> list:
    return [importlib.import_module(p) for p in [reference.ROOT, *reference.subpackages()]]


def _inventory(path: Path) -> dict[str, str]:
    """``objects.inv``: documented name -> its domain role (``py:function``, ...)."""
    raw = path.read_bytes()
    body = zlib.decompress(raw.split(b"\n", 4)[4]).decode()
    return {line.split(" ")[0]: line.split(" ")[1] for line in body.splitlines() if line}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The reference as ``make docs`` builds it (fresh, ``-W``), into a temporary folder."""
    from sphinx.cmd.build import build_main

    out = tmp_path_factory.mktemp("docs")
    assert build_main(["-E", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out)]) == 0
    return out


def test_every_exported_name_is_in_the_built_reference(built):
    inv = _inventory(built / "objects.inv")
    missing = []
    for pkg in _packages():
        assert pkg.__name__ in inv, f"{pkg.__name__} has no page"
        for name in getattr(pkg, "__all__", ()):
            obj = getattr(pkg, name)
            target = obj.__name__ if inspect.ismodule(obj) else reference.home(pkg, name)
            if target not in inv:
                missing.append(f"{pkg.__name__}.{name} ({target})")
    assert not missing, f"exported but not in the reference: {missing}"
    assert {p.__name__ for p in _packages()} >= {"tvmech.core", "tvmech.data", "tvmech.analysis", "tvmech.methods"}


def test_every_module_has_a_page_and_the_pages_fetch_nothing(built):
    for package in reference.subpackages():
        for module in [package, *reference.modules(package)]:
            page = built / "api" / f"{module}.html"
            assert page.is_file(), f"{module} has no page"
    external = re.compile(r"""<(?:script|link|img)[^>]+(?:src|href)=["']https?://""")
    assert not [p for p in built.rglob("*.html") if external.search(p.read_text(encoding="utf-8"))]


def _notebook_uses() -> list[tuple[str, str, object]]:
    """(notebook, dotted name, object) of every tvmech object a notebook imports or reaches as
    ``<imported module>.<name>``."""
    uses = []
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
        modules = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update({a.asname or a.name: importlib.import_module(a.name) for a in node.names
                                if a.name.startswith("tvmech")})
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tvmech"):
                for a in node.names:
                    obj = getattr(importlib.import_module(node.module), a.name)
                    if inspect.ismodule(obj):
                        modules[a.asname or a.name] = obj
                    else:
                        uses.append((nb.name, f"{node.module}.{a.name}", obj))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                mod = modules[node.value.id]
                obj = getattr(mod, node.attr)
                if not inspect.ismodule(obj):
                    uses.append((nb.name, f"{mod.__name__}.{node.attr}", obj))
    return uses


def test_what_the_notebooks_call_is_exported():
    """A notebook's tvmech name is in ``tvmech.__all__`` or a subpackage's, or reached through a module that
    lists it in its own ``__all__`` (``synthetic_plots.robustness_figure``)."""
    uses = _notebook_uses()
    assert len(uses) > 20  # the notebooks were read
    exported = [getattr(p, n) for p in _packages() for n in getattr(p, "__all__", ())]
    missing = []
    for nb, name, obj in uses:
        module, attr = name.rsplit(".", 1)
        own = getattr(importlib.import_module(module), "__all__", ())
        package_level = module in {p.__name__ for p in _packages()}
        if not any(obj is e for e in exported) and not (attr in own and not package_level):
            missing.append(f"{nb}: {name}")
    assert not missing, f"called in a notebook but not exported: {sorted(set(missing))}"
    names = {n.rsplit(".", 1)[1] for _, n, _ in uses}
    assert {"reconstruction_accuracy", "key_vs_random", "compare_sets", "polar_report", "reconstruction_report",
            "lens_conditions", "mean_head_z"} <= names
