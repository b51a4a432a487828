"""The ranks of a ``torchrun`` run (one worker process per GPU): one ingredient of the pipeline, used by its
scheduler (:mod:`tvmech.pipeline.scheduler`) only: which rank this is, claiming a job, and barriers.

Scheme: every rank runs the same steps in the same order and takes the same decisions from the same files
(read between barriers). A job (a step's (seed, task) pair, or linear's (seed, task, layer) triple, or a model of
the synthetic step) is taken by the first rank to claim it (:func:`claim`), and its numbers are written through
the resumable per-job cache of the result store (atomic writes); a barrier then lets every rank read them back.
Only rank 0 draws and writes a step's tables, figures and the gallery; every step ends with a barrier, so the next
step (which may read this one's tables) sees them. A killed run, restarted with any number of ranks, reuses every
job that any rank finished.

The process group is NCCL on CUDA devices (for any tensor collective to come), gloo otherwise, but the ranks
exchange no tensors, only barriers: those go through a CPU (gloo) group whatever the device, so a rank waiting
for a long job holds no GPU kernel, and their timeout is long (``TVMECH_BARRIER_TIMEOUT_S``, default two days:
a step computed by rank 0 alone may take hours while the others wait). When a rank fails, ``torchrun`` stops
the others.

A single process (no ``WORLD_SIZE`` above 1 in the environment) is rank 0 of 1: every function is a no-op.
"""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import torch
import torch.distributed as dist

from tvmech.pipeline.store import ResultStore

_state: dict = {}  # "group": the CPU group of the barriers, once initialised


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def active() -> bool:
    """Whether this process is one of several ranks (the process group is initialised)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """The number of ranks (1 in a single process)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process is rank 0, the one that draws, writes the step's outputs and prints."""
    return rank() == 0


def mine(i: int) -> bool:
    """Whether job ``i`` (its position in a list every rank builds alike) belongs to this rank."""
    return i % world_size() == rank()


def run_id() -> str:
    """An id shared by the ranks of this run (rank 0's, broadcast by :func:`init`; one per process otherwise)."""
    return _state.setdefault("run_id", uuid.uuid4().hex)


def claim(store: ResultStore, job: str) -> bool:
    """Whether this rank takes ``job`` (a name every rank builds alike): the first rank to ask gets it, through
    an exclusive file in the store (:meth:`ResultStore.claim`), so that a rank that finishes early takes the
    next job instead of idling behind a fixed share (jobs of unequal cost: a synthetic model and a layer's linear
    map). The claims of a killed run are not seen by the next one (another run id). Always ``True`` in a single
    process.

    Args:
        store: an output folder every rank sees.
        job: the job's name.

    Returns:
        Whether this rank computes the job.
    """
    if world_size() <= 1:
        return True
    _state.setdefault("claimed", set()).add(store)
    return store.claim(run_id(), job)


def barrier() -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if active():
        dist.barrier(group=_state.get("group"))


def init(device: str) -> str:
    """Join the ranks started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment; once per process) and
    return this rank's torch device.

    Args:
        device: the requested device; ``"cuda"`` becomes ``cuda:<LOCAL_RANK>`` (one GPU per rank); an explicit
            ``cuda:<i>``, ``cpu`` or ``mps`` is kept.

    Returns:
        The device of this rank (``device`` itself in a single process).
    """
    if _env_int("WORLD_SIZE", 1) <= 1:
        return device
    local = _env_int("LOCAL_RANK", 0)
    if device == "cuda":
        device = f"cuda:{local}"
    if not active():
        timeout = timedelta(seconds=float(os.environ.get("TVMECH_BARRIER_TIMEOUT_S", 2 * 24 * 3600)))
        if torch.device(device).type == "cuda":
            torch.cuda.set_device(torch.device(device))
            dist.init_process_group("nccl", timeout=timeout)  # (its communicator is made at a first collective)
            _state["group"] = dist.new_group(backend="gloo", timeout=timeout)
        else:
            dist.init_process_group("gloo", timeout=timeout)
        shared = [uuid.uuid4().hex]
        dist.broadcast_object_list(shared, src=0, group=_state.get("group"))
        _state["run_id"] = shared[0]
    return device


def shutdown() -> None:
    """Leave the process group, when one was joined."""
    if active():
        dist.destroy_process_group()
        _state.clear()


def release_claims() -> None:
    """At the end of a run: once every rank is past its claims, rank 0 removes this run's claims from every store
    it claimed in (:meth:`ResultStore.release_claims`; a failed run leaves its own, unseen by the next one, which
    has another run id)."""
    barrier()
    if is_main():
        for store in _state.pop("claimed", ()):
            store.release_claims(run_id())
