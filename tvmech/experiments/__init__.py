"""One module per experiment of the paper, each with a frozen ``Config`` (fields documented in place, defaults
derived from the loaded model where ``None``), ``run(model, config) -> Result`` and a ``Result`` with
``.rows()`` (the rows of its ``figures/*.json``) and ``.tables()`` (named by ``Result.TABLES``, or its one
``TABLE``). No plotting here: see :mod:`tvmech.plots`; the command line that runs them is :mod:`tvmech.pipeline`.

* :mod:`~tvmech.experiments.icl`: zero-shot vs k-shot ICL accuracy.
* :mod:`~tvmech.experiments.layer_sweep`: LTV vs Vanilla TV vs function vector at every 3rd layer.
* :mod:`~tvmech.experiments.robustness`: LTV, Vanilla TV and FV in seven injection configurations (positions by role).
* :mod:`~tvmech.experiments.geometry`: cosine similarity and transfer between the tasks' LTVs.
* :mod:`~tvmech.experiments.composition`: english_french + masculine_feminine on the composed task.
* :mod:`~tvmech.experiments.peft`: LTV vs prefix tuning vs rank-1 LoRA.
* :mod:`~tvmech.experiments.ov_reconstruction`: OV / MLP reconstruction of an LTV (and the mechanism base config).
* :mod:`~tvmech.experiments.key_heads`: Taylor vs exact ablation, key vs random heads, layer histogram.
* :mod:`~tvmech.experiments.sinks`: attention-sink statistics of key vs random heads.
* :mod:`~tvmech.experiments.logit_lens`: logit lens over layers for zero-shot, ICL and LTV prompts.
* :mod:`~tvmech.experiments.linear_map`: W_TV(l), its Jacobian, rotation vs scaling, reconstructed TV.
* :mod:`~tvmech.experiments.synthetic`: synthetic ICL models trained from scratch (vanilla vs TVP-loss).
* :mod:`~tvmech.experiments.vectors`: the LTVs shared by several experiments, trained once and kept on disk.
* :mod:`~tvmech.experiments.common`: config conventions and helpers.

The functions of these modules that the notebooks call on their own (beside ``run``) are exported here.
"""

from tvmech.experiments.key_heads import key_vs_random
from tvmech.experiments.linear_map import polar_report, reconstruction_report
from tvmech.experiments.logit_lens import lens_conditions
from tvmech.experiments.ov_reconstruction import reconstruction_accuracy
from tvmech.experiments.sinks import compare_sets

__all__ = ["reconstruction_accuracy", "key_vs_random", "compare_sets", "polar_report", "reconstruction_report",
           "lens_conditions"]
