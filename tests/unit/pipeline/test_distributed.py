"""The pipeline's steps spread over two worker processes under torchrun (gloo, CPU): each rank computes its share
of the tasks through the per-task cache, the tables equal a single process's, and a rerun (with two ranks or
one) reuses every task either rank saved."""

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
from test_crash import ROOT, WORD_TASKS, _save_tiny

TASKS = WORD_TASKS[:4]


def _run(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def _rows(out) -> list[dict]:
    return json.loads((out / "icl_accuracy.json").read_text())["rows"]


def test_two_ranks_share_the_tasks_equal_one_process_and_resume(tmp_path):
    model_dir, one, two = tmp_path / "tiny", tmp_path / "one", tmp_path / "two"
    _save_tiny(model_dir)
    args = ["-m", "tvmech.pipeline", "--model", str(model_dir), "--only", "icl", "--icl-ks", "0", "1",
            "--n-test", "6", "--no-png", "--device", "cpu", "--tasks", *TASKS]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _run([sys.executable, *args, "--out", str(one)], env)
    first = _run([*torchrun, *args, "--out", str(two)], env)
    assert _rows(two) == _rows(one) and [r["task"] for r in _rows(two)][::2] == list(TASKS)
    assert first.stdout.count("gallery:") == 1  # rank 0 alone prints
    assert not (two / ".tasks" / ".claims").exists()  # the run's claims are gone with it, and their folder
    cache = two / ".tasks" / "icl_accuracy"
    record = {p.stem: json.loads(p.read_text()) for p in cache.glob("*.json")}
    assert set(record) == set(TASKS)
    assert {r["rank"] for r in record.values()} == {0, 1}  # each rank claimed some of the tasks
    assert "rank" not in json.loads((one / ".tasks" / "icl_accuracy" / f"{TASKS[0]}.json").read_text())

    # as if killed before the end: the step's table and two tasks are missing
    dropped = TASKS[1:3]
    for task in dropped:
        (cache / f"{task}.json").unlink()
    (two / "icl_accuracy.json").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    _run([*torchrun, *args, "--out", str(two)], env)
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json") if p.name in kept} == kept  # reused
    assert all(json.loads((cache / f"{t}.json").read_text()).get("rank") in (0, 1) for t in dropped)  # redone
    assert _rows(two) == _rows(one)

    # one process reuses what the two ranks saved: nothing recomputed
    kept = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")}
    (two / "icl_accuracy.json").unlink()
    _run([sys.executable, *args, "--out", str(two)], env)
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.json")} == kept
    assert _rows(two) == _rows(one)


def _as_two_ranks(monkeypatch, fn) -> dict:
    """``fn()`` run by two threads posing as ranks 0 and 1 of a torchrun job (their barrier: a thread barrier)."""
    from tvmech.pipeline import distributed

    local, gate = threading.local(), threading.Barrier(2, timeout=60)
    monkeypatch.setattr(distributed, "rank", lambda: local.rank)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "barrier", lambda: gate.wait())
    results, errors = {}, []

    def body(r):
        local.rank = r
        try:
            results[r] = fn()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)
            gate.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in (0, 1)]
    level = logging.getLogger("tvmech").level  # (rank 1 quietens the package's logger)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        logging.getLogger("tvmech").setLevel(level)
    assert not errors, errors
    return results


@pytest.mark.parametrize("per_task", [True, False])
def test_seeds_are_shared_over_the_ranks_and_gathered_as_by_one_process(tmp_path, monkeypatch, per_task):
    from tvmech.experiments import icl
    from tvmech.pipeline import cli, distributed
    from tvmech.pipeline.steps import STEPS

    calls = []

    def fake_run(model, config, **kw):
        time.sleep(0.05)  # (so that both ranks get to claim jobs)
        calls.append((distributed.rank(), config.seed, config.tasks))
        return icl.Result(config, [{"task": t, "k": k, "accuracy": 0.1 * (config.seed + 1) + 0.01 * i, "n": 1,
                                    "scoring": "x"} for i, t in enumerate(config.tasks) for k in (0, 5)])

    monkeypatch.setattr(icl, "run", fake_run)
    monkeypatch.setattr(cli, "load_model", lambda *a, **k: object())
    monkeypatch.setitem(STEPS, "icl", replace(STEPS["icl"], jobs="task" if per_task else "whole"))
    argv = ["--only", "icl", "--tasks", "antonym", "nli", "sentiment", "--no-png", "--icl-ks", "0", "5",
            "--seeds", "0", "1"]
    assert cli.main(["--out", str(tmp_path / "one"), *argv]) == 0
    alone = sorted((s, t) for _, s, t in calls)
    calls.clear()
    two = tmp_path / "two"
    assert _as_two_ranks(monkeypatch, lambda: cli.main(["--out", str(two), *argv])) == {0: 0, 1: 0}
    assert sorted((s, t) for _, s, t in calls) == alone  # every job once
    if per_task:  # the (seed, task) jobs of both seeds in one pool, each claimed by one rank
        assert {r for r, _, _ in calls} == {0, 1} and all(len(t) == 1 for _, _, t in calls)
    else:  # the seeds shared
        assert sorted(calls) == [(0, 0, ("antonym", "nli", "sentiment")), (1, 1, ("antonym", "nli", "sentiment"))]
    assert _rows(two) == _rows(tmp_path / "one")
    assert json.loads((two / "icl_accuracy.json").read_text())["meta"]["settings"]["seeds"] == [0, 1]
    calls.clear()  # everything saved: nothing computed again, on either rank
    assert _as_two_ranks(monkeypatch, lambda: cli.main(["--out", str(two), *argv])) == {0: 0, 1: 0}
    assert calls == []


