"""The figure steps of ``python -m tvmech.figures``: which experiment each step runs, which JSON files hold its
numbers, and which figures it draws from them. Drawing is done by the pure builders of
:mod:`tvmech.figures.plots`, :mod:`~tvmech.figures.geometry_plots`, :mod:`~tvmech.figures.peft_plots`,
:mod:`~tvmech.figures.mechanism_plots`, :mod:`~tvmech.figures.lens_plots` and
:mod:`~tvmech.figures.synthetic_plots`; computing by :mod:`tvmech.experiments`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import plotly.graph_objects as go

from tvmech.data.tasks import builtin_task
from tvmech.experiments import (
    composition,
    geometry,
    icl,
    key_heads,
    layer_sweep,
    linear_map,
    logit_lens,
    ov_reconstruction,
    peft,
    robustness,
    sinks,
    synthetic,
)
from tvmech.experiments.vectors import VectorStore
from tvmech.figures import geometry_plots, interactive, lens_plots, mechanism_plots, peft_plots, plots

Tables = dict[str, list[dict]]
Metas = dict[str, dict]
# a drawn figure: (file name, figure, the table whose rows and meta are saved with it, or None)
Drawn = list[tuple[str, go.Figure, str | None]]


@dataclass
class Context:
    """What a step needs besides its config."""

    out: Path | None  # output directory (figures, their JSON, the LTVs under vectors/); None: draw only
    model: Callable[[], object]  # loads the model on first call
    model_name: str  # recorded in the settings
    device: str  # torch device
    force: bool = False  # recompute even where saved numbers match
    png: bool = True  # write PNGs
    preset: str | None = None  # recorded in the meta of what is computed
    report: list = field(default_factory=list)  # per step run: {"step", "computed", "seconds", "tables"}

    @property
    def vectors(self) -> VectorStore:
        return VectorStore(self.out / "vectors", self.force)


@dataclass(frozen=True)
class Step:
    """One step: an experiment, its saved tables and its figures."""

    name: str  # the name given to --only
    experiment: ModuleType  # a tvmech.experiments module (Config, run)
    tables: tuple[str, ...]  # the JSON files (without .json) that hold the step's numbers
    draw: Callable[[Tables, Metas, object, Context], Drawn]  # tables, metas, resolved config, context -> figures
    per_task: bool = True  # compute task by task, saving after each (resumable); the config has ``tasks``
    inputs: Callable[[object, Context], dict] | None = None  # extra keyword arguments of experiment.run
    # (tasks, layer) of the LTVs that a step not computed task by task trains (from its resolved config): under
    # torchrun the ranks train them in turn before rank 0 computes the step (runner.share_vectors)
    vectors: Callable[[object], tuple[Sequence[str], int]] | None = None
    # a per-task step whose jobs are its (task, layer) pairs (the config's ``layers``, each computed on its own)
    split_layers: bool = False

    def jobs(self, cfg) -> list[tuple[str, dict]]:
        """The jobs of a per-task step: ``(name, fields)``, the name its numbers are cached under and the config
        fields that restrict ``cfg`` (resolved) to it: each task, or with ``split_layers`` each (task, layer)
        pair, named ``<task>_L<layer>`` (tasks outer: the order of the step's rows)."""
        if self.split_layers:
            return [(f"{t}_L{l}", {"tasks": (t,), "layers": (l,)}) for t in cfg.tasks for l in cfg.layers]
        return [(t, {"tasks": (t,)}) for t in cfg.tasks]

    def job_key(self, settings: dict) -> dict:
        """The settings a job's cached numbers must match: the step's, less the fields that name the job."""
        named = ("tasks", "layers") if self.split_layers else ("tasks",)
        return {k: v for k, v in settings.items() if k not in named}


TASKS = ".tasks"  # <out>/.tasks/<table>/<job>.json: each job's numbers of a per-task step


def task_cache(out: Path, step: Step, task: str) -> Path:
    """Where one job's numbers (a task's, :meth:`Step.jobs`) of a per-task step are kept:
    ``<out>/.tasks/<first table>/<job>.json``."""
    return Path(out) / TASKS / step.tables[0] / f"{task}.json"


def cached_task(out: Path, step: Step, task: str, key: dict) -> dict | None:
    """One job's saved numbers ``{"settings", "tables", "device", "date"}`` when they hold every table of the
    step and were computed with the settings ``key`` (:meth:`Step.job_key`); ``None`` otherwise."""
    path = task_cache(out, step, task)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    ok = data.get("settings") == key and all(name in data.get("tables", {}) for name in step.tables)
    return data if ok else None


def _vectors(cfg, ctx: Context) -> dict:
    return {"vectors": ctx.vectors}


def _saved_key_sets(cfg: sinks.Config, ctx: Context) -> dict:
    """The key heads of the key-head step's numbers (each task's cached ones, else key_heads_layers.json) when
    their settings are those of ``cfg``'s key-head part; tasks without them are computed by the sinks step."""
    out: dict = {"vectors": ctx.vectors}
    if ctx.force:  # (only called while computing, with an output directory)
        return out
    want = {k: v for k, v in {**cfg.key_heads_config().settings(), "model": ctx.model_name}.items() if k != "tasks"}
    sets: dict = {}
    path = ctx.out / "key_heads_layers.json"
    if path.is_file():
        data = json.loads(path.read_text())
        saved = data.get("meta", {}).get("settings", {})
        if {k: v for k, v in saved.items() if k != "tasks"} == want:
            sets.update(key_heads.key_sets_from_rows(data["rows"]))
    for task in cfg.tasks:
        found = cached_task(ctx.out, STEPS["key_heads"], task, want)
        if found is not None:
            sets.update(key_heads.key_sets_from_rows(found["tables"]["key_heads_layers"]))
    if sets:
        out["key_sets"] = sets
    return out


def _sweep_references(ctx: Context, tasks) -> dict[str, float]:
    """Zero-shot and ICL means of the layer sweep's saved rows (the robustness figure's reference lines), each
    task under its own scoring (as robustness scores it)."""
    refs = {}
    path = ctx.out / "layer_sweep.json" if ctx.out is not None else None
    if path is not None and path.is_file():
        rows = json.loads(path.read_text())["rows"]
        own = {t: builtin_task(t).scoring for t in tasks}
        for m in ("zero_shot", "icl_5shot"):
            vals = [r["accuracy"] for r in rows if r["method"] == m and r["task"] in tasks
                    and r.get("scoring", own[r["task"]]) == own[r["task"]]]
            if vals:
                refs[m] = sum(vals) / len(vals)
    return refs


def _cosine_matrix(rows: list[dict]) -> tuple[list[str], list[list[float]]]:
    names = list(dict.fromkeys(r["task_a"] for r in rows))
    value = {(r["task_a"], r["task_b"]): r["cosine"] for r in rows}
    return names, [[value[(a, b)] for b in names] for a in names]


def _two_scorings(rows: list[dict]) -> bool:
    """Whether some task's rows were scored two ways (then the full-vocabulary figure is drawn too)."""
    seen: dict[str, set] = {}
    for r in rows:
        seen.setdefault(r["task"], set()).add(r.get("scoring"))
    return any(len(v) > 1 for v in seen.values())


def _draw_ov(t: Tables, m: Metas, cfg, ctx: Context) -> Drawn:
    rows = t["ov_reconstruction"]
    out: Drawn = [("ov_reconstruction", mechanism_plots.reconstruction_figure(rows, ctx.model_name),
                   "ov_reconstruction")]
    if _two_scorings(rows):
        out.append(("ov_reconstruction_first_token",
                    mechanism_plots.reconstruction_figure(rows, ctx.model_name, "first_token"), None))
    if any("@" in r["method"] for r in rows):
        out.append(("ov_alpha_sweep", mechanism_plots.alpha_sweep_figure(rows, ctx.model_name), None))
        if _two_scorings(rows):
            out.append(("ov_alpha_sweep_first_token",
                        mechanism_plots.alpha_sweep_figure(rows, ctx.model_name, "first_token"), None))
    return out


def _draw_key_heads(t: Tables, m: Metas, cfg, ctx: Context) -> Drawn:
    scores = t["key_heads_layers"]
    n_layers = max(r["layer"] for r in scores) + 1
    ablation = t["key_heads_ablation"]
    extra: Drawn = [("key_heads_ablation_first_token", mechanism_plots.key_ablation_figure(
        ablation, ctx.model_name, "first_token"), None)] if _two_scorings(ablation) else []
    return [*extra, ("key_heads_ablation", mechanism_plots.key_ablation_figure(ablation, ctx.model_name),
             "key_heads_ablation"),
            ("key_heads_taylor", mechanism_plots.taylor_exact_figure(t["key_heads_taylor"], ctx.model_name),
             "key_heads_taylor"),
            ("key_heads_layers", mechanism_plots.key_layers_figure(scores, n_layers, cfg.layer, ctx.model_name),
             "key_heads_layers")]


def _draw_sinks(t: Tables, m: Metas, cfg, ctx: Context) -> Drawn:
    """The sink figure, and the head heatmap (the key-head step's scores with these attention statistics)."""
    out: Drawn = [("attention_sinks", mechanism_plots.sinks_figure(t["attention_sinks"], ctx.model_name,
                                                                   cfg.threshold), "attention_sinks")]
    path = ctx.out / "key_heads_layers.json" if ctx.out is not None else None
    if path is not None and path.is_file():
        scores = json.loads(path.read_text())["rows"]
        out.append(("key_heads_heatmap", interactive.head_heatmap_figure(  # data: attention_sinks_heads.json
            scores, ctx.model_name, t["attention_sinks_heads"]), None))
    return out


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("icl", icl, ("icl_accuracy",), lambda t, m, cfg, ctx: [
        ("icl_accuracy", plots.icl_accuracy_figure(t["icl_accuracy"], ctx.model_name), "icl_accuracy")]),
    Step("sweep", layer_sweep, ("layer_sweep",), lambda t, m, cfg, ctx: [
        ("layer_sweep", plots.layer_sweep_figure(t["layer_sweep"], ctx.model_name), "layer_sweep"),
        ("layer_sweep_by_task", plots.layer_sweep_by_task_figure(t["layer_sweep"], ctx.model_name), None)]),
    Step("robustness", robustness, ("robustness",), lambda t, m, cfg, ctx: [
        ("robustness", plots.robustness_figure(t["robustness"], _sweep_references(ctx, cfg.tasks),
                                               m["robustness"].get("note")), "robustness")]),
    Step("geometry", geometry, ("task_transfer", "task_cosine"), lambda t, m, cfg, ctx: [
        ("task_cosine", geometry_plots.cosine_heatmap(*_cosine_matrix(t["task_cosine"]), model_name=ctx.model_name),
         "task_cosine"),
        ("task_transfer", geometry_plots.transfer_heatmap(t["task_transfer"], model_name=ctx.model_name),
         "task_transfer")], per_task=False, inputs=_vectors, vectors=lambda cfg: (cfg.tasks, cfg.layer)),
    Step("composition", composition, ("composition",), lambda t, m, cfg, ctx: [
        ("composition", geometry_plots.composition_bars(t["composition"], model_name=ctx.model_name),
         "composition")], per_task=False, inputs=_vectors,
         vectors=lambda cfg: (cfg.parts, cfg.layer)),
    Step("peft", peft, ("peft",), lambda t, m, cfg, ctx: [
        ("peft", peft_plots.peft_figure(t["peft"], ctx.model_name), "peft")], per_task=False),
    Step("ov_circuits", ov_reconstruction, ("ov_reconstruction",), _draw_ov, inputs=_vectors),
    Step("key_heads", key_heads, ("key_heads_ablation", "key_heads_taylor", "key_heads_layers"), _draw_key_heads,
         inputs=_vectors),
    Step("sinks", sinks, ("attention_sinks", "attention_sinks_heads"), _draw_sinks, inputs=_saved_key_sets),
    Step("lens", logit_lens, ("logit_lens",), lambda t, m, cfg, ctx: [
        ("logit_lens", lens_plots.lens_heatmap(t["logit_lens"], ctx.model_name), "logit_lens"),
        ("logit_lens_by_layer", interactive.lens_layer_figure(t["logit_lens"], ctx.model_name), None)],
         inputs=_vectors),
    # linear_map.{html,png} is the reconstructed-TV figure; its json/csv hold every number of the step
    Step("linear", linear_map, ("linear_map",), lambda t, m, cfg, ctx: [
        ("linear_map", lens_plots.reconstruction_figure(t["linear_map"], ctx.model_name), "linear_map"),
        ("rotation_scaling", lens_plots.transition_figure(t["linear_map"], ctx.model_name), None),
        ("rotation_alignment", lens_plots.alignment_figure(t["linear_map"], ctx.model_name), None),
        ("rotation_by_layer", interactive.rotation_layer_figure(t["linear_map"], ctx.model_name), None)],
         inputs=_vectors, split_layers=True),
)}
# the synthetic step trains its own models and has one set of tables per task: see tvmech.figures.synthetic_step
SYNTHETIC = "synthetic"
STEP_NAMES: tuple[str, ...] = (*STEPS, SYNTHETIC)
CONFIGS: dict[str, type] = {**{n: s.experiment.Config for n, s in STEPS.items()}, SYNTHETIC: synthetic.Config}


def draw(result, model_name: str = "", out: Path | None = None) -> dict[str, go.Figure]:
    """The figures of an experiment's result, as ``python -m tvmech.figures`` draws them (nothing is written).

    Args:
        result: the ``Result`` of a :mod:`tvmech.experiments` module's ``run`` (not the synthetic one: use
            :mod:`tvmech.figures.synthetic_plots`).
        model_name: shown in the titles.
        out: a figures directory to take reference lines from (the robustness figure's, from layer_sweep.json).

    Returns:
        Figure name -> figure.
    """
    step = next((s for s in STEPS.values() if isinstance(result, s.experiment.Result)), None)
    if step is None:
        raise TypeError(f"draw() takes the Result of one of {[s.experiment.__name__ for s in STEPS.values()]}; "
                        f"got {type(result).__qualname__}")
    ctx = Context(out=out, model=lambda: None, model_name=model_name, device="cpu")
    tables = result.tables()
    return {name: fig for name, fig, _ in step.draw(tables, {n: {} for n in tables}, result.config, ctx)}
