"""LTV vs prefix tuning vs rank-1 LoRA on one task: accuracy and cost (``figures/peft.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from tvmech.data.tasks import builtin_task
from tvmech.experiments.common import ALL_TASKS, ExperimentConfig, RecordsResult, middle_layer, option
from tvmech.methods.peft import compare_peft


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the parameter-efficient comparison."""

    PREFIX = "peft"
    DERIVED = {"layer": middle_layer}

    task: str = option("sentiment", "the built-in task", choices=ALL_TASKS)
    layer: int | None = option(None, "layer of the LTV and of the LoRA on W_O (None: the middle layer n_layers // 2)",
                               flag="--geometry-layer")
    steps: int = option(150, "training steps of every method", flag="--ltv-steps")
    seed: int = option(0, "seed of the split and the training")

    def __post_init__(self):
        if self.task not in ALL_TASKS:
            raise ValueError(f"peft task {self.task!r} is not a built-in task; valid: {list(ALL_TASKS)}")


class Result(RecordsResult[Config]):
    """One record per method (``method, accuracy, trainable_params, step_latency_s, ...``)."""

    TABLE = "peft"


def run(model, config: Config = Config()) -> Result:
    """Train and evaluate the three methods (see :func:`tvmech.methods.peft.compare_peft`).

    Args:
        model: a loaded model.
        config: the settings.

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    rows = compare_peft(model, builtin_task(config.task), layer=config.layer, steps=config.steps, seed=config.seed)
    return Result(config, rows)
