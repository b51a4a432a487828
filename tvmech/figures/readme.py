"""Keep README.md's results tables equal to the figures' JSON.

README regions ``<!-- table: NAME -->`` ... ``<!-- /table -->`` are regenerated from ``figures/<file>.json`` by
the builders registered in :data:`tvmech.figures.readme_tables.REGIONS` (the tables themselves live in
:mod:`~tvmech.figures.readme_tables` and :mod:`~tvmech.figures.readme_mechanism`). Everything outside the
regions is kept byte for byte.

``python -m tvmech.figures.readme [--check] [--readme README.md] [--figures figures]``: without ``--check``
rewrite the regions in place (atomically; the file is not touched when nothing changes); with ``--check``
print a unified diff of every region that differs and exit 1, exit 0 when all agree.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tvmech.core.io import atomic_write_text
from tvmech.figures import readme_mechanism  # noqa: F401  (registers the mechanism tables)
from tvmech.figures.readme_tables import REGIONS

START = re.compile(r"<!-- table: ([A-Za-z0-9_.@/-]+) -->")
END = "<!-- /table -->"
REGION = re.compile(r"(<!-- table: ([A-Za-z0-9_.@/-]+) -->)(.*?)(<!-- /table -->)", re.DOTALL)


class ReadmeError(ValueError):
    """A README region that cannot be generated (unknown name, missing JSON, unclosed marker)."""


@dataclass(frozen=True)
class Region:
    """One region found in the README: its name, current content (between the markers) and span."""

    name: str
    content: str
    start: int
    end: int


def find_regions(text: str) -> list[Region]:
    """The table regions of ``text``, in order.

    Raises:
        ReadmeError: a start marker without its end marker, or an unknown region name (listing the known ones).
    """
    regions = [Region(m.group(2), m.group(3), m.start(3), m.end(3)) for m in REGION.finditer(text)]
    if len(regions) != len(START.findall(text)) or text.count(END) != len(regions):
        raise ReadmeError(f"unbalanced table markers: {len(START.findall(text))} '<!-- table: NAME -->', "
                          f"{text.count(END)} '{END}'")
    for r in regions:
        if r.name.partition("@")[0] not in REGIONS:
            raise ReadmeError(f"unknown README table region {r.name!r}; known: {', '.join(sorted(REGIONS))}")
    return regions


def load_json(figures: Path, stems: Sequence[str], region: str) -> tuple[dict[str, list], dict[str, dict]]:
    """Rows and meta of ``figures/<stem>.json`` for each stem.

    Returns:
        ``(tables, metas)`` keyed by stem.

    Raises:
        ReadmeError: a file is missing (named, with the region that needs it).
    """
    tables, metas = {}, {}
    for stem in stems:
        path = Path(figures) / f"{stem}.json"
        if not path.is_file():
            raise ReadmeError(f"README table region {region!r} needs {path}, which does not exist")
        data = json.loads(path.read_text(encoding="utf-8"))
        tables[stem], metas[stem] = list(data.get("rows", [])), dict(data.get("meta", {}))
    return tables, metas


def render(name: str, figures: Path) -> str:
    """The content of region ``name`` (between its markers) generated from the JSON under ``figures``;
    ``NAME@SUB`` reads ``figures/SUB/`` instead (e.g. ``ov_reconstruction@gemma3``, another model's run)."""
    base, _, sub = name.partition("@")
    if base not in REGIONS:
        raise ReadmeError(f"unknown README table region {base!r}; known: {', '.join(sorted(REGIONS))}")
    region = REGIONS[base]
    body = region.build(*load_json(Path(figures) / sub if sub else Path(figures), region.files, name))
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
        new = render(r.name, figures)
        pieces += [text[at:r.start], new]
        at = r.end
        if new != r.content:
            label = f"{r.name}" if r.name not in diffs else f"{r.name} ({len(diffs)})"
            diffs[label] = "".join(difflib.unified_diff(
                r.content.splitlines(keepends=True), new.splitlines(keepends=True),
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
    parser = argparse.ArgumentParser(prog="python -m tvmech.figures.readme", description=__doc__.split("\n\n")[0])
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
                print(f"{args.readme}: {len(diffs)} table region(s) differ from {args.figures}/*.json: "
                      f"{', '.join(diffs)}; run python -m tvmech.figures.readme", file=sys.stderr)
            return 1 if diffs else 0
        changed = update(args.readme, args.figures)
        print(f"{args.readme}: " + (f"regenerated {', '.join(changed)}" if changed else "all tables up to date"))
        return 0
    except (ReadmeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
