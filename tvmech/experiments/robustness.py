"""The robustness table of Yang et al. 2026: LTVs trained and tested in six injection configurations
(``figures/robustness.json``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tvmech.analysis.evaluation import evaluate
from tvmech.core.adapter import adapt
from tvmech.core.progress import tqdm
from tvmech.data.tasks import Task, builtin_tasks
from tvmech.experiments.common import ALL_TASKS, ExperimentConfig, RecordsResult, heldout_queries, middle_layer, option
from tvmech.methods.learned import LTVConfig, learn_task_vector


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the robustness table."""

    PREFIX = "robustness"
    OPTIONAL_SETTINGS = ("layer", "configurations")

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks of the table", choices=ALL_TASKS)
    ltv_steps: int = option(150, "training steps per learned task vector")
    k: int = option(5, "demonstrations of the 'on a k-shot prompt' configuration")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits and the LTV training")
    layer: int | None = option(None, "the single injection layer (None: the model's middle layer n_layers // 2)")
    configurations: tuple[str, ...] | None = option(None, "names of the configurations to run (None: all six)")


class Result(RecordsResult[Config]):
    """One record per (task, configuration): ``task, configuration, accuracy, n, n_vectors``."""

    TABLE = "robustness"


def configurations(n_layers: int, mid: int | None = None, k: int = 5) -> dict[str, dict]:
    """The six configurations: name -> ``layers``, ``positions`` and ``k`` (demonstrations in the prompt)."""
    mid = middle_layer(n_layers) if mid is None else mid
    every4 = tuple(range(0, n_layers, 4))
    last5 = (-5, -4, -3, -2, -1)
    return {
        f"layer {mid}, last position": dict(layers=(mid,), positions=(-1,), k=0),
        f"layer {mid}, 4th token": dict(layers=(mid,), positions=(3,), k=0),
        f"layer {mid}, positions -5..-1": dict(layers=(mid,), positions=last5, k=0),
        "every 4th layer, last position": dict(layers=every4, positions=(-1,), k=0),
        "every 4th layer, positions -5..-1": dict(layers=every4, positions=last5, k=0),
        f"layer {mid}, last position, on a {k}-shot prompt": dict(layers=(mid,), positions=(-1,), k=k),
    }


def robustness_table(model, tasks: Sequence[Task], *, mid: int | None = None, k: int = 5,
                     config: LTVConfig = LTVConfig(), n_test: int | None = None, names: Sequence[str] | None = None,
                     progress: bool = True) -> list[dict]:
    """One record per (task, configuration): ``task, configuration, accuracy, n, n_vectors``.

    Each configuration's LTV (one vector per layer x position site) is trained on prompts with that
    configuration's number of demonstrations and tested on the same kind of prompt. ``names`` picks
    some of the :func:`configurations` (default: all six).
    """
    confs = configurations(adapt(model).n_layers, mid, k)
    if names is not None:
        unknown = [n for n in names if n not in confs]
        if unknown or not names:
            raise ValueError(f"unknown robustness configuration(s) {unknown or list(names)}; valid: {list(confs)}")
        confs = {n: confs[n] for n in names}
    rows = []
    bar = tqdm(total=len(tasks) * len(confs), desc="robustness", disable=not progress)
    for task in tasks:
        sp = task.splits(config.seed)
        test = heldout_queries(task, config.seed, n_test)
        for name, c in confs.items():
            vec = learn_task_vector(model, task, sp.train, sp.val, layers=c["layers"], positions=c["positions"],
                                    config=replace(config, k=c["k"]), progress=False)
            r = evaluate(model, task, test, c["k"], sp.train, seed=config.seed, hooks_for=vec.hooks_for(model))
            rows.append({"task": task.name, "configuration": name, "accuracy": r.accuracy, "n": r.n,
                         "n_vectors": len(c["layers"]) * len(c["positions"])})
            bar.update()
    bar.close()
    return rows


def run(model, config: Config = Config(), *, progress: bool = True) -> Result:
    """Train and test every configuration on every task of ``config``.

    Args:
        model: a loaded model.
        config: the settings.
        progress: show a progress bar.

    Returns:
        The :class:`Result`.
    """
    rows = robustness_table(model, builtin_tasks(config.tasks), mid=config.layer, k=config.k,
                            config=LTVConfig(steps=config.ltv_steps, seed=config.seed), n_test=config.n_test,
                            names=config.configurations, progress=progress)
    return Result(config, rows)
