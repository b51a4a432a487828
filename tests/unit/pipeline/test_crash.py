"""Kill a pipeline run with SIGKILL in the middle of a step: the rerun reuses the finished tasks, and nothing
half-written is left behind (atomic writes; their leftovers are removed)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tvmech.core.io import PARTIAL, remove_partials

ROOT = Path(__file__).resolve().parents[3]
# (the classification tasks' labels share a first character, which the test's character tokenizer cannot score)
WORD_TASKS = ("country_capital", "capitalize", "antonym", "english_french", "masculine_feminine", "present_past",
              "singular_plural")


def _save_tiny(path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import char_tokenizer, tiny_hf

    tok = char_tokenizer()
    tiny_hf(vocab=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)


def test_sigkill_mid_step_then_rerun_reuses_finished_tasks(tmp_path):
    model_dir, out = tmp_path / "tiny", tmp_path / "out"
    _save_tiny(model_dir)
    argv = [sys.executable, "-m", "tvmech.pipeline", "--model", str(model_dir), "--out", str(out), "--only", "icl",
            "--icl-ks", "0", "1", "2", "--n-test", "6", "--no-png", "--device", "cpu", "--tasks", *WORD_TASKS]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / ".tasks" / "icl_accuracy"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not any(cache.glob("*.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(cache.glob("*.json"))
    if not done or (out / "icl_accuracy.json").exists():
        pytest.skip("the run was not caught in the middle of its step")
    for p in done:
        json.loads(p.read_text())  # every kept task is complete JSON
    kept = {p.name: p.stat().st_mtime_ns for p in done}
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in done} == kept  # the finished tasks were reused, not redone
    rows = json.loads((out / "icl_accuracy.json").read_text())["rows"]
    assert [r["task"] for r in rows][::3] == list(WORD_TASKS)
    assert not list(out.rglob(f"*{PARTIAL}"))


def test_leftovers_of_killed_writes_are_removed_but_live_ones_kept(tmp_path):
    old, live = tmp_path / f".a.json.x1{PARTIAL}", tmp_path / "sub" / f".b.json.x2{PARTIAL}"
    live.parent.mkdir()
    old.write_text("{")
    live.write_text("{")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    assert remove_partials(tmp_path) == [old] and live.exists() and not old.exists()
