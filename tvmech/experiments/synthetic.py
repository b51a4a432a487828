"""Synthetic ICL (arXiv 2501.09240): a vanilla and a TVP-loss model trained from scratch per task, then
training curves, task-vector prompting per layer, PCA with cluster sharpness, robustness and learned vs
extracted vectors (``figures/synthetic_<task>_<figure>.json``).

Unlike the other experiments this one needs no pretrained model: it trains its own. Trained models are
saved (weights + JSON) under ``<directory>/<preset>/<task>/{vanilla,tvp}`` and reused when their settings
match; training checkpoints with Adam state (to resume an interrupted run) go to ``$TVMECH_CACHE/synthetic``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

from tvmech.core.io import cache_root
from tvmech.experiments.common import option
from tvmech.synthetic import (
    ModelConfig,
    SyntheticModel,
    SyntheticTask,
    TrainConfig,
    learned_vs_extracted,
    robustness,
    train,
    tv_prompting,
    vector_geometry,
)

PRESETS: dict[str, dict] = {
    # the discrete offset task, a 4-layer d_model-64 model, 1500 steps: a few minutes on a 2-core CPU
    "quick": {
        "tasks": {"offset": {"n_values": 16, "n_offsets": 8}},
        "model": {"n_layers": 4, "d_model": 64, "n_heads": 4, "d_mlp": 128},
        "train": {"steps": 1500, "batch_size": 32, "lr": 1e-3, "tvp_weight": 1.0, "tvp_layer": 2, "n_demos": 5,
                  "log_every": 50},
        "n_eval": 512, "ltv_steps": 200,
    },
    # the figure script's quick preset: the quick setting at 600 steps (about 3 minutes for both models on a 2-core
    # CPU; too short for the task vector to emerge reliably: a smoke run of the step, not a result)
    "small": {
        "tasks": {"offset": {"n_values": 16, "n_offsets": 8}},
        "model": {"n_layers": 4, "d_model": 64, "n_heads": 4, "d_mlp": 128},
        "train": {"steps": 600, "batch_size": 32, "lr": 1e-3, "tvp_weight": 1.0, "tvp_layer": 2, "n_demos": 5,
                  "log_every": 50},
        "n_eval": 256, "ltv_steps": 100,
    },
    # all three tasks, an 8-layer d_model-256 model, 5000 steps of batch 256
    "gpu": {
        "tasks": {"offset": {"n_values": 32, "n_offsets": 16}, "linear": {"dim": 8}, "sinusoid": {"x_range": 5.0}},
        "model": {"n_layers": 8, "d_model": 256, "n_heads": 8, "d_mlp": 1024},
        "train": {"steps": 5000, "batch_size": 256, "lr": 5e-4, "tvp_weight": 1.0, "tvp_layer": 4, "n_demos": 10,
                  "log_every": 200},
        "n_eval": 2048, "ltv_steps": 300,
    },
}
FIGURES = ("curves", "tv_prompting", "pca", "robustness", "ltv")  # "ltv" only for discrete tasks
MODELS = ("vanilla", "tvp")


@dataclass(frozen=True)
class Config:
    """Settings of the synthetic experiment (flags ``--synthetic-*``)."""

    PREFIX = "synthetic"

    preset: str = option("quick", "'quick' (offset task, minutes on a CPU), 'small' (quick at 600 steps: a smoke "
                                  "run) or 'gpu' (all tasks, larger model)",
                         choices=tuple(PRESETS))
    seed: int = option(0, "seed of the models, the batches and the evaluations")

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"synthetic preset {self.preset!r} is not valid; valid: {list(PRESETS)}")

    def settings(self, task: str) -> dict:
        """The saved settings of one task's figures."""
        p = PRESETS[self.preset]
        return {"preset": self.preset, **p, "tasks": {task: p["tasks"][task]}, "seed": self.seed}

    def task_names(self) -> list[str]:
        return list(PRESETS[self.preset]["tasks"])

    def task(self, name: str) -> SyntheticTask:
        return SyntheticTask(name, **PRESETS[self.preset]["tasks"][name])


@dataclass
class Result:
    """Per task and figure its rows, and per task the cluster sharpness of the PCA figure."""

    # the keys of tables(), one set per task of the preset ("ltv" only for discrete tasks)
    TABLES: ClassVar[tuple[str, ...]] = tuple(f"synthetic_{{task}}_{f}" for f in FIGURES)

    config: Config
    figures: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # task -> figure -> rows
    sharpness: dict[str, list[dict]] = field(default_factory=dict)  # task -> η² rows

    def rows(self) -> list[dict]:
        """The task-vector prompting rows of every task (tagged ``task``)."""
        return [{"task": t, **r} for t, figs in self.figures.items() for r in figs["tv_prompting"]]

    def tables(self) -> dict[str, list[dict]]:
        return {f"synthetic_{t}_{f}": rows for t, figs in self.figures.items() for f, rows in figs.items()}


