"""The robustness table of Yang et al. 2026: LTVs trained and tested in six injection configurations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from tqdm.auto import tqdm

from tvmech.core.adapter import adapt
from tvmech.analysis.evaluation import evaluate
from tvmech.methods.learned import LTVConfig, learn_task_vector
from tvmech.data.tasks import Task


def configurations(n_layers: int, mid: int | None = None, k: int = 5) -> dict[str, dict]:
    """The six configurations: name -> ``layers``, ``positions`` and ``k`` (demonstrations in the prompt)."""
    mid = n_layers // 2 if mid is None else mid
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
        test = sp.test[:n_test] if n_test else sp.test
        for name, c in confs.items():
            vec = learn_task_vector(model, task, sp.train, sp.val, layers=c["layers"], positions=c["positions"],
                                    config=replace(config, k=c["k"]), progress=False)
            r = evaluate(model, task, test, c["k"], sp.train, seed=config.seed, hooks_for=vec.hooks_for(model))
            rows.append({"task": task.name, "configuration": name, "accuracy": r.accuracy, "n": r.n,
                         "n_vectors": len(c["layers"]) * len(c["positions"])})
            bar.update()
    bar.close()
    return rows
