"""What is measured: accuracy under each scoring, head attribution and key heads, OV circuits and their
re-injection, attention sinks, the logit lens, the linear map W_TV(l) and its polar decomposition, the geometry
of task vectors.

Every function here reads a model through the adapter and writes into it only through
:mod:`tvmech.interventions`; each decomposition sums to what the forward pass measures.
"""

from tvmech.analysis.attention_stats import AttentionStats, attention_stats
from tvmech.analysis.continuation import generation_accuracy
from tvmech.analysis.evaluation import EvalResult, evaluate, evaluate_prompts, last_logprobs, score_batch
from tvmech.analysis.head_attribution import (
    HeadScores,
    ablated_accuracies,
    ablated_accuracy,
    ablation,
    ablation_effects,
    key_heads,
    taylor_scores,
)
from tvmech.analysis.head_sets import layer_histogram, layer_matched_sets, mean_std, random_head_sets, spearman
from tvmech.analysis.lens import (
    Decoded,
    LabelDirections,
    decode,
    decode_vector_rows,
    label_directions,
    lens_metrics,
    query_states,
)
from tvmech.analysis.ov import Reconstruction, capture, ov_circuits, ov_images, packaged_ov_effect, reinjection
from tvmech.analysis.polar import polar_decomposition, rotation_scaling
from tvmech.analysis.tv_map import LinearMap, MapConfig, compare_maps, exact_jacobian, fit_prompts, fit_tv_map
from tvmech.analysis.vector_geometry import add_task_vectors, cosine_matrix

__all__ = [
    # evaluation
    "EvalResult", "evaluate", "evaluate_prompts", "score_batch", "last_logprobs", "generation_accuracy",
    # heads: scores, ablations, key heads and the random sets they are compared with
    "HeadScores", "taylor_scores", "key_heads", "ablation", "ablation_effects", "ablated_accuracy",
    "ablated_accuracies", "random_head_sets", "layer_matched_sets", "layer_histogram", "spearman", "mean_std",
    # OV circuits and re-injection
    "Reconstruction", "capture", "ov_circuits", "ov_images", "packaged_ov_effect", "reinjection",
    # attention sinks
    "AttentionStats", "attention_stats",
    # logit lens
    "Decoded", "LabelDirections", "decode", "decode_vector_rows", "label_directions", "lens_metrics",
    "query_states",
    # linear maps and rotation
    "MapConfig", "LinearMap", "fit_tv_map", "fit_prompts", "exact_jacobian", "compare_maps",
    "polar_decomposition", "rotation_scaling",
    # geometry of task vectors
    "cosine_matrix", "add_task_vectors",
]
