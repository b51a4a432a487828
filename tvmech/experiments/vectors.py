"""Learned task vectors shared by several experiments: trained once per (task, layer) and kept on disk.

A vector is stored as ``<directory>/<task>_L<layer>.{safetensors,json}`` through
:meth:`TaskVector.save` / :meth:`TaskVector.load`, and reused while its saved training config equals the
requested :class:`LTVConfig` (this is the format of the committed ``figures/vectors``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tvmech.data.tasks import builtin_task
from tvmech.interventions.task_vector import OLD_FORMATS, TaskVector, paths
from tvmech.methods.learned import LTVConfig, learn_task_vector


@dataclass
class VectorStore:
    """Where the LTVs live (``None``: in memory only) and whether saved ones are ignored."""

    directory: Path | None = None  # folder of the saved vectors; None keeps them in memory
    force: bool = False  # retrain even where a saved vector's config matches

    def __post_init__(self):
        self._memory: dict[tuple[str, int, str], TaskVector] = {}

    def path(self, task: str, layer: int) -> Path | None:
        """The base path (no suffix) of a task's vector at ``layer``, or ``None`` without a directory."""
        return None if self.directory is None else Path(self.directory) / f"{task}_L{layer}"

    def saved(self, task: str, layer: int, config: LTVConfig) -> TaskVector | None:
        """The saved vector when it exists and was trained with ``config``; ``None`` otherwise."""
        key = (task, layer, json.dumps(config.record(), sort_keys=True))
        if key in self._memory:
            return self._memory[key]
        path = self.path(task, layer)
        if path is None or self.force or not paths(path)[1].is_file():
            return None
        if json.loads(paths(path)[1].read_text()).get("format") in OLD_FORMATS:
            warnings.warn(f"{path}: a vector of an older tvmech file format; it is trained again", stacklevel=2)
            return None
        vec = TaskVector.load(path)
        return vec if vec.config == json.loads(json.dumps(config.record())) else None

    def get(self, model, tasks: Sequence[str], layer: int, config: LTVConfig, *, progress: bool = True
            ) -> dict[str, TaskVector]:
        """LTVs at ``layer`` for the built-in ``tasks``: saved ones reused, missing ones trained and saved.

        Args:
            model: the loaded model (used only to train missing vectors).
            tasks: built-in task names.
            layer: the injection layer.
            config: the training config.
            progress: show the training bar of each vector trained.

        Returns:
            Task name -> vector, in the order of ``tasks``.
        """
        out = {}
        for name in tasks:
            vec = self.saved(name, layer, config)
            if vec is None:
                vec = learn_task_vector(model, builtin_task(name), layers=(layer,), config=config, progress=progress)
                path = self.path(name, layer)
                if path is not None:
                    vec.save(path, overwrite=True)
            self._memory[(name, layer, json.dumps(config.record(), sort_keys=True))] = vec
            out[name] = vec
        return out


def layer_vectors(model, tasks: Sequence[str], layer: int, config: LTVConfig, store: VectorStore | None = None, *,
                  progress: bool = True) -> dict[str, TaskVector]:
    """LTVs at ``layer`` for ``tasks`` through ``store`` (in memory when ``None``); see :meth:`VectorStore.get`."""
    return (store or VectorStore()).get(model, tasks, layer, config, progress=progress)
