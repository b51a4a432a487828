"""Layer sweep: accuracy of a task vector injected at each layer (last position), LTV vs Vanilla TV,
with zero-shot and k-shot ICL accuracy as reference lines."""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from tvmech.analysis.evaluation import evaluate
from tvmech.methods.vanilla import vanilla_task_vector
from tvmech.methods.function_vectors import function_vector, function_vector_heads
from tvmech.methods.learned import LTVConfig, learn_layer_sweep
from tvmech.data.tasks import Task


def layer_sweep(model, tasks: Sequence[Task], layers: Sequence[int], *, config: LTVConfig = LTVConfig(),
                k: int = 5, n_test: int | None = None, seed: int = 0, progress: bool = True) -> list[dict]:
    """One record per (task, method, layer): ``task, method, layer, accuracy, n``.

    Methods: ``ltv`` (all layers trained together, see :func:`learn_layer_sweep`), ``vanilla``
    (:func:`vanilla_task_vector` from k-shot prompts), ``fv`` (:func:`function_vector`, top-10 heads
    by causal indirect effect, the same vector placed at each layer), and the references ``zero_shot`` and
    ``icl_{k}shot`` (``layer`` is ``None`` for those).
    """
    rows: list[dict] = []
    for task in tqdm(tasks, desc="layer sweep", disable=not progress):
        sp = task.splits(seed)
        test = sp.test[:n_test] if n_test else sp.test
        for method, kk in (("zero_shot", 0), (f"icl_{k}shot", k)):
            r = evaluate(model, task, test, kk, sp.train, seed=seed)
            rows.append({"task": task.name, "method": method, "layer": None, "accuracy": r.accuracy, "n": r.n})
        ltvs = learn_layer_sweep(model, task, layers, sp.train, sp.val, config=config, progress=progress)
        heads = function_vector_heads(model, task, k=k, seed=seed)
        for layer, vec in zip(layers, ltvs):
            for method, v in (("ltv", vec), ("vanilla", vanilla_task_vector(model, task, layer, k=k, seed=seed)),
                              ("fv", function_vector(model, task, layer, heads, k=k, seed=seed))):
                r = evaluate(model, task, test, 0, hooks_for=v.hooks_for(model))
                rows.append({"task": task.name, "method": method, "layer": layer, "accuracy": r.accuracy,
                             "n": r.n, "norm": float(v.vectors.norm()), "cie_seconds": v.metrics.get("cie_seconds")})
    return rows
