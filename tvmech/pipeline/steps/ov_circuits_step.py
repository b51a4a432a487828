"""The ``ov_circuits`` step: θ replaced by its OV / MLP / attention effects, or shown only to some paths
(:mod:`tvmech.experiments.ov_reconstruction`); the α sweep and the full-vocabulary views where the rows have
them."""

from tvmech.experiments import ov_reconstruction
from tvmech.pipeline.registry import Drawing, Figure, Step, register
from tvmech.plots import mechanism_plots
from tvmech.plots.mechanism_plots import by_scoring
from tvmech.plots.spread import mean_text


def two_scorings(rows: list[dict]) -> bool:
    """Whether some task's rows were scored two ways (then the full-vocabulary figure is drawn too)."""
    seen: dict[str, set] = {}
    for r in rows:
        seen.setdefault(r["task"], set()).add(r.get("scoring"))
    return any(len(v) > 1 for v in seen.values())


def key_number(rows: list[dict]) -> str:
    rows = by_scoring(rows)
    return "LTV {}, zero-shot {}, θ through MLPs only {}, values only {}".format(
        *(mean_text([r for r in rows if r["method"] == m]) for m in ("ltv", "zero_shot", "path_mlp", "path_v")))


def _alpha_sweep(scoring: str):
    def draw(d: Drawing):
        if not any("@" in r["method"] for r in d.rows) or (scoring != "own" and not two_scorings(d.rows)):
            return None
        return mechanism_plots.alpha_sweep_figure(d.rows, d.model_name, scoring)
    return draw


TABLE = "ov_reconstruction"
STEP = register(Step(
    "ov_circuits", ov_reconstruction, order=70,
    figures=(
        Figure(TABLE, lambda d: mechanism_plots.reconstruction_figure(d.rows, d.model_name), TABLE,
               "θ replaced by its OV / MLP / attention effects, or shown only to some paths.", key_number),
        Figure("ov_reconstruction_first_token", lambda d: mechanism_plots.reconstruction_figure(
            d.rows, d.model_name, "first_token") if two_scorings(d.rows) else None, TABLE,
               "The same, scored by the full-vocabulary first token."),
        Figure("ov_alpha_sweep", _alpha_sweep("own"), TABLE, "Each re-injected effect scaled by α: a wrong direction "
               "or too small?"),
        Figure("ov_alpha_sweep_first_token", _alpha_sweep("first_token"), TABLE, "The α sweep, full-vocabulary "
               "scoring."),
    ),
    quick={"alphas": (1.0, 4.0)},
    seeds={"paper": (0, 1, 2)},
    cost={"quick": "26 s", "paper": "70 s, 3 seeds (522 s on the 2-core CPU)"},
))
