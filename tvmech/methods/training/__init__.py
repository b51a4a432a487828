"""The one training loop behind every trained method: LTV (one run or a batched layer sweep), prompt
tuning with one virtual token, and rank-1 LoRA, and the fast lane they all take.

The model is frozen. A method supplies an :class:`Objective`: groups of trainable leaves and the
per-row loss of a batch of training prompts. With ``G`` groups (one per layer of a sweep, else one),
the loss minimised at a step is

    L = Σ_g L_g,    L_g = (1/B) Σ_{i ∈ batch} ℓ_g(i),    ℓ_g(i) = -(1/|y_i|) Σ_t log p(y_{i,t} | x_i, y_{i,<t} ; θ_g)

(the label NLL averaged over each row's label tokens, then over the batch's rows); the groups share no
parameters, so one backward pass of ``L`` gives every group its own gradient. AdamW steps every group
(``torch.optim.AdamW``; in a CUDA-graphed step :class:`~tvmech.core.optim.GraphAdamW`, the same arithmetic).

What is shared here, so that each method only describes its parameters and its forward pass:

* data: :func:`prepare_data` tokenizes the prompts once and runs the frozen blocks below ``start``
  once, without gradients (:class:`TrainData`); :func:`take_rows` picks a batch of it (replicated once
  per group);
* the fast lane: a method's loss is a :class:`LabelLoss`, a forward pass through blocks ``start..`` on the rows
  the loop hands it (:class:`Rows`) and the positions its writes land on. From those positions the loop freezes
  the prefix (positions before the first written one equal the clean run's under the causal mask: their keys
  and values are computed once per split, :func:`frozen_prefix`, and a step runs the later positions alone; a
  method that writes every position, LoRA, or prepends a token, prompt tuning, freezes nothing); on CUDA it
  keeps static shapes (full-width rows, ``max_labels`` label slots: no host reads) and captures the whole step
  in a CUDA graph (:class:`~tvmech.core.optim.Stepper`) where each row's written positions are distinct and
  the model is not offloaded (:attr:`~tvmech.core.adapter.Adapter.offloaded`);
* the batch order: :class:`BatchOrder`, a seeded permutation of the training rows walked ``B`` at a
  time and redrawn when fewer than ``B`` are left (the same order for every method with one seed);
* divergence: a step whose loss (or whose parameters) is NaN or inf raises :class:`TrainingDiverged`
  carrying the values at the last step whose loss was finite (taken before that step's update, which
  may be the one that broke them);
* validation: every ``eval_every`` steps (and after the last step) each group's validation loss is
  computed; each group keeps the values of its best validation loss, and training stops early when
  every group has gone ``patience`` evaluations without improving;
* the loss curve (``step``, ``loss`` = mean over groups, ``val_loss`` where evaluated) and the wall time
  of every step (CUDA synchronised).
"""

from tvmech.methods.training.lane import Forward, LabelLoss, Rows, frozen_prefix, label_nll, row_nll
from tvmech.methods.training.loop import CHECK_EVERY, Fit, Objective, RowLoss, TrainingDiverged, check_every, fit
from tvmech.methods.training.train_data import BatchOrder, TrainData, prepare_data, query_norm, query_norms, take_rows

__all__ = ["RowLoss", "TrainingDiverged", "TrainData", "prepare_data", "take_rows", "Rows", "Forward", "LabelLoss",
           "row_nll", "label_nll", "frozen_prefix", "query_norm", "query_norms", "BatchOrder", "Objective", "Fit",
           "fit", "CHECK_EVERY", "check_every"]
