"""Ways to make a task vector, and the parameter-efficient methods they are compared with.

* :mod:`.vanilla`: extracted task vectors (mean ICL minus zero-shot query state);
* :mod:`.pca_vectors`: the mean difference and the first principal component of the per-example differences
  (repeng's ``pca_diff`` and ``pca_center``), from one pass over every layer;
* :mod:`.function_vectors`: Todd et al.'s function vectors (mean head outputs, causal indirect effects);
* :mod:`.training`: the one training loop (data prep, seeded batches, AdamW, divergence, early stopping);
* :mod:`.learned`: Learned Task Vectors (one run, or a batched layer sweep) on that loop;
* :mod:`.prompt_tuning`: one trained virtual token; :mod:`.lora`: rank-1 LoRA on ``W_O``;
* :mod:`.peft`: the three compared (:func:`~tvmech.experiments.peft.compare_peft`).
"""

from tvmech.methods.function_vectors import FunctionVectorHeads, function_vector, function_vector_heads, mean_head_z
from tvmech.methods.learned import LTVConfig, learn_layer_sweep, learn_task_vector
from tvmech.methods.peft_training import train_peft
from tvmech.methods.prompt_tuning import evaluate_prefix
from tvmech.methods.training import TrainingDiverged
from tvmech.methods.vanilla import mean_query_state, query_states_at, vanilla_task_vector

__all__ = ["LTVConfig", "TrainingDiverged", "learn_task_vector", "learn_layer_sweep", "vanilla_task_vector",
           "mean_query_state", "query_states_at", "function_vector", "function_vector_heads", "FunctionVectorHeads",
           "mean_head_z",
           "train_peft", "evaluate_prefix"]
