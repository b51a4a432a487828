"""LTV vs prefix tuning vs rank-1 LoRA on one task: accuracy and cost (``figures/peft.json``).

Accuracy is reported under each scoring of :func:`tvmech.experiments.layer_sweep.headline_scorings`
(``acc_by_scoring``, ``zero_shot_by_scoring``); ``accuracy`` and ``zero_shot_accuracy`` are the headline's, the
first (``scoring``): full-vocabulary first-token scoring, under which zero-shot is far from the ceiling (on the
default task, sentiment, label-set scoring gives 0.96 zero-shot, leaving no room to see a method's effect).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvmech.analysis.evaluation import check_scorings, evaluate_multi
from tvmech.core.adapter import Adapter
from tvmech.data.tasks import SCORING_MODES, Example, Task, builtin_task
from tvmech.experiments.common import ALL_TASKS, ExperimentConfig, RecordsResult, middle_layer, option
from tvmech.experiments.layer_sweep import headline_scorings
from tvmech.interventions import Injection, LowRankAttnOut
from tvmech.methods.peft_training import METHODS, Method, check_methods, train_peft
from tvmech.methods.prompt_tuning import evaluate_prefix


def _accuracies(ad: Adapter, task: Task, test: Sequence[Example], run: dict, layer: int,
                scorings: Sequence[str]) -> dict[str, float]:
    """Scoring -> the trained method's zero-shot test accuracy (the prefix scored once per scoring)."""
    p = run["params"]
    if run["method"] == "prefix":
        return {s: evaluate_prefix(ad, task, test, p["prefix"], scoring=s).accuracy for s in scorings}
    if run["method"] == "ltv":
        intervention = Injection.single(p["vector"][0, 0], layer)
    else:
        intervention = LowRankAttnOut(layer, p["a"], p["b"])
    res = evaluate_multi(ad, task, test, scorings=scorings, intervention=intervention, progress=False)
    return {s: r.accuracy for s, r in res.items()}


def compare_peft(model, task: Task, layer: int = 15, steps: int = 100, batch_size: int = 16, seed: int = 0, *,
                 methods: Sequence[Method] = METHODS, lrs: dict[str, float] | None = None,
                 scorings: Sequence[str] | None = None, progress: bool = True) -> list[dict]:
    """LTV vs one-virtual-token prefix tuning vs rank-1 LoRA on ``W_O`` of ``layer``, on one task.

    Trains each method for ``steps`` steps on the task's seeded training split (no early stopping:
    the final parameters are evaluated); ``progress``: each method's training bar.

    Returns:
        One record per method with ``method``, ``task``, ``layer``, ``scoring`` (the headline, the first of
        :func:`headline_scorings`), ``accuracy`` (zero-shot test prompts) and ``zero_shot_accuracy`` (unmodified
        model) under it, ``acc_by_scoring`` and ``zero_shot_by_scoring`` (every scoring), ``n_test``,
        ``trainable_params``, ``lr`` (effective), ``train_loss_start``, ``train_loss_end``, ``val_loss_end``,
        ``step_latency_s``, ``step_latency_min_s``, ``peak_memory_bytes``, ``cuda_peak_bytes``, ``steps``,
        ``batch_size``, ``device`` (definitions in :mod:`tvmech.methods.peft_training`).
    """
    ad = check_methods(model, methods, layer, steps, batch_size)
    scorings = headline_scorings(task, scorings)
    test = task.splits(seed).test
    base = {s: r.accuracy for s, r in evaluate_multi(ad, task, test, scorings=scorings, progress=False).items()}
    rows = []
    for m in methods:
        run = train_peft(ad, task, m, layer=layer, steps=steps, batch_size=batch_size, seed=seed,
                         lr=(lrs or {}).get(m), progress=progress)
        acc = _accuracies(ad, task, test, run, layer, scorings)
        rows.append({"method": m, "task": task.name, "layer": layer, "scoring": scorings[0],
                     "accuracy": acc[scorings[0]], "zero_shot_accuracy": base[scorings[0]], "acc_by_scoring": acc,
                     "zero_shot_by_scoring": base, "n_test": len(test),
                     **{k: run[k] for k in ("trainable_params", "lr", "train_loss_start", "train_loss_end",
                                            "val_loss_end", "step_latency_s", "step_latency_min_s", "peak_memory_bytes",
                                            "cuda_peak_bytes")},
                     "steps": steps, "batch_size": batch_size, "device": str(ad.device)})
    return rows


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the parameter-efficient comparison."""

    PREFIX = "peft"
    DERIVED = {"layer": middle_layer}
    OPTIONAL_SETTINGS = ("scorings",)

    task: str = option("sentiment", "the built-in task", choices=ALL_TASKS)
    layer: int | None = option(None, "layer of the LTV and of the LoRA on W_O (None: the middle layer n_layers // 2)",
                               flag="--geometry-layer")
    steps: int = option(150, "training steps of every method", flag="--ltv-steps")
    seed: int = option(0, "seed of the split and the training")
    scorings: tuple[str, ...] | None = option(
        None, "scoring modes of the accuracies, the first the headline (None: first_token, then the task's own "
              "where it differs)", choices=SCORING_MODES)

    def __post_init__(self):
        if self.task not in ALL_TASKS:
            raise ValueError(f"peft task {self.task!r} is not a built-in task; valid: {list(ALL_TASKS)}")
        if self.scorings is not None:
            check_scorings(self.scorings, f"{self.label} scorings")


class Result(RecordsResult[Config]):
    """One record per method (``method, accuracy, trainable_params, step_latency_s, ...``)."""

    TABLE = "peft"


def run(model, config: Config = Config(), *, progress: bool = True) -> Result:
    """Train and evaluate the three methods (see :func:`compare_peft`).

    Args:
        model: a loaded model.
        config: the settings.
        progress: show the training bars (also off under ``TQDM_DISABLE=1``).

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    rows = compare_peft(model, builtin_task(config.task), layer=config.layer, steps=config.steps, seed=config.seed,
                        scorings=config.scorings, progress=progress)
    return Result(config, rows)
