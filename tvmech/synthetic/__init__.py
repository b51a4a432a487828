"""Synthetic in-context learning: small transformers trained from scratch, the task-vector prompting
loss (TVP-loss), and the emergence of task vectors (Yang et al. 2025, arXiv 2501.09240).

* :mod:`.tasks`: the tasks (``offset``, ``linear``, ``sinusoid``), seeded samplers, prompt formats;
* :mod:`.model`: :class:`SyntheticModel`, a TransformerLens bridge (+ read-in/read-out), checkpoints;
* :mod:`.train`: ICL loss + λ · TVP-loss, Adam, resumable;
* :mod:`.analysis`: task-vector prompting per layer, PCA and cluster sharpness, robustness, learned vs
  extracted vectors.
"""

from tvmech.synthetic.analysis import (
    CONDITIONS,
    cluster_sharpness,
    context_vectors,
    learned_vs_extracted,
    pca_2d,
    query_only_errors,
    robustness,
    tv_prompting,
    vector_geometry,
)
from tvmech.synthetic.icl_tasks import TASKS, SyntheticBatch, SyntheticTask, offset_text_task, offset_tokenizer
from tvmech.synthetic.model import ModelConfig, SyntheticModel
from tvmech.synthetic.pretraining import (
    TrainConfig,
    TrainResult,
    captured,
    losses,
    read_query,
    train,
    train_new,
    write_query,
)

__all__ = ["CONDITIONS", "cluster_sharpness", "context_vectors", "learned_vs_extracted", "pca_2d",
           "query_only_errors", "robustness", "tv_prompting", "vector_geometry", "ModelConfig", "SyntheticModel",
           "TASKS", "SyntheticBatch", "SyntheticTask", "offset_text_task", "offset_tokenizer", "TrainConfig",
           "TrainResult", "losses", "train", "train_new", "read_query", "write_query", "captured"]
