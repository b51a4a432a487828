"""A full disk (``ENOSPC``, simulated, and a real small tmpfs where this process may mount one) or Ctrl-C in the
middle of ``python -m tvmech.pipeline``: one line on stderr naming the folder (and its free space), a non-zero exit
code, nothing half-written, and a rerun that computes only what is missing."""

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tvmech.core.io import PARTIAL
from tvmech.pipeline import cli

TASKS = ("capitalize", "antonym", "present_past")
REPLACE = os.replace


def _argv(out: Path) -> list[str]:
    return ["--out", str(out), "--only", "icl", "--icl-ks", "0", "1", "--n-test", "2", "--no-png", "--device", "cpu",
            "--model", "tiny", "--tasks", *TASKS]


def _jobs(out: Path) -> dict[str, int]:
    """The saved tasks of the icl step: file name -> modification time."""
    return {p.name: p.stat().st_mtime_ns for p in (out / ".tasks" / "icl_accuracy").glob("*.json")}


def _fail_at(monkeypatch, out: Path, n: int, exc: BaseException) -> list[Path]:
    """Every atomic write under ``out`` after the first ``n`` raises ``exc`` once its temporary file is written
    (that file must then be removed); returns the paths written."""
    real, done = os.replace, []

    def replace(src, dst, **kw):
        if Path(dst).is_relative_to(out):
            if len(done) >= n:
                assert Path(src).is_file()
                raise exc
            done.append(Path(dst))
        return real(src, dst, **kw)

    monkeypatch.setattr(os, "replace", replace)
    return done


def _rerun_resumes(out: Path, kept: dict[str, int], monkeypatch, capsys) -> None:
    """The rerun exits 0, keeps the tasks saved before the failure and computes the others."""
    monkeypatch.setattr(os, "replace", REPLACE)
    assert cli.main(_argv(out)) == 0
    after = _jobs(out)
    assert sorted(after) == sorted(f"{t}.json" for t in TASKS)
    assert {k: after[k] for k in kept} == kept  # reused, not recomputed
    assert (out / "icl_accuracy.html").is_file()
    assert not list(out.rglob(f"*{PARTIAL}"))
    capsys.readouterr()


def _error(capsys) -> str:
    """The last line of stderr (above it: the progress bars), after checking there is no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


@pytest.fixture
def tiny_cli(monkeypatch, tiny):
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: tiny)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_mid_step_gives_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys, tiny_cli, code):
    out = tmp_path / "out"
    written = _fail_at(monkeypatch, out, 1, OSError(code, os.strerror(code)))  # the first task's record only
    assert cli.main(_argv(out)) == 1
    err = _error(capsys)
    folder = out / ".tasks" / "icl_accuracy"
    assert written == [folder / "capitalize.json"]
    what = "no space left" if code == errno.ENOSPC else "disk quota exceeded"
    assert err.startswith(f"{cli.PROG}: error: {what} writing to {folder} (")
    assert " free there); " in err and f"nothing half-written is left in {out}" in err
    assert not list(out.rglob(f"*{PARTIAL}"))
    kept = _jobs(out)
    assert list(kept) == ["capitalize.json"]
    _rerun_resumes(out, kept, monkeypatch, capsys)


def test_ctrl_c_mid_step_gives_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys, tiny_cli):
    out = tmp_path / "out"
    _fail_at(monkeypatch, out, 2, KeyboardInterrupt())  # two tasks saved, interrupted while saving the third
    assert cli.main(_argv(out)) == 130
    err = _error(capsys)
    assert err == f"{cli.PROG}: interrupted; " + cli.RESUMES.format(out=out, todo="rerun")
    assert not list(out.rglob(f"*{PARTIAL}"))
    kept = _jobs(out)
    assert len(kept) == 2
    _rerun_resumes(out, kept, monkeypatch, capsys)


def test_other_os_errors_are_not_taken_for_a_full_disk(tmp_path, monkeypatch, tiny_cli):
    _fail_at(monkeypatch, tmp_path, 0, PermissionError(errno.EACCES, "Permission denied"))
    with pytest.raises(PermissionError):
        cli.main(_argv(tmp_path / "out"))


def test_the_message_names_the_file_folder_and_its_free_space(tmp_path):
    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "a" / "b.json"))
    message = cli.disk_full(err, tmp_path)  # (the folder "a" does not exist: the free space is its parent's)
    free = cli._size(shutil.disk_usage(tmp_path).free)
    assert message.startswith(f"no space left writing to {tmp_path / 'a'} ({free.split()[0]}")
    assert cli._size(1023) == "1023 B" and cli._size(3 * 1024**3) == "3 GiB"


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs of ``size`` at ``folder``; ``None`` when done, else why it could not be."""
    if shutil.which("mount") is None:
        return "no mount command"
    if os.geteuid() != 0:
        return "not root: mounting a tmpfs needs root"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"


def test_a_real_full_tmpfs_gives_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys, tiny_cli):
    """A 1 MiB tmpfs holds the tasks' numbers and tables but not plotly.js (about 4.6 MB); once grown, the rerun
    reuses the numbers."""
    disk = tmp_path / "disk"
    disk.mkdir()
    why = _mount_tmpfs(disk, "1m")
    if why is not None:
        pytest.skip(why)
    try:
        out = disk / "out"
        assert cli.main(_argv(out)) == 1
        err = _error(capsys)
        assert err.startswith(f"{cli.PROG}: error: no space left writing to {out} (") and "KiB free there" in err
        assert not list(out.rglob(f"*{PARTIAL}")) and not (out / "plotly.min.js").exists()
        kept = _jobs(out)
        assert len(kept) == len(TASKS) and (out / "icl_accuracy.json").is_file()
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        _rerun_resumes(out, kept, monkeypatch, capsys)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_model_error_with_the_synthetic_step_selected_gives_one_line(tmp_path, monkeypatch, capsys):
    """(The error path named each config's fields by their flags, and the synthetic config has no LABEL.)"""
    def unknown(*a, **k):
        raise ValueError("unknown model 'nope'")

    monkeypatch.setattr(cli, "load_model", unknown)
    argv = ["--out", str(tmp_path), "--only", "icl", "synthetic", "--no-png", "--model", "nope", "--device", "cpu"]
    assert cli.main(argv) == 2
    assert _error(capsys) == f"{cli.PROG}: error: unknown model 'nope'"
