"""The ``linear`` step: W_TV(l), rotation against scaling, and the reconstructed task vector
(:mod:`tvmech.experiments.linear_map`), computed (task, layer) pair by pair. ``linear_map.{html,png}`` is the
reconstructed-TV figure; its JSON and CSV hold every number of the step."""

from tvmech.experiments import linear_map
from tvmech.pipeline.registry import Figure, Step, register
from tvmech.plots import interactive, lens_plots
from tvmech.plots.spread import mean_text

TABLE = "linear_map"


def key_number(rows: list[dict]) -> str:
    deepest = max(x["layer"] for x in rows)
    return "held-out R² of W_TV at the deepest layer: " + mean_text([r for r in rows if r["layer"] == deepest],
                                                                      "r2_heldout")


STEP = register(Step(
    "linear", linear_map, order=110, jobs="task_layer",
    figures=(
        Figure(TABLE, lambda d: lens_plots.reconstruction_figure(d.rows, d.model_name), TABLE,
               "W_TV(l) θ at the final stream in place of the layers, and the fit quality.", key_number),
        Figure("rotation_scaling", lambda d: lens_plots.transition_figure(d.rows, d.model_name), TABLE,
               "Polar decomposition W_TV = QΣ: rotation distance, gain, singular values."),
        Figure("rotation_alignment", lambda d: lens_plots.alignment_figure(d.rows, d.model_name), TABLE,
               "Alignment with the label directions before and after the rotation, with a null."),
        Figure("rotation_by_layer", lambda d: interactive.rotation_layer_figure(d.rows, d.model_name), TABLE,
               "The alignment at one injection layer (slider), decoded tokens on hover."),
    ),
    quick={"tasks": ("antonym",), "layer_count": 2, "map_prompts": 4, "map_heldout": 32, "map_null": 50,
           "map_random": 2, "map_random_fits": 0, "map_vanilla": 0},  # the random-vector null at its smallest
    seeds={"paper": (0, 1, 2)},
    cost={"quick": "185 s", "paper": "175 s, 3 seeds, with the null, LTVs reused (H100)"},
))
