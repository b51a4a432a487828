"""The API reference's pages, generated from the package itself (run by ``conf.py`` before each build).

One page per subpackage (its role: the subpackage's docstring, the names it exports in ``__all__`` and its
modules), in the import order of the layers; one page per module, documenting every public name the module
defines (no leading underscore). Nothing is listed by hand, so a
module added, moved or renamed is documented without editing the docs; a subpackage the order below does not
know is appended at the end.

:func:`home` is where an exported name is documented (its defining module); the test of the reference checks
every ``__all__`` name against the built inventory with it.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import logging
import pkgutil
import re
import typing
from pathlib import Path
from types import ModuleType

ROOT = "tvmech"
# the layers, in import order (each imports only from those before it)
ORDER = ("core", "data", "interventions", "analysis", "methods", "synthetic", "experiments", "plots", "pipeline",
         "figures")
# long reprs (task tables, step registries) are left out of the data entries
MAX_VALUE = 80


def subpackages() -> list[str]:
    """Dotted names of the subpackages of ``tvmech``, in :data:`ORDER` (unknown ones last, by name)."""
    root = importlib.import_module(ROOT)
    names = [m.name for m in pkgutil.iter_modules(root.__path__) if m.ispkg]
    rank = {n: i for i, n in enumerate(ORDER)}
    return [f"{ROOT}.{n}" for n in sorted(names, key=lambda n: (rank.get(n, len(ORDER)), n))]


def modules(package: str) -> list[str]:
    """Dotted names of every module below ``package`` (subpackages and their modules included), sorted;
    ``__main__`` modules are left out (they run on import)."""
    pkg = importlib.import_module(package)
    found = [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{package}.")]
    return sorted(n for n in found if not n.endswith(".__main__"))


def defined_names(module: ModuleType) -> list[str]:
    """The public names ``module`` defines at top level (functions, classes, assigned names; no leading
    underscore), in source order, whether or not its ``__all__`` lists them. Loggers and type variables are left
    out."""
    tree = ast.parse(inspect.getsource(module))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    out = []
    for n in dict.fromkeys(names):
        if n.startswith("_") or not hasattr(module, n):
            continue
        if isinstance(getattr(module, n), (logging.Logger, typing.TypeVar)):
            continue
        out.append(n)
    return out


@functools.cache
def _defined(module: str) -> tuple[str, ...]:
    return tuple(defined_names(importlib.import_module(module)))


def home(package: ModuleType, name: str) -> str:
    """Where ``package.<name>`` is documented: ``<defining module>.<name>``.

    Classes and functions name their module; other objects (constants, type aliases) are looked up in the
    modules below the package's root that define a name bound to the same object.

    Raises:
        LookupError: no module of ``tvmech`` defines it.
    """
    obj = getattr(package, name)
    module = getattr(obj, "__module__", None)
    if (inspect.isclass(obj) or inspect.isfunction(obj)) and module and module.startswith(f"{ROOT}."):
        return f"{module}.{obj.__qualname__}"
    for sub in subpackages():
        for mod_name in modules(sub):
            if name in _defined(mod_name) and getattr(importlib.import_module(mod_name), name) is obj:
                return f"{mod_name}.{name}"
    raise LookupError(f"{package.__name__}.{name} is not defined in any module of {ROOT}")


def summary(obj) -> str:
    """The first paragraph of ``obj``'s docstring on one line (empty when it has none)."""
    doc = inspect.getdoc(obj) if (inspect.isclass(obj) or callable(obj) or inspect.ismodule(obj)) else None
    if doc and inspect.isclass(obj) and doc.startswith(f"{obj.__name__}("):  # a dataclass's generated text
        return ""
    return _plain_roles(" ".join(doc.strip().split("\n\n")[0].split())) if doc else ""


def _plain_roles(text: str) -> str:
    """Cross-reference roles as literals (a summary is shown away from the module its names are relative to):
    ``:func:`~a.b``` -> ````b````, ``:class:`T <a.T>``` -> ````T````."""
    def literal(m: re.Match) -> str:
        body = m.group(1)
        title = re.match(r"(.*?)\s*<.*>$", body)
        body = title.group(1) if title else body.lstrip("!")
        return f"``{body.rsplit('.', 1)[-1] if body.startswith('~') else body}``"
    return re.sub(r":[a-z]+:`([^`]+)`", literal, text)


