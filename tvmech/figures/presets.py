"""Presets of ``python -m tvmech.figures``: named sets of flag values and seeds, and where they write.

* ``quick`` (the default, what ``make figures`` runs): every step recomputed at reduced scale (two tasks, a
  word task and a classification task; three layers spread over the model's own depth; 30 LTV steps; 16 test
  queries) into the git-ignored ``figures/quick/``; measured at about a quarter of an hour on a 2-core CPU
  (``STEP_COST``).
* ``paper``: the committed paper-scale figures in ``figures/`` (all tasks, every 3rd layer, 150 steps, the
  robustness, mechanism and linear-map steps over seeds 0, 1, 2); meant for a GPU (``make figures-paper``). With nothing
  to recompute it redraws them byte for byte.

A flag given on the command line wins over the preset's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUICK_TASKS = ("antonym", "sentiment")


@dataclass(frozen=True)
class Preset:
    """A preset: its output folder, flag values (argparse dest -> value) and per-step seeds."""

    name: str
    out: Path
    description: str
    flags: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)  # step -> seeds (others: the config's seed)


MECHANISM_STEPS = ("ov_circuits", "key_heads", "sinks", "linear")
SEEDED_STEPS = ("robustness", *MECHANISM_STEPS)  # steps the paper preset runs over seeds 0, 1, 2

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("quick", Path("figures/quick"), "every step recomputed at reduced scale (2-core CPU, minutes)", {
        "tasks": QUICK_TASKS, "n_test": 16, "ltv_steps": 30,
        "icl_ks": (0, 1, 5), "sweep_tasks": ("antonym",), "sweep_layer_count": 3, "sweep_fv_prompts": 4,
        "robustness_tasks": ("antonym",), "robustness_ltv_steps": 15, "robustness_fv_prompts": 2,
        "robustness_configurations": ("query", "input_first", "before_input", "last5", "every2_query", "kshot_query"),
        "synthetic_preset": "small",
        "geometry_tasks": QUICK_TASKS, "peft_task": "sentiment",
        "mech_alphas": (1.0, 4.0), "mech_n_score": 8, "n_random": 2, "exact_every": 4,
        "lens_tasks": QUICK_TASKS,
        "linear_tasks": ("antonym",), "linear_layer_count": 2, "map_prompts": 4, "map_heldout": 32, "map_null": 50,
        "map_random": 2, "map_random_fits": 0, "map_vanilla": 0,  # the random-vector null at its smallest (J only)
    }),
    Preset("paper", Path("figures"), "the committed paper-scale figures (all tasks and layers, 150 steps; a GPU)",
           seeds={step: (0, 1, 2) for step in SEEDED_STEPS}),
)}

# measured cost per step (quick: `python -m tvmech.figures` on the 2-core CPU; paper: where README says), "?"
# where none was measured
STEP_COST: dict[str, dict[str, str]] = {
    # 2-core CPU, fresh clone, 2026-12-01: 15 min 16 s in all (robustness with issue 24's configurations and
    # methods: 167 s on the CPU shared by other jobs, where the step before them took 147 s)
    "quick": {"icl": "23 s", "sweep": "135 s", "robustness": "167 s, shared CPU", "geometry": "54 s",
              "composition": "59 s", "peft": "180 s", "ov_circuits": "26 s", "key_heads": "36 s", "sinks": "9 s",
              "lens": "23 s", "linear": "185 s", "synthetic": "65 s"},
    # one GPU shared by 4 torchrun ranks, each step's seconds on rank 0 (the run's summary): the steps issue 24
    # changed on one H100 on 2026-12-07 (tools/device/issue24_runs.sh; their LTVs reused where stored), the others
    # on one H200 on 2026-12-02 (tools/device/paper_run.sh, fresh, one run: 583 s in all then)
    "paper": {"icl": "30 s", "sweep": "89 s (H100)", "robustness": "401 s, 3 seeds, 3 methods (H100)",
              "geometry": "35 s", "composition": "28 s (2-core CPU)", "peft": "18 s (H100)",
              "ov_circuits": "70 s, 3 seeds (522 s on the 2-core CPU)", "key_heads": "51 s, 3 seeds (H100)",
              "sinks": "2 s, 3 seeds", "lens": "8 s", "linear": "175 s, 3 seeds, with the null, LTVs reused (H100)",
              "synthetic": "6 s (models trained during linear)"},
}  # end to end not measured since issue 24 (583 s on 2026-12-02, before robustness grew to 3 seeds x 3 methods)


def apply(preset: Preset, args) -> None:
    """Set every flag of ``preset`` that the command line did not give (``args``: the parsed namespace, whose
    flags are absent when not given)."""
    for dest, value in preset.flags.items():
        if not hasattr(args, dest):
            setattr(args, dest, value)


__all__ = ["Preset", "PRESETS", "STEP_COST", "apply", "QUICK_TASKS", "MECHANISM_STEPS", "SEEDED_STEPS"]