def test_synthetic_models_are_shared_by_the_ranks_and_trained_once(monkeypatch, tmp_path):
    """Under torchrun the ranks claim the synthetic step's (task, vanilla/TVP) models before rank 0 computes the
    figures, each model trained once (a second pass in the same run, as after the previous step's pool, trains
    nothing); in one process nothing is pretrained (rank 0 trains as it goes)."""
    from tvmech.experiments import synthetic
    from tvmech.pipeline import scheduler
    from tvmech.pipeline.registry import Session
    from tvmech.pipeline.steps import STEPS
    from tvmech.pipeline.store import ResultStore

    calls = []

    def trained(cfg, task, which, *a):
        time.sleep(0.05)
        calls.append((task.name, which))

    monkeypatch.setattr(synthetic, "trained_model", trained)
    monkeypatch.setattr(synthetic, "run_task", lambda *a, **k: pytest.fail("rank 0 computes no figure here"))
    step = replace(STEPS["synthetic"], compute=lambda cfg, session, pretrained: pretrained)
    cfg, session = synthetic.Config(preset="gpu"), Session(ResultStore(tmp_path), lambda: None, "tiny", "cpu")
    assert scheduler._own_way(step, cfg, session, ()) is False and calls == []  # one process: nothing ahead
    assert len(step.prefetch(cfg, session)) == 6  # nothing saved: every model is a job
    two = _as_two_ranks(monkeypatch, lambda: scheduler._own_way(step, cfg, session, ()))
    assert two == {0: True, 1: None}  # rank 0 computes (after the models), rank 1 does not
    every = [(t, w) for t in cfg.task_names() for w in synthetic.MODELS]
    assert sorted(calls) == sorted(every) and len(every) == 6
    calls.clear()
    assert _as_two_ranks(monkeypatch, lambda: scheduler._own_way(step, cfg, session, ())) == {0: True, 1: None}
    assert calls == []


def test_a_job_is_claimed_by_one_rank_only(monkeypatch, tmp_path):
    from tvmech.pipeline import distributed
    from tvmech.pipeline.store import ResultStore

    store = ResultStore(tmp_path)
    assert distributed.claim(store, "a") and distributed.claim(store, "a")  # one process: always
    names = [f"job{i}" for i in range(40)]
    won = _as_two_ranks(monkeypatch, lambda: [n for n in names if distributed.claim(store, n)])
    assert sorted(won[0] + won[1]) == sorted(names)


def test_vectors_of_a_step_computed_by_rank_0_are_trained_by_the_ranks_in_turn(monkeypatch, tmp_path):
    """Before geometry (computed by rank 0 alone) the ranks train its LTVs in turn at the resolved layer; one
    process, a per-task step, or --force trains nothing ahead."""
    from tvmech.experiments import geometry
    from tvmech.pipeline import distributed, scheduler
    from tvmech.pipeline.registry import Session
    from tvmech.pipeline.steps import STEPS
    from tvmech.pipeline.store import ResultStore

    calls = []
    monkeypatch.setattr(scheduler, "learned_vectors", lambda model, cfg, layer, store, tasks: calls.append(
        (distributed.rank(), tasks, layer, cfg.ltv_steps)))
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    cfg = geometry.Config(tasks=("antonym", "nli", "sentiment"), ltv_steps=7).resolve(8)
    session = Session(ResultStore(tmp_path), lambda: None, "tiny", "cpu")
    scheduler.share_vectors(STEPS["geometry"], cfg, session)  # one process
    assert calls == []
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "mine", lambda i, r=rank: i % 2 == r)
        scheduler.share_vectors(STEPS["geometry"], cfg, session)
    assert calls == [(0, ("antonym",), 4, 7), (0, ("sentiment",), 4, 7), (1, ("nli",), 4, 7)]  # middle layer
    calls.clear()
    scheduler.share_vectors(STEPS["icl"], cfg, session)  # names no vectors (its tasks are shared as jobs)
    scheduler.share_vectors(STEPS["geometry"], cfg, replace(session, force=True))
    assert calls == []
