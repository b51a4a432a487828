"""Presets of ``python -m tvmech.pipeline``: named sets of config values and seeds, and where they write.

* ``quick`` (the default, what ``make figures`` runs): every step recomputed at reduced scale into the
  git-ignored ``figures/quick/``: the common values below (two tasks, a word task and a classification task; 30
  LTV steps; 16 test queries) and each step's own (``Step.quick``: e.g. three layers spread over the model's
  depth); measured at about a quarter of an hour on a 2-core CPU (each step's ``cost``).
* ``paper``: the committed paper-scale figures in ``figures/`` (the configs' defaults: all tasks, every 3rd
  layer, 150 steps; the steps whose ``seeds`` name it over seeds 0, 1, 2); meant for a GPU (``make
  figures-paper``). With nothing to recompute it redraws them byte for byte.

A value given on the command line wins over the preset's: a step's own flag over the common one, either over
the preset's values for the step, those over the preset's common values.

Where the costs were measured (``Step.cost``): quick: ``python -m tvmech.figures`` on the 2-core CPU, fresh clone,
2026-12-01, 15 min 16 s in all (robustness with issue 24's configurations and methods: 167 s on the CPU shared by
other jobs, where the step before them took 147 s); paper: one GPU shared by 4 torchrun ranks, each step's
seconds on rank 0 (the run's summary): the steps issue 24 changed on one H100 on 2026-12-07
(tools/device/issue24_runs.sh; their LTVs reused where stored), the others on one H200 on 2026-12-02
(tools/device/paper_run.sh, fresh, one run: 583 s in all then); end to end not measured since issue 24 (before
robustness grew to 3 seeds x 3 methods).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tvmech.pipeline.registry import Step

QUICK_TASKS = ("antonym", "sentiment")


@dataclass(frozen=True)
class Preset:
    """A preset: its output folder and the values of the common settings (``--tasks``, ``--n-test``, ...: the
    field of that name of every step that has it); each step's own values and seeds are in its :class:`Step`."""

    name: str
    out: Path
    description: str
    common: dict[str, Any] = field(default_factory=dict)

    def values(self, step: Step) -> dict[str, Any]:
        """The step's config values of this preset (its own field name -> value)."""
        return dict(step.quick) if self.name == "quick" else {}

    def seeds(self, step: Step) -> tuple[int, ...] | None:
        """The seeds this preset runs ``step`` with (``None``: the config's seed)."""
        return step.seeds.get(self.name) or None


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("quick", Path("figures/quick"), "every step recomputed at reduced scale (2-core CPU, minutes)",
           {"tasks": QUICK_TASKS, "n_test": 16, "ltv_steps": 30}),
    Preset("paper", Path("figures"), "the committed paper-scale figures (all tasks and layers, 150 steps; a GPU)"),
)}

__all__ = ["Preset", "PRESETS", "QUICK_TASKS"]
