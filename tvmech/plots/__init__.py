"""Figure builders, pure: rows in (the JSON rows of :mod:`tvmech.experiments`' results), ``go.Figure`` out.
Nothing here computes, reads or writes files; the command line that runs the experiments and writes the
figures is :mod:`tvmech.pipeline`.

* :mod:`~tvmech.plots.behaviour_plots`: ICL accuracy, the layer sweep (mean and per task), robustness.
* :mod:`~tvmech.plots.geometry_plots`: the tasks' cosine and transfer heatmaps, composition bars.
* :mod:`~tvmech.plots.peft_plots`: LTV against prompt tuning and LoRA.
* :mod:`~tvmech.plots.mechanism_plots`: OV reconstruction, the α sweep, key-head ablation, Taylor against exact,
  key heads per layer, attention sinks.
* :mod:`~tvmech.plots.lens_plots`: the logit lens, W_TV's reconstruction, rotation and scaling, alignment.
* :mod:`~tvmech.plots.interactive`: figures with a layer slider and the head heatmap.
* :mod:`~tvmech.plots.synthetic_plots`: the synthetic-ICL figures.
* :mod:`~tvmech.plots.spread`: mean ± sd over run seeds; :mod:`~tvmech.plots.style`: the palette;
  :mod:`~tvmech.plots.export`: a figure and its rows as the bytes of their HTML, PNG, JSON and CSV files.
"""

from tvmech.plots.behaviour_plots import layer_sweep_figure
from tvmech.plots.lens_plots import lens_heatmap, transition_figure
from tvmech.plots.synthetic_plots import ltv_figure, pca_figure, training_curves_figure, tv_prompting_figure

# the builders the notebooks call (synthetic_plots.robustness_figure is reached through its module: behaviour_plots
# has a robustness_figure of its own)
__all__ = ["layer_sweep_figure", "lens_heatmap", "transition_figure", "training_curves_figure",
           "tv_prompting_figure", "pca_figure", "ltv_figure"]
