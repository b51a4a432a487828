"""The ``key_heads`` step: key heads by Taylor score, ablated against random head sets, the score against exact
ablation, and where they sit (:mod:`tvmech.experiments.key_heads`)."""

from tvmech.experiments import key_heads
from tvmech.pipeline.registry import Drawing, Figure, Step, register
from tvmech.pipeline.steps.ov_circuits_step import two_scorings
from tvmech.plots import mechanism_plots
from tvmech.plots.mechanism_plots import by_scoring
from tvmech.plots.spread import mean_text

# the quick preset's values of the head-scoring fields (shared with the sinks step, whose key heads they are)
QUICK = {"alphas": (1.0, 4.0), "n_score": 8, "n_random": 2, "exact_every": 4}


def key_number(rows: list[dict]) -> str:
    rows = by_scoring(rows)
    return "no ablation {}, key heads zero-ablated {}".format(
        mean_text([r for r in rows if r["set"] == "none"]),
        mean_text([r for r in rows if r["set"] == "key" and r["kind"] == "zero"]))


def _layers(d: Drawing):
    n_layers = max(r["layer"] for r in d.rows) + 1
    return mechanism_plots.key_layers_figure(d.rows, n_layers, d.config.layer, d.model_name)


STEP = register(Step(
    "key_heads", key_heads, order=80,
    figures=(
        Figure("key_heads_ablation", lambda d: mechanism_plots.key_ablation_figure(d.rows, d.model_name),
               "key_heads_ablation", "Ablating the key heads vs random head sets (layer-matched and all layers).",
               key_number),
        Figure("key_heads_ablation_first_token", lambda d: mechanism_plots.key_ablation_figure(
            d.rows, d.model_name, "first_token") if two_scorings(d.rows) else None, "key_heads_ablation",
               "Key-head ablation, full-vocabulary scoring."),
        Figure("key_heads_taylor", lambda d: mechanism_plots.taylor_exact_figure(d.rows, d.model_name),
               "key_heads_taylor", "First-order (Taylor) head score against exact ablation."),
        Figure("key_heads_layers", _layers, "key_heads_layers", "Where the key heads sit, per layer."),
    ),
    quick=QUICK,
    seeds={"paper": (0, 1, 2)},
    cost={"quick": "36 s", "paper": "51 s, 3 seeds (H100)"},
))