def trained_model(config: Config, task: SyntheticTask, which: str, directory: Path, device: str = "cpu",
                  force: bool = False, *, progress: bool = True) -> SyntheticModel:
    """The vanilla (λ = 0) or TVP model: loaded from ``directory`` if its settings match, else trained.

    Args:
        config: the settings.
        task: the synthetic task.
        which: ``"vanilla"`` or ``"tvp"``.
        directory: where trained models are kept.
        device: torch device.
        force: retrain even where a saved model matches.
        progress: show the training bar.

    Returns:
        The trained model.
    """
    if which not in MODELS:
        raise ValueError(f"synthetic model {which!r} is not valid; valid: {list(MODELS)}")
    p = PRESETS[config.preset]
    tcfg = TrainConfig(**{**p["train"], "seed": config.seed,
                          "tvp_weight": p["train"]["tvp_weight"] if which == "tvp" else 0.0})
    mcfg = ModelConfig(**p["model"], seed=config.seed)
    final = Path(directory) / config.preset / task.name / which
    if (final / "checkpoint.json").is_file() and not force:
        meta = json.loads((final / "checkpoint.json").read_text())
        if meta.get("train") == asdict(tcfg) and meta.get("model") == asdict(mcfg) and meta.get("task") == asdict(task):
            return SyntheticModel.load(final, device)[0]
    work = cache_root() / "synthetic" / config.preset / task.name / f"{which}-seed{config.seed}"
    resume = (work / "checkpoint.json").is_file() and not force
    if resume:
        meta = json.loads((work / "checkpoint.json").read_text())
        resume = meta.get("train") == asdict(tcfg) and meta.get("model") == asdict(mcfg)
    elif work.exists():
        shutil.rmtree(work)
    model = SyntheticModel(task, mcfg).to(device)
    res = train(model, tcfg, checkpoint=work, save_every=max(tcfg.steps // 10, 1), resume=resume, progress=progress)
    model.save(final, state={"train": asdict(tcfg), "step": tcfg.steps, "curve": res.curve})  # weights only
    return model


def run_task(config: Config, name: str, directory: Path, device: str = "cpu", force: bool = False,
             figures: tuple[str, ...] = FIGURES, *, progress: bool = True) -> tuple[dict[str, list[dict]], list[dict]]:
    """Train (or load) both models of one task (``progress``: their training bars) and compute ``figures``.

    Returns:
        Figure -> rows, and the sharpness rows (empty unless ``"pca"`` is computed).
    """
    task = config.task(name)
    p = PRESETS[config.preset]
    layer, n, n_demos = p["train"]["tvp_layer"], p["n_eval"], p["train"]["n_demos"]
    models = {w: trained_model(config, task, w, directory, device, force, progress=progress) for w in MODELS}
    out: dict[str, list[dict]] = {}
    scores: list[dict] = []
    for fig in figures:
        if fig == "curves":
            out[fig] = [{"model": w, **r} for w in MODELS for r in json.loads(
                (Path(directory) / config.preset / name / w / "checkpoint.json").read_text())["curve"]]
        elif fig == "tv_prompting":
            out[fig] = [{"model": w, **r} for w, m in models.items()
                        for r in tv_prompting(m, n=n, n_demos=n_demos, seed=config.seed + 1)]
        elif fig == "pca":
            out[fig] = []
            for w, m in models.items():
                pts, sc = vector_geometry(m, n=min(n, 512), n_demos=n_demos, seed=config.seed + 2)
                out[fig] += [{"model": w, **r} for r in pts]
                scores += [{"model": w, **r} for r in sc]
        elif fig == "robustness":
            out[fig] = robustness(models, layer, n=n, n_demos=n_demos, seed=config.seed + 3)
        elif fig == "ltv" and task.discrete:
            out[fig] = [{"model": w, **r} for w, m in models.items()
                        for r in learned_vs_extracted(m, layer, list(range(task.n_offsets)), n_demos=n_demos,
                                                      seed=config.seed, ltv_steps=p["ltv_steps"], progress=progress)]
    return out, scores


def run(config: Config = Config(), *, directory: Path, device: str = "cpu", force: bool = False,
        progress: bool = True) -> Result:
    """Every task of the preset (see :func:`run_task`).

    Args:
        config: the settings.
        directory: where trained models are kept.
        device: torch device.
        force: retrain even where saved models match.
        progress: show the training bars (also off under ``TQDM_DISABLE=1``).

    Returns:
        The :class:`Result`.
    """
    result = Result(config)
    for name in config.task_names():
        result.figures[name], result.sharpness[name] = run_task(config, name, directory, device, force,
                                                                         progress=progress)
    return result
