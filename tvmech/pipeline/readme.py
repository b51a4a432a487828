"""Keep README.md's results tables and result sentences equal to the figures' JSON.

README regions ``<!-- table: NAME -->`` ... ``<!-- /table -->`` are regenerated from ``figures/<file>.json`` by
the builders registered in :data:`tvmech.pipeline.readme_tables.REGIONS` (the tables themselves live in
:mod:`~tvmech.pipeline.readme_tables`, :mod:`~tvmech.pipeline.readme_mechanism`,
:mod:`~tvmech.pipeline.readme_agreement` and
:mod:`tvmech.pipeline.claims.paper`). Regions ``<!-- claim: NAME -->`` ... ``<!-- /claim -->`` hold one sentence,
inline: the claim ``NAME`` of :data:`tvmech.pipeline.claims.CLAIMS` (its statement, verdict and evidence, computed
from the JSON). ``NAME@SUB`` reads ``figures/SUB/`` instead. Everything outside the regions is kept byte for byte.
A claim marker must not start a line: markdown would take that line for raw HTML and not render it.

``python -m tvmech.pipeline.readme [--check] [--readme README.md] [--figures figures]``: without ``--check``
rewrite the regions in place (atomically; the file is not touched when nothing changes); with ``--check``
print a unified diff of every region that differs and exit 1, exit 0 when all agree.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tvmech.core.io import atomic_write_text
from tvmech.pipeline import readme_agreement, readme_mechanism, readme_methods  # noqa: F401  (register their tables)
from tvmech.pipeline.claims import CLAIMS
from tvmech.pipeline.readme_tables import REGIONS
from tvmech.pipeline.store import ResultStore

KINDS = ("table", "claim")
NAME = r"[A-Za-z0-9_.@/-]+"
REGION = re.compile(rf"(<!-- (table|claim): ({NAME}) -->)(.*?)(<!-- /\2 -->)", re.DOTALL)
LINE_START = re.compile(r"^[ \t]*(?:[-*+][ \t]+|\d+[.)][ \t]+)?<!-- claim: ", re.MULTILINE)


class ReadmeError(ValueError):
    """A README region that cannot be generated (unknown name, missing JSON, unclosed marker)."""


@dataclass(frozen=True)
class Region:
    """One region found in the README: its name, current content (between the markers), span and kind
    (``table`` or ``claim``)."""

    name: str
    content: str
    start: int
    end: int
    kind: str = "table"


def _known(kind: str) -> dict:
    return REGIONS if kind == "table" else CLAIMS


def find_regions(text: str) -> list[Region]:
    """The table and claim regions of ``text``, in order.

    Raises:
        ReadmeError: a start marker without its end marker, an unknown region name (listing the known ones), or
            a claim marker at the start of a line.
    """
    regions = [Region(m.group(3), m.group(4), m.start(4), m.end(4), m.group(2)) for m in REGION.finditer(text)]
    for kind in KINDS:
        starts = len(re.findall(rf"<!-- {kind}: {NAME} -->", text))
        ends, found = text.count(f"<!-- /{kind} -->"), sum(r.kind == kind for r in regions)
        if starts != found or ends != found:
            raise ReadmeError(f"unbalanced {kind} markers: {starts} '<!-- {kind}: NAME -->', {ends} "
                              f"'<!-- /{kind} -->'")
    for r in regions:
        if r.name.partition("@")[0] not in _known(r.kind):
            raise ReadmeError(f"unknown README {r.kind} region {r.name!r}; known: "
                              f"{', '.join(sorted(_known(r.kind)))}")
    if m := LINE_START.search(text):
        line = text.count("\n", 0, m.start()) + 1
        raise ReadmeError(f"line {line}: a '<!-- claim: NAME -->' marker starts the line; markdown would show the "
                          "line as raw HTML: put text before it (e.g. a bold label)")
    return regions


def load_json(figures: Path, stems: Sequence[str], region: str, root: Path | None = None
              ) -> tuple[dict[str, list], dict[str, dict]]:
    """Rows and meta of ``figures/<stem>.json`` for each stem.

    Args:
        figures: the folder of plain stems.
        stems: ``stem`` (in ``figures``), ``stem@SUB`` (in ``root/SUB``); a trailing ``?`` makes it optional.
        region: the region's name, for the error message.
        root: the figures root (default ``figures``).

    Returns:
        ``(tables, metas)`` keyed by stem (without ``?``); an absent optional file has no key.

    Raises:
        ReadmeError: a file is missing (named, with the region that needs it).
    """
    tables, metas = {}, {}
    for spec in stems:
        stem, optional = spec.rstrip("?"), spec.endswith("?")
        file, _, sub = stem.partition("@")
        store = ResultStore(Path(root if root is not None else figures) / sub if sub else Path(figures))
        saved = store.load(file)
        if saved is None:
            if optional:
                continue
            raise ReadmeError(f"README region {region!r} needs {store.table_file(file)}, which does not exist")
        tables[stem], metas[stem] = saved.rows, saved.meta
    return tables, metas


def render(name: str, figures: Path, kind: str = "table") -> str:
    """The content of region ``name`` (between its markers) generated from the JSON under ``figures``;
    ``NAME@SUB`` reads ``figures/SUB/`` instead (e.g. ``ov_reconstruction@gemma3``, another model's run).
    A table is set off by blank lines; a claim is its sentence, inline."""
    base, _, sub = name.partition("@")
    known = _known(kind)
    if base not in known:
        raise ReadmeError(f"unknown README {kind} region {base!r}; known: {', '.join(sorted(known))}")
    folder = Path(figures) / sub if sub else Path(figures)
    if kind == "claim":
        return known[base](*load_json(folder, known[base].files, name, Path(figures))).sentence
    region = known[base]
    body = region.build(*load_json(folder, region.files, name, Path(figures)))
    if sub:
        body = body.replace("*figures/", f"*figures/{sub}/")
    return f"\n\n{body.strip()}\n\n"


def regenerate(text: str, figures: Path) -> tuple[str, dict[str, str]]:
    """``text`` with every region regenerated, and a unified diff per region that changed.

    Args:
        text: the README's text.
        figures: the folder holding the figures' JSON.

    Returns:
        ``(new_text, {region name: diff})``; ``new_text`` equals ``text`` outside the regions.
    """
    pieces, diffs, at = [], {}, 0
    for r in find_regions(text):
        new = render(r.name, figures, r.kind)
        pieces += [text[at:r.start], new]
        at = r.end
        if new != r.content:
            label = r.name if r.kind == "table" else f"claim:{r.name}"
            label = label if label not in diffs else f"{label} ({len(diffs)})"
            nl = "\n" if r.kind == "claim" else ""  # a claim is one line without its newline
            diffs[label] = "".join(difflib.unified_diff(
                (r.content + nl).splitlines(keepends=True), (new + nl).splitlines(keepends=True),
                fromfile=f"README [{r.name}] (current)", tofile=f"README [{r.name}] (from the JSON)"))
    pieces.append(text[at:])
    return "".join(pieces), diffs


def check(readme: Path, figures: Path) -> dict[str, str]:
    """The diffs between ``readme``'s regions and what the JSON under ``figures`` gives (empty: all agree)."""
    return regenerate(Path(readme).read_bytes().decode("utf-8"), figures)[1]


def update(readme: Path, figures: Path) -> list[str]:
    """Rewrite ``readme``'s regions from the JSON (atomic; untouched when nothing changes).

    Returns:
        The names of the regions that changed.
    """
    text = Path(readme).read_bytes().decode("utf-8")  # newlines kept as they are (no \r\n translation)
    new, diffs = regenerate(text, figures)
    if new != text:
        atomic_write_text(Path(readme), new)
    return list(diffs)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (1: ``--check`` found differences, 2: an error)."""
    parser = argparse.ArgumentParser(prog="python -m tvmech.pipeline.readme", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 with a diff when they differ")
    parser.add_argument("--readme", type=Path, default=Path("README.md"), help="default: %(default)s")
    parser.add_argument("--figures", type=Path, default=Path("figures"), help="folder of the JSON (%(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            diffs = check(args.readme, args.figures)
            for diff in diffs.values():
                sys.stdout.write(diff)
            if diffs:
                print(f"{args.readme}: {len(diffs)} region(s) differ from {args.figures}/*.json: "
                      f"{', '.join(diffs)}; run python -m tvmech.pipeline.readme", file=sys.stderr)
            return 1 if diffs else 0
        changed = update(args.readme, args.figures)
        print(f"{args.readme}: " + (f"regenerated {', '.join(changed)}" if changed else "all regions up to date"))
        return 0
    except (ReadmeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
