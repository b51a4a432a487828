"""The ``icl`` step: zero-shot vs k-shot in-context accuracy per task (:mod:`tvmech.experiments.icl`)."""

from tvmech.experiments import icl
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import behaviour_plots
from tvmech.plots.spread import mean_text


def key_number(rows: list[dict]) -> str:
    """The mean accuracy at each k."""
    return "mean accuracy " + ", ".join(f"k={k}: {mean_text([r for r in rows if r['k'] == k])}"
                                        for k in sorted({r["k"] for r in rows}))


STEP = register(Step(
    "icl", icl, order=10,
    figures=(Figure("icl_accuracy", lambda d: behaviour_plots.icl_accuracy_figure(d.rows, d.model_name),
                    "icl_accuracy", "Zero-shot vs k-shot in-context accuracy per task.", key_number),),
    quick={"ks": (0, 1, 5)},
    cost={"quick": "23 s", "paper": "30 s"},
))
