"""Zero-shot vs k-shot in-context accuracy of a model on a list of tasks."""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from tvmech.analysis.evaluation import evaluate
from tvmech.data.tasks import Task


def icl_accuracy(model, tasks: Sequence[Task], ks: Sequence[int] = (0, 1, 2, 5, 10), *, n_test: int | None = None,
                 seed: int = 0, batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Accuracy for every (task, k) on the task's seeded test split.

    Demonstrations come from the training split; the same test queries are used for every ``k``.
    Returns one record per (task, k): ``task, k, accuracy, n, scoring``.
    """
    rows = []
    bar = tqdm(total=len(tasks) * len(ks), desc="ICL baseline", disable=not progress)
    for task in tasks:
        split = task.splits(seed)
        test = split.test[:n_test] if n_test else split.test
        for k in ks:
            bar.set_postfix_str(f"{task.name} k={k}")
            res = evaluate(model, task, test, k, split.train, seed=seed, batch_size=batch_size)
            rows.append({"task": task.name, "k": k, "accuracy": res.accuracy, "n": res.n, "scoring": res.scoring})
            bar.update()
    bar.close()
    return rows
