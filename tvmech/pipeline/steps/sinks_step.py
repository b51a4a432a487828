"""The ``sinks`` step: attention statistics of the key heads against random heads (:mod:`tvmech.experiments.sinks`).
It reads the key-head step's numbers: its key heads (where saved with the same settings; the tasks without them
are scored here) and, for the head heatmap, its scores."""

from tvmech.experiments import key_heads, sinks
from tvmech.pipeline.registry import Drawing, Figure, Session, Step, cached_rows, register
from tvmech.pipeline.steps.key_heads_step import QUICK
from tvmech.plots import interactive, mechanism_plots
from tvmech.plots.spread import mean_text

SCORES = "key_heads_layers"


def saved_key_sets(cfg: sinks.Config, session: Session) -> dict:
    """``{"key_sets": task -> key heads}`` of the key-head step's saved numbers (its table, and each task's cached
    job) when their settings are those of ``cfg``'s key-head part; empty under ``--force`` or when none match."""
    if session.force:
        return {}
    want = {k: v for k, v in {**cfg.key_heads_config().settings(), "model": session.model_name}.items()
            if k != "tasks"}
    sets: dict = {}
    saved = session.store.load(SCORES)
    if saved is not None and {k: v for k, v in saved.settings.items() if k != "tasks"} == want:
        sets.update(key_heads.key_sets_from_rows(saved.rows))
    for task in cfg.tasks:
        rows = cached_rows(session, SCORES, task, want)
        if rows is not None:
            sets.update(key_heads.key_sets_from_rows(rows))
    return {"key_sets": sets} if sets else {}


def key_number(rows: list[dict]) -> str:
    return "attention to the first token: key heads {}, layer-matched random {}".format(
        mean_text([r for r in rows if r["set"] == "key" and r["metric"] == "first"], "value"),
        mean_text([r for r in rows if r["set"] == "random_layer_matched" and r["metric"] == "first"], "value"))


def _heatmap(d: Drawing):
    """The key-head step's scores with these attention statistics (none before the key-head step is saved)."""
    scores = d.reads.get(SCORES)
    return None if scores is None else interactive.head_heatmap_figure(scores, d.model_name, d.rows)


STEP = register(Step(
    "sinks", sinks, order=90, reads=(SCORES,), inputs=saved_key_sets,
    figures=(
        Figure("attention_sinks", lambda d: mechanism_plots.sinks_figure(d.rows, d.model_name, d.config.threshold),
               "attention_sinks", "Attention from the query: key heads vs random heads.", key_number),
        Figure("key_heads_heatmap", _heatmap, "attention_sinks_heads", "Every head's score; hover: exact ablation "
               "effect, key-head share, attention-sink statistics."),
    ),
    quick=QUICK,
    seeds={"paper": (0, 1, 2)},
    cost={"quick": "9 s", "paper": "2 s, 3 seeds"},
))
