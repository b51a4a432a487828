"""Atomic file writes and the cache directory: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """``$TVMECH_CACHE``, else ``$XDG_CACHE_HOME/tvmech``, else ``~/.cache/tvmech``."""
    env = os.environ.get("TVMECH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tvmech"


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that is renamed to ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=PARTIAL, dir=target.parent))
    try:
        yield tmp
        try:
            if target.exists():  # another process finished first: keep theirs
                raise FileExistsError(target)
            os.replace(tmp, target)
        except OSError:
            if not target.exists():
                raise
            shutil.rmtree(tmp)  # (also when another process renamed its copy in between)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


PARTIAL = ".partial"  # suffix of the temporary files and folders of atomic writes


def remove_partials(folder: Path, older_than_s: float = 600.0) -> list[Path]:
    """Remove what killed atomic writes left under ``folder`` (``.<name>.<random>.partial`` files and folders)
    that are older than ``older_than_s`` (a live write, e.g. of a parallel process, takes far less).

    Returns:
        The removed paths.
    """
    import time

    gone = []
    now = time.time()
    for p in sorted(Path(folder).rglob(f".*{PARTIAL}")) if Path(folder).is_dir() else []:
        if now - p.stat().st_mtime < older_than_s:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename; on any error (a full disk:
    ``OSError`` ``ENOSPC``, naming ``path``) or interruption the temporary file is removed and ``path`` is left as
    it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # (a failed write names no file)
            err.filename = str(path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (``False`` at once under ``HF_HUB_OFFLINE=1``)."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False
