"""Attention sinks: attention of key vs random heads to the first token, to the query itself, to the injected
position and to the rest (``figures/attention_sinks.json``).

The key heads are the key-head experiment's (its ``score``, recorded in every row); the random sets are
layer-matched (``set = "random_layer_matched"``, the key set's layer histogram) and/or drawn from all layers
(``set = "random"``), ``n_random`` seeds each, with their mean and standard deviation in ``<set>_mean`` rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

from tvmech.analysis.attention_stats import METRICS, AttentionStats, attention_stats, check_threshold
from tvmech.analysis.head_attribution import Head, check_heads, key_heads, mean_std, taylor_scores
from tvmech.core.progress import tqdm
from tvmech.data.prompts import make_prompts
from tvmech.experiments import key_heads as kh
from tvmech.experiments.common import learned_vectors, option
from tvmech.experiments.vectors import VectorStore


@dataclass(frozen=True)
class Config(kh.Config):
    """Settings of the attention-sink experiment (the key-head settings choose the key heads)."""

    threshold: float = option(0.3, "attention to the first token above which a prompt counts as a sink",
                              flag="--sink-threshold")

    def __post_init__(self):
        super().__post_init__()
        try:
            check_threshold(self.threshold)
        except ValueError:
            raise ValueError(f"{self.label} threshold {self.threshold} is not valid: it must be in [0, 1]") from None

    def settings(self) -> dict:
        """The saved settings, without ``scorings`` and ``exact``: this experiment has no accuracies and no exact
        interventions, so its numbers do not depend on them (the key-head part's settings,
        :meth:`key_heads_config`, keep them)."""
        out = super().settings()
        for name in ("scorings", "exact"):
            out.pop(name, None)
        return out

    def key_heads_config(self) -> kh.Config:
        """The key-head config whose key heads this experiment compares."""
        return kh.Config(**{f.name: getattr(self, f.name) for f in fields(kh.Config)})


@dataclass
class Result:
    """Per task and head set the statistics ``records`` (``task, score, set, seed, metric, value, std``, see
    :func:`compare_sets`), and every head's own statistics ``heads`` (``task, layer, head`` and one column per
    metric of :data:`tvmech.analysis.attention_stats.METRICS`)."""

    TABLES: ClassVar[tuple[str, ...]] = ("attention_sinks", "attention_sinks_heads")  # the keys of tables()

    config: Config
    records: list[dict]
    heads: list[dict]

    def rows(self) -> list[dict]:
        return list(self.records)

    def tables(self) -> dict[str, list[dict]]:
        return {"attention_sinks": self.records, "attention_sinks_heads": self.heads}


def head_rows(stats: AttentionStats) -> list[dict]:
    """One row per head ``{layer, head, first, self, injected, rest, sink_rate}`` of ``stats`` (6 decimals)."""
    values = {m: stats.metric(m).double().round(decimals=6).tolist() for m in METRICS}
    n_layers, n_heads = stats.first.shape
    return [{"layer": l, "head": h, **{m: values[m][l][h] for m in METRICS}}
            for l in range(n_layers) for h in range(n_heads)]


def compare_sets(stats: AttentionStats, key: Sequence[Head], random_sets: Sequence[Sequence[Head]],
                 model=None, *, name: str = "random", seeds: Sequence[int] | None = None,
                 with_key: bool = True) -> list[dict]:
    """The attention statistics of the key heads against those of random head sets.

    Args:
        stats: per-head statistics (:func:`tvmech.analysis.attention_stats.attention_stats`).
        key: the key heads.
        random_sets: the random head sets (at least one).
        model: when given, every head is checked against its shape.
        name: the ``set`` of the random sets' rows (``random``, ``random_layer_matched``).
        seeds: each random set's seed (default ``0, 1, ...``).
        with_key: include the key set's rows.

    Returns:
        Rows ``{set, seed, metric, value, std}``: the key set's means, each random set's, and the random sets'
        mean and standard deviation (``set = "<name>_mean"``).
    """
    if model is not None:
        check_heads(model, key)
        for s in random_sets:
            check_heads(model, s)
    if not random_sets:
        raise ValueError("no random sets to compare with")
    seeds = list(range(len(random_sets))) if seeds is None else list(seeds)
    rows = [{"set": "key", "seed": None, "metric": m, "value": v, "std": 0.0} for m, v in stats.over(key).items()
            ] if with_key else []
    per = [stats.over(s) for s in random_sets]
    rows += [{"set": name, "seed": i, "metric": m, "value": v, "std": 0.0} for i, d in zip(seeds, per)
             for m, v in d.items()]
    for m in METRICS:
        mu, sd = mean_std([d[m] for d in per])
        rows.append({"set": f"{name}_mean", "seed": None, "metric": m, "value": mu, "std": sd})
    return rows


def run(model, config: Config = Config(), *, vectors: VectorStore | None = None,
        key_sets: dict[str, list[tuple[int, int]]] | None = None, progress: bool = True) -> Result:
    """Attention statistics of every task's key heads and of random head sets of the same size.

    Args:
        model: a loaded model.
        config: the key-head settings and the sink threshold.
        vectors: where the LTVs are kept (in memory when ``None``).
        key_sets: task -> key heads, e.g. from a key-head run with ``config.key_heads_config()``; computed
            from Taylor scores for the tasks missing there.
        progress: show progress bars (also off under ``TQDM_DISABLE=1``).

    Returns:
        The :class:`Result` (its config resolved).
    """
    config = config.for_model(model)
    vecs = learned_vectors(model, config, config.layer, vectors, progress=progress)
    rows, heads = [], []
    for name in tqdm(config.tasks, desc="attention sinks", disable=not progress):
        task, test, score_prompts = kh.data(config, name)
        key = (key_sets or {}).get(name)
        if key is None:
            key = key_heads(taylor_scores(model, vecs[name], task, score_prompts, score=config.score), config.frac)
        stats = attention_stats(model, task, make_prompts(task, test, 0), vecs[name], threshold=config.threshold)
        sets = kh.comparison_sets(key, *stats.first.shape, config.n_random, config.seed, config.random_sets)
        check_heads(model, key)
        out = [{"set": "key", "seed": None, "metric": m, "value": v, "std": 0.0} for m, v in stats.over(key).items()]
        for set_name in dict.fromkeys(n for n, _, _ in sets):
            mine = [(s, heads) for n, s, heads in sets if n == set_name]
            out += compare_sets(stats, key, [h for _, h in mine], model, name=set_name, seeds=[s for s, _ in mine],
                                with_key=False)
        rows += [{"task": name, "score": config.score, **r} for r in out]
        heads += [{"task": name, **r} for r in head_rows(stats)]
    return Result(config, rows, heads)
