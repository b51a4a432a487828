"""Saved numbers for the figure steps: reuse them when the settings match, resume interrupted runs."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from tvmech.core.io import write_json
from tvmech.methods.learned import LTVConfig, learn_task_vector
from tvmech.data.tasks import builtin_tasks
from tvmech.interventions.task_vector import TaskVector


def describe_device(device: str) -> str:
    """``'cpu'``, or the accelerator's name with the torch device, e.g. ``'NVIDIA H100 80GB HBM3 (cuda)'``."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} ({device})"
    return str(device)


def meta(ctx: dict, settings: dict) -> dict:
    """What a figure's JSON records besides its rows: the settings, the device and the date of the run."""
    return {"settings": settings, "device": describe_device(ctx["device"]), "date": time.strftime("%Y-%m-%d")}


def cached(path: Path, settings: dict, force: bool, ctx: dict) -> tuple[list[dict] | None, dict]:
    """Saved rows and meta for these settings (the meta keeps the device and date of the run that
    computed them); ``(None, fresh meta)`` when there are none."""
    if not force and path.is_file():
        data = json.loads(path.read_text())
        if data.get("meta", {}).get("settings") == settings:
            return data["rows"], data["meta"]
    return None, meta(ctx, settings)


def per_task_rows(path: Path, settings: dict, tasks: list[str], compute: Callable[[str], list[dict]]) -> list[dict]:
    """Compute rows task by task, saving after each one in ``<name>.partial.json``, so an interrupted
    run resumes at the first task without rows (for the same settings)."""
    partial = path.with_name(path.stem + ".partial.json")
    key = {k: v for k, v in settings.items() if k != "tasks"}
    rows: list[dict] = []
    if partial.is_file():
        data = json.loads(partial.read_text())
        rows = data["rows"] if data.get("settings") == key else []
    for task in tasks:
        if not any(r["task"] == task for r in rows):
            rows += compute(task)
            write_json(partial, {"settings": key, "rows": rows})
    partial.unlink(missing_ok=True)
    return [r for t in tasks for r in rows if r["task"] == t]


def layer_vectors(ctx: dict, args: argparse.Namespace, names: list[str], layer: int) -> dict[str, TaskVector]:
    """LTVs at ``layer`` for ``names``, kept under ``<out>/vectors`` and reused when the config matches."""
    cfg = LTVConfig(steps=args.ltv_steps, seed=args.seed)
    out = {}
    for name in names:
        path = args.out / "vectors" / f"{name}_L{layer}"
        if path.with_suffix(".json").is_file() and not args.force:
            vec = TaskVector.load(path)
            if vec.config == json.loads(json.dumps(cfg.__dict__)):
                out[name] = vec
                continue
        vec = learn_task_vector(ctx["model"](), builtin_tasks((name,))[0], layers=(layer,), config=cfg)
        vec.save(path, overwrite=True)
        out[name] = vec
    return out
