"""Sphinx configuration of the API reference (``make docs``: ``sphinx-build -W``, warnings are errors).

The pages under ``api/`` are generated from the package before each build (:mod:`reference`). Nothing is
fetched at build or reading time: the bundled alabaster theme, no intersphinx, no MathJax.
"""

import builtins
import importlib
import inspect
import re
import sys
import typing
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import reference  # noqa: E402

project = "tvmech"
author = "tvmech authors"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "The mechanics of task vectors, on TransformerLens", "fixed_sidebar": True,
                      "page_width": "1180px", "sidebar_width": "260px"}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}
html_copy_source = False
html_show_copyright = False
html_show_sourcelink = False

# docstrings are Google style (Args:/Returns:/Raises:) with reST roles
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields: :undoc-members: documents the attributes themselves
napoleon_use_rtype = False  # "Returns: <what>: ..." often names a shape of records, not a type
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False  # an override of torch's nn.Module.to is not documented by torch's text
add_module_names = False
python_maximum_signature_line_length = 100
# every cross-reference must resolve (nitpicky), except those to other libraries (see _external)
nitpicky = True
EXTERNAL = ("torch", "jaxtyping", "collections", "pathlib", "plotly", "argparse", "os", "types", "dataclasses",
            "typing", "numpy", "transformer_lens", "transformers", "safetensors", "accelerate", "scipy", "logging")


def _plain_text(app, what, name, obj, options, lines):
    """Two readings of this project's docstrings: ``|x|`` is a size or an absolute value (never a reST
    substitution), and a data entry without a docstring of its own gets none (not its type's, e.g. ``dict``'s)."""
    if what in ("data", "attribute") and lines:
        own = "\n".join(lines).strip()
        if own in ((inspect.getdoc(obj) or "").strip(), (inspect.getdoc(type(obj)) or "").strip()):
            lines.clear()
    for i, line in enumerate(lines):
        parts = line.split("``")
        lines[i] = "``".join(p if j % 2 else re.sub(r"(?<!\\)\|", r"\\|", p) for j, p in enumerate(parts))


def _config_fields(app, what, name, obj, options, lines):
    """A dataclass whose fields carry ``option(...)`` help (the experiments' configs) lists them with their
    defaults and command-line flags, as ``--help`` does."""
    import dataclasses

    from tvmech.experiments.common import flag_of

    if what != "class" or not dataclasses.is_dataclass(obj):
        return
    helped = [f for f in dataclasses.fields(obj) if f.metadata.get("help")]
    if not helped:
        return
    lines += ["", ".. rubric:: Fields", ""]
    for f in helped:
        default = f.default if f.default is not dataclasses.MISSING else "required"
        text = re.sub(r"([|*`_\\])", r"\\\1", f.metadata["help"])
        flag = f", flag ``{flag_of(obj, f)}``" if getattr(obj, "PREFIX", "") else ""
        lines += [f"* ``{f.name}`` (default ``{default!r}``{flag}): {text}"]
    lines.append("")


def _lookup(node):
    """The object a cross-reference names, looked up as Python would from where it is written: an absolute
    ``tvmech.<path>``, a name of the module (defined or imported) or of its class, a sibling module of its
    package, or an attribute of one of them (``Adapter.run_blocks``). ``None`` when nothing is reachable."""
    target = "".join(node["reftarget"].split()).lstrip("~.")  # a role wrapped over two docstring lines
    module, cls = node.get("py:module"), node.get("py:class")
    scopes = [None, f"{module}.{cls}" if module and cls else None, module,
              module.rsplit(".", 1)[0] if module and "." in module else None]
    for scope in dict.fromkeys(s for s in scopes if s is not False):
        parts = (f"{scope}.{target}" if scope else target).split(".")
        for i in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            try:
                for attr in parts[i:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return obj
    return None


def _canonical(obj) -> str | None:
    """The dotted name under which ``obj`` (a module, class, function, method or property) is documented."""
    if inspect.ismodule(obj):
        return obj.__name__
    obj = obj.fget if isinstance(obj, property) else obj
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module and qualname and (inspect.isclass(obj) or inspect.isroutine(obj)):
        return f"{module}.{qualname}"
    return None


def _base_of(names: list[str]) -> str | None:
    """The one name of ``names``, or the method of the class the others' classes derive from (``writes``:
    ``Intervention.writes``, which its subclasses override); ``None`` when there is no such one."""
    if len(names) <= 1:
        return names[0] if names else None
    owners = {}
    for n in names:
        module, cls, _ = n.rsplit(".", 2) if n.count(".") >= 2 else (n, "", "")
        owners[n] = getattr(sys.modules.get(module), cls, None)
    if not all(inspect.isclass(c) for c in owners.values()):
        return None
    base = [n for n, c in owners.items() if all(issubclass(o, c) for o in owners.values())]
    return base[0] if len(base) == 1 else None


def _resolve(app, env, node, contnode):
    """Resolve a reference Sphinx did not find by the object it names (:func:`_lookup`), e.g. ``:class:`Injection```
    in a module that imports it; else by a unique documented name ending in it (the reference's own module
    first)."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    name = _canonical(_lookup(node))
    if not name or not name.startswith(f"{reference.ROOT}."):
        target = "".join(node["reftarget"].split()).lstrip("~.")
        ends = sorted(n for n in domain.objects if n.endswith(f".{target}") and not domain.objects[n].aliased)
        mine = [n for n in ends if n.startswith(f"{node.get('py:module')}.")]
        name = _base_of(mine or ends)
        if name is None:
            return None
    found = domain.resolve_any_xref(env, node["refdoc"], app.builder, name, node.deepcopy(), contnode)
    return next((r for role, r in found if role != "py:module" or node["reftype"] == "mod"), None)


def _external(app, domain, node):
    """No warning for a reference to an object outside tvmech (torch, jaxtyping, the standard library) or to a
    type variable: the build is offline, so other libraries' inventories are not read."""
    if getattr(domain, "name", None) != "py":
        return None
    head = re.match(r"[\w.]*", "".join(node["reftarget"].split()).lstrip("~.")).group()  # "dict" of "dict[str"
    if head.split(".")[0] in EXTERNAL or head in dir(builtins):
        return True
    obj = _lookup(node)
    if obj is None:
        return None
    if isinstance(obj, typing.TypeVar):
        return True
    module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", None) or ""
    return None if module.startswith(reference.ROOT) else True


def _google_except_attributes(app, what, name, obj, options, lines):
    """Napoleon, except on attributes, properties and data: their docstrings here are sentences
    (``"The model's depth: ..."``), not Google's ``"type: description"``."""
    from sphinx.ext.napoleon import _process_docstring

    if what not in ("attribute", "property", "data"):
        _process_docstring(app, what, name, obj, options, lines)


def setup(app):
    reference.write_pages(HERE / "api")
    from sphinx.ext.napoleon import _process_docstring

    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is _process_docstring:
            app.disconnect(listener.id)
    app.connect("autodoc-process-docstring", _plain_text, priority=400)
    app.connect("autodoc-process-docstring", _google_except_attributes)
    app.connect("autodoc-process-docstring", _config_fields, priority=600)
    app.connect("missing-reference", _resolve)
    app.connect("warn-missing-reference", _external)
