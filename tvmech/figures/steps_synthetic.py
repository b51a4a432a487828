"""Figure steps of the synthetic-ICL experiments (issue 6): train a vanilla and a TVP-loss model from
scratch per task, then draw training curves, task-vector prompting per layer, PCA with cluster
sharpness, robustness and learned-vs-extracted vectors. Orchestration only.

Presets (``--synthetic-preset``): ``quick`` (the discrete offset task, a 4-layer d_model-64 model,
1500 steps; a few minutes on a 2-core CPU) and ``gpu`` (all three tasks, an 8-layer d_model-256 model,
5000 steps of batch 256). Trained models are saved (weights + JSON) under
``<out>/synthetic/<preset>/<task>/{vanilla,tvp}`` and reused when their settings match; training
checkpoints with Adam state (for resuming an interrupted run) go to ``$TVMECH_CACHE/synthetic``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict

from tvmech.core.io import cache_root
from tvmech.synthetic import (ModelConfig, SyntheticModel, SyntheticTask, TrainConfig, learned_vs_extracted, robustness,
                         train, tv_prompting, vector_geometry)
from tvmech.figures import synthetic_plots as sp
from tvmech.figures.cache import cached
from tvmech.figures.export import save_figure

PRESETS: dict[str, dict] = {
    "quick": {
        "tasks": {"offset": {"n_values": 16, "n_offsets": 8}},
        "model": {"n_layers": 4, "d_model": 64, "n_heads": 4, "d_mlp": 128},
        "train": {"steps": 1500, "batch_size": 32, "lr": 1e-3, "tvp_weight": 1.0, "tvp_layer": 2, "n_demos": 5,
                  "log_every": 50},
        "n_eval": 512, "ltv_steps": 200,
    },
    "gpu": {
        "tasks": {"offset": {"n_values": 32, "n_offsets": 16}, "linear": {"dim": 8}, "sinusoid": {"x_range": 5.0}},
        "model": {"n_layers": 8, "d_model": 256, "n_heads": 8, "d_mlp": 1024},
        "train": {"steps": 5000, "batch_size": 256, "lr": 5e-4, "tvp_weight": 1.0, "tvp_layer": 4, "n_demos": 10,
                  "log_every": 200},
        "n_eval": 2048, "ltv_steps": 300,
    },
}
FIGURES = ("curves", "tv_prompting", "pca", "robustness", "ltv")


def _model(ctx: dict, args: argparse.Namespace, preset: str, task: SyntheticTask, which: str) -> SyntheticModel:
    """The trained vanilla (λ = 0) or TVP model: loaded from ``<out>/synthetic`` if it matches, else trained."""
    p = PRESETS[preset]
    tcfg = TrainConfig(**{**p["train"], "seed": args.seed, "tvp_weight": p["train"]["tvp_weight"] if which == "tvp" else 0.0})
    mcfg = ModelConfig(**p["model"], seed=args.seed)
    final = args.out / "synthetic" / preset / task.name / which
    if (final / "checkpoint.json").is_file() and not args.force:
        meta = json.loads((final / "checkpoint.json").read_text())
        if meta.get("train") == asdict(tcfg) and meta.get("model") == asdict(mcfg) and meta.get("task") == asdict(task):
            return SyntheticModel.load(final, ctx["device"])[0]
    work = cache_root() / "synthetic" / preset / task.name / f"{which}-seed{args.seed}"
    resume = (work / "checkpoint.json").is_file() and not args.force
    if resume:
        meta = json.loads((work / "checkpoint.json").read_text())
        resume = meta.get("train") == asdict(tcfg) and meta.get("model") == asdict(mcfg)
    elif work.exists():
        shutil.rmtree(work)
    model = SyntheticModel(task, mcfg).to(ctx["device"])
    res = train(model, tcfg, checkpoint=work, save_every=max(tcfg.steps // 10, 1), resume=resume)
    model.save(final, state={"train": asdict(tcfg), "step": tcfg.steps, "curve": res.curve})  # weights only
    return model


def _curve(args: argparse.Namespace, preset: str, task: str, which: str) -> list[dict]:
    meta = json.loads((args.out / "synthetic" / preset / task / which / "checkpoint.json").read_text())
    return [{"model": which, **r} for r in meta["curve"]]


def step_synthetic(ctx: dict, args: argparse.Namespace) -> None:
    preset = args.synthetic_preset
    p = PRESETS[preset]
    for name, task_kw in p["tasks"].items():
        task = SyntheticTask(name, **task_kw)
        layer, n, n_demos = p["train"]["tvp_layer"], p["n_eval"], p["train"]["n_demos"]
        settings = {"preset": preset, **p, "tasks": {name: task_kw}, "seed": args.seed}
        stem = f"synthetic_{name}"
        models: dict[str, SyntheticModel] = {}

        def get(which: str) -> SyntheticModel:
            if which not in models:
                models[which] = _model(ctx, args, preset, task, which)
            return models[which]

        def both() -> dict[str, SyntheticModel]:
            return {w: get(w) for w in ("vanilla", "tvp")}

        results: dict[str, tuple] = {}
        for fig in FIGURES:
            if fig == "ltv" and not task.discrete:
                continue
            rows, meta = cached(args.out / f"{stem}_{fig}.json", settings, args.force, ctx)
            if rows is None:
                if fig == "curves":
                    both()
                    rows = [r for w in ("vanilla", "tvp") for r in _curve(args, preset, name, w)]
                elif fig == "tv_prompting":
                    rows = [{"model": w, **r} for w, m in both().items()
                            for r in tv_prompting(m, n=n, n_demos=n_demos, seed=args.seed + 1)]
                elif fig == "pca":
                    rows, scores = [], []
                    for w, m in both().items():
                        pts, sc = vector_geometry(m, n=min(n, 512), n_demos=n_demos, seed=args.seed + 2)
                        rows += [{"model": w, **r} for r in pts]
                        scores += [{"model": w, **r} for r in sc]
                    meta = {**meta, "sharpness": scores}
                elif fig == "robustness":
                    rows = robustness(both(), layer, n=n, n_demos=n_demos, seed=args.seed + 3)
                else:
                    ks = list(range(task.n_offsets))
                    rows = [{"model": w, **r} for w, m in both().items()
                            for r in learned_vs_extracted(m, layer, ks, n_demos=n_demos, seed=args.seed,
                                                          ltv_steps=p["ltv_steps"])]
            results[fig] = (rows, meta)
        title = f" — {name}, preset {preset}"
        figs = {
            "curves": sp.training_curves_figure(results["curves"][0], "Training from scratch: ICL loss and TVP-loss"
                                                + title),
            "tv_prompting": sp.tv_prompting_figure(results["tv_prompting"][0], layer),
            "pca": sp.pca_figure(results["pca"][0], results["pca"][1]["sharpness"], task.param_names[0]),
            "robustness": sp.robustness_figure(results["robustness"][0], layer),
        }
        if "ltv" in results:
            figs["ltv"] = sp.ltv_figure(results["ltv"][0], layer)
        for fig, figure in figs.items():
            if fig != "curves":
                figure.update_layout(title_text=f"{figure.layout.title.text}{title}")
            rows, meta = results[fig]
            paths = save_figure(figure, args.out, f"{stem}_{fig}", rows, meta, png=not args.no_png)
            print(f"{stem}_{fig}: {', '.join(str(x) for x in paths.values() if x)}")


STEPS = {"synthetic": step_synthetic}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--synthetic-preset", choices=list(PRESETS), default="quick",
                   help="synthetic ICL: 'quick' (offset task, minutes on a CPU) or 'gpu' (all tasks, larger model)")


__all__ = ["PRESETS", "STEPS", "add_arguments", "step_synthetic"]