def _title(text: str, char: str = "=") -> list[str]:
    return [text, char * len(text), ""]


def _exports(package: ModuleType) -> list[str]:
    """A list-table of ``package.__all__``: each name linked to where it is documented, with its summary."""
    names = list(getattr(package, "__all__", ()))
    if not names:
        return []
    lines = [".. list-table::", "   :widths: 30 70", ""]
    for n in names:
        obj = getattr(package, n)
        role = "mod" if inspect.ismodule(obj) else "class" if inspect.isclass(obj) else \
            "func" if inspect.isroutine(obj) else "data"
        target = obj.__name__ if role == "mod" else home(package, n)
        lines += [f"   * - :py:{role}:`{n} <{target}>`", f"     - {summary(obj) if role != 'data' else ''}".rstrip()]
    return lines + [""]


def package_page(package: str) -> str:
    """The rst page of one subpackage: its docstring, its exported names and its modules."""
    pkg = importlib.import_module(package)
    lines = _title(f"``{package}``")
    lines += [f".. automodule:: {package}", "   :no-members:", ""]
    exports = _exports(pkg)
    if exports:
        lines += _title(f"Exported from ``{package}``", "-") + exports
    lines += _title("Modules", "-") + [".. list-table::", "   :widths: 30 70", ""]
    for m in modules(package):
        text = summary(importlib.import_module(m))
        lines += [f"   * - :doc:`{m.rsplit('.', 1)[1]} <{m}>`", f"     - {text}".rstrip()]
    lines += ["", ".. toctree::", "   :hidden:", ""] + [f"   {m}" for m in modules(package)] + [""]
    return "\n".join(lines)


def module_page(name: str) -> str:
    """The rst page of one module: its docstring, then each public name it defines."""
    mod = importlib.import_module(name)
    lines = _title(f"``{name}``") + [f".. automodule:: {name}", "   :no-members:", ""]
    for n in defined_names(mod):
        obj = getattr(mod, n)
        if inspect.isclass(obj):
            lines += [f".. autoclass:: {name}.{n}", "   :members:", "   :undoc-members:", "   :show-inheritance:",
                      "   :member-order: bysource"]
            helped = [f.name for f in dataclasses.fields(obj) if f.metadata.get("help")] \
                if dataclasses.is_dataclass(obj) else []
            lines += [f"   :exclude-members: {', '.join(helped)}", ""] if helped else [""]  # listed with their help
        elif inspect.isroutine(obj):
            lines += [f".. autofunction:: {name}.{n}", ""]
        else:
            lines += [f".. autodata:: {name}.{n}"]
            lines += ["   :no-value:", ""] if len(repr(obj)) > MAX_VALUE else [""]
    return "\n".join(lines)


def top_page() -> str:
    """The front page of the reference: ``tvmech.__all__`` and the subpackages' pages."""
    pkg = importlib.import_module(ROOT)
    lines = _title("API reference") + [f".. automodule:: {ROOT}", "   :no-members:", ""]
    lines += _title(f"Exported from ``{ROOT}``", "-") + _exports(pkg)
    lines += _title("Subpackages, in import order", "-") + [".. toctree::", "   :maxdepth: 2", ""]
    lines += [f"   {p}" for p in subpackages()] + [""]
    return "\n".join(lines)


def write_pages(out: Path) -> list[Path]:
    """Write every page of the reference into ``out`` (an ``index.rst``, one page per subpackage and module);
    pages left from modules that no longer exist are removed.

    Returns:
        The pages written.
    """
    out.mkdir(parents=True, exist_ok=True)
    pages = {"index": top_page()}
    for package in subpackages():
        pages[package] = package_page(package)
        pages.update({m: module_page(m) for m in modules(package)})
    written = []
    for name, text in pages.items():
        path = out / f"{name}.rst"
        if not path.exists() or path.read_text(encoding="utf-8") != text:  # unchanged pages keep their mtime
            path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in set(out.glob("*.rst")) - set(written):
        stale.unlink()
    return written
