"""Zero-shot vs k-shot in-context accuracy of a model on a list of tasks (``figures/icl_accuracy.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tvmech.analysis.evaluation import evaluate
from tvmech.core.progress import tqdm
from tvmech.data.tasks import Task, builtin_tasks
from tvmech.experiments.common import ALL_TASKS, ExperimentConfig, RecordsResult, heldout_queries, option


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the ICL-accuracy experiment."""

    PREFIX = "icl"

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks to evaluate", choices=ALL_TASKS)
    ks: tuple[int, ...] = option((0, 1, 2, 5, 10), "numbers of demonstrations in the prompt")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the task splits and of the demonstrations drawn")

    def __post_init__(self):
        super().__post_init__()
        if not self.ks or any(k < 0 for k in self.ks):
            raise ValueError(f"icl ks {self.ks} is not valid: give one or more numbers of demonstrations >= 0")


class Result(RecordsResult[Config]):
    """One record per (task, k): ``task, k, accuracy, n, scoring``."""

    TABLE = "icl_accuracy"


def icl_accuracy(model, tasks: Sequence[Task], ks: Sequence[int] = (0, 1, 2, 5, 10), *, n_test: int | None = None,
                 seed: int = 0, batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Accuracy for every (task, k) on the task's seeded test split.

    Demonstrations come from the training split; the same test queries are used for every ``k``.

    Returns:
        One record per (task, k): ``task, k, accuracy, n, scoring``.
    """
    rows = []
    bar = tqdm(total=len(tasks) * len(ks), desc="ICL baseline", disable=not progress)
    for task in tasks:
        split = task.splits(seed)
        test = heldout_queries(task, seed, n_test)
        for k in ks:
            bar.set_postfix_str(f"{task.name} k={k}")
            res = evaluate(model, task, test, k, split.train, seed=seed, batch_size=batch_size, progress=False)
            rows.append({"task": task.name, "k": k, "accuracy": res.accuracy, "n": res.n, "scoring": res.scoring})
            bar.update()
    bar.close()
    return rows


def run(model, config: Config = Config(), *, progress: bool = True) -> Result:
    """Evaluate every task of ``config`` at every ``k``.

    Args:
        model: a loaded model (any wrapper tvmech accepts).
        config: the settings.
        progress: show a progress bar.

    Returns:
        The :class:`Result`.
    """
    rows = icl_accuracy(model, builtin_tasks(config.tasks), config.ks, n_test=config.n_test, seed=config.seed,
                        progress=progress)
    return Result(config, rows)
