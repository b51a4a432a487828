"""The ``methods`` step: every task-vector method (mean difference, two PCA variants, function vector, LTV) at its
dev-chosen site and strength, at a matched budget (:mod:`tvmech.experiments.method_comparison`)."""

from tvmech.experiments import method_comparison
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import methods_plots
from tvmech.plots.mechanism_plots import by_scoring
from tvmech.plots.spread import mean_text


def key_number(rows: list[dict]) -> str:
    """Each method's mean test accuracy over tasks (each task's headline scoring)."""
    rows = by_scoring(rows)
    return "; ".join(f"{m} {mean_text([r for r in rows if r['method'] == m])}"
                     for m in dict.fromkeys(r["method"] for r in rows))


STEP = register(Step(
    "methods", method_comparison, order=25,
    figures=(Figure("methods", lambda d: methods_plots.methods_figure(d.rows, d.model_name), "methods",
                    "Every task-vector method at its dev-chosen layer and strength, matched budget: test accuracy "
                    "per task (hover: the site, α and budget).", key_number),),
    quick={"tasks": ("antonym",), "layer_count": 2, "alphas": (1.0, 4.0), "budget": 16, "fv_prompts": 4,
           "n_dev": 16},
    seeds={"paper": (0, 1, 2)},
    cost={"quick": "631 s on the CPU shared by ~8 jobs (load 16-20; 117 s CPU time)", "paper": "not measured"},
))
