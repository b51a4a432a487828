"""The only code that writes into a forward pass: sites, the engine, and its interventions.

* :mod:`.sites`: points (``resid_pre`` ...), positions relative to the query, the batch :class:`Context`;
* :mod:`.engine`: :class:`Intervention` (``writes``), ``Compose``, and the one way to attach one: ``run_blocks`` /
  ``residual`` with ``intervention=`` (PyTorch hooks on the fast path, TransformerLens hooks otherwise), ``apply`` and
  ``hooks`` for passes tvmech does not run;
* :mod:`.injection`: :class:`Injection` (add / replace vectors, shared, per site, per row, per row group);
* :mod:`.heads`: :class:`HeadPatch` (per-head ``z`` patch, zero and mean ablation);
* :mod:`.capture`: :class:`Capture` (read activations);
* :mod:`.paths`: :class:`PathRestricted` (θ seen only through values, queries/keys, MLP inputs or directly);
* :mod:`.lowrank`: :class:`LowRankAttnOut` (a low-rank change of a block's attention output: LoRA on W_O);
* :mod:`.task_vector`: :class:`TaskVector` (vectors + provenance, safetensors + JSON);
* :mod:`.generation`: greedy generation with and without a KV cache.
"""

from tvmech.interventions.capture import Capture
from tvmech.interventions.engine import Compose, Intervention, Write, compose, residual, run_blocks, site_name
from tvmech.interventions.generation import Generation, generate
from tvmech.interventions.head_patch import HeadPatch
from tvmech.interventions.injection import Injection
from tvmech.interventions.lowrank import LowRankAttnOut, low_rank_delta
from tvmech.interventions.paths import PATHS, PathRestricted
from tvmech.interventions.sites import POINTS, Context, Mode, Point, resolve_positions
from tvmech.interventions.task_vector import TaskVector

__all__ = ["Capture", "Compose", "Intervention", "Write", "compose", "run_blocks", "residual", "site_name",
           "Generation", "generate", "HeadPatch", "Injection", "LowRankAttnOut", "low_rank_delta", "PATHS",
           "PathRestricted", "POINTS", "Context", "Mode", "Point", "resolve_positions", "TaskVector"]
