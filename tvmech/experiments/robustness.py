"""The robustness table of Yang et al. 2026: task vectors injected in seven configurations of layers, token
positions and prompts, for the LTV, the Vanilla TV and the function vector (``figures/robustness.json``).

Configurations (:func:`configurations`; ``mid`` = the middle layer, ``n_layers // 2``). Positions are named by
their role in each prompt and resolved prompt by prompt (:mod:`tvmech.interventions.sites`): ``query`` (the
last prompt token, whose logits predict the answer), ``input_first`` (the first token of the query's input,
e.g. `` Iceland`` in ``Q: Iceland\\nA:``), ``before_input`` (the token before it, ``:`` there), and the last
five tokens (the query and the four before it, ``-5..-1``):

* ``query``, ``input_first``, ``before_input``, ``last5``: one layer (``mid``), one site each (five for ``last5``);
* ``every2_query``, ``every2_last5``: every 2nd layer from 0 (the paper's combined row), at the query or the
  last five tokens;
* ``kshot_query``: layer ``mid``, query, on a k-shot prompt (the vector trained and tested with ``k``
  demonstrations in the prompt).

Methods, at the sites of each configuration (``S`` = layers x positions):

* ``ltv``: one vector per site, trained (:func:`~tvmech.methods.learned.learn_task_vector`) on the training
  split's prompts of the configuration's kind and tested on the same kind of prompts;
* ``vanilla``: at each site ``(l, p)``, ``θ_{l,p} = mean_i h_l(ICL_i)[p_i] − mean_i h_l(ZS_i)[p_i]`` (``p_i``: the
  site's index in prompt ``i``), over the k-shot prompts ``ICL_i`` of the first 32 training queries and their
  zero-shot prompts ``ZS_i`` (:func:`vanilla_at_sites`); with several layers every layer's difference is added
  in the same pass, so they compound (each already carries the earlier layers' effect);
* ``fv``: the function vector (:func:`~tvmech.methods.function_vectors.function_vector`, top-10 heads) is one
  vector, made once per task; it is added at every site of the configuration (the layer sweep places it at
  each layer; here at each layer and position).

Vanilla TV and FV are zero-shot methods: the k-shot configuration has an LTV row only. Budget: every method
sees only the training split's labelled examples. The LTV trains on all of them as prompts (``steps x batch``
rows; validation for the kept vector), the Vanilla TV on 32 k-shot prompts and their zero-shot twins, the FV on
``fv_prompts`` k-shot prompts (mean head outputs) and as many label-shuffled ones (indirect effects); each row's
``prompts`` says how many prompts its vector was made from.

A role undefined in some prompt (``before_input`` where the input starts a zero-shot prompt, e.g. ``nli``'s
``{input}\\nRelation:``) gives a row with ``accuracy`` ``None`` and the reason in ``undefined``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

from tvmech.analysis.evaluation import evaluate
from tvmech.core.adapter import adapt
from tvmech.core.progress import tqdm
from tvmech.data.prompts import Prompt, batches, encode, make_prompts
from tvmech.data.tasks import Example, Task, builtin_tasks
from tvmech.experiments.common import (
    ALL_TASKS,
    ExperimentConfig,
    RecordsResult,
    every_nth_layer,
    heldout_queries,
    middle_layer,
    option,
)
from tvmech.interventions.injection import Injection
from tvmech.interventions.sites import Position, resolve_positions
from tvmech.methods.function_vectors import function_vector, function_vector_heads
from tvmech.methods.learned import LTVConfig, learn_task_vector

METHODS = ("ltv", "vanilla", "fv")
CONFIGURATIONS = ("query", "input_first", "before_input", "last5", "every2_query", "every2_last5", "kshot_query")
LAST5 = (-5, -4, -3, -2, -1)
VANILLA_PROMPTS = 32  # k-shot prompts of the Vanilla TV (as tvmech.methods.vanilla.vanilla_task_vector's default)
FV_PROMPTS = 16  # k-shot prompts of the function vector's heads (as the layer sweep's default)


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """Settings of the robustness table."""

    PREFIX = "robustness"
    OPTIONAL_SETTINGS = ("layer", "configurations", "fv_prompts")

    tasks: tuple[str, ...] = option(ALL_TASKS, "built-in tasks of the table", choices=ALL_TASKS)
    ltv_steps: int = option(150, "training steps per learned task vector")
    k: int = option(5, "demonstrations of the k-shot configuration and of the Vanilla TV / function-vector prompts")
    n_test: int | None = option(None, "cap on test queries per task (None: the whole test split)")
    seed: int = option(0, "seed of the splits, the demonstrations and the LTV training")
    layer: int | None = option(None, "the single injection layer (None: the model's middle layer n_layers // 2)")
    configurations: tuple[str, ...] | None = option(None, "configurations to run (None: all seven)",
                                                    choices=CONFIGURATIONS)
    methods: tuple[str, ...] = option(METHODS, "methods of each configuration (Vanilla TV and FV: zero-shot "
                                               "configurations only)", choices=METHODS)
    fv_prompts: int | None = option(None, f"k-shot prompts of the function vector's heads (None: {FV_PROMPTS})")

    def __post_init__(self):
        super().__post_init__()
        for name, valid in (("configurations", CONFIGURATIONS), ("methods", METHODS)):
            given = getattr(self, name)
            bad = [] if given is None else [v for v in given if v not in valid]
            if bad or given == ():
                raise ValueError(f"robustness {name}: unknown {bad or '(none given)'}; valid: {list(valid)}")


class Result(RecordsResult[Config]):
    """One record per (task, configuration, method): ``task, configuration, method, layers, positions, k,
    accuracy, n, n_sites, n_vectors, prompts`` (and ``undefined`` where a role is undefined)."""

    TABLE = "robustness"


@dataclass(frozen=True)
class Configuration:
    """Where the vectors go: ``layers`` x ``positions`` (integers or roles), on prompts with ``k`` demonstrations."""

    name: str  # as the table shows it
    layers: tuple[int, ...]
    positions: tuple[Position, ...]
    k: int = 0


def configurations(n_layers: int, mid: int | None = None, k: int = 5) -> dict[str, Configuration]:
    """The seven configurations (see the module docstring), by id.

    Args:
        n_layers: the model's depth.
        mid: the single layer (``None``: :func:`middle_layer`).
        k: demonstrations of the k-shot configuration.

    Returns:
        ``{id: Configuration}`` in the order of :data:`CONFIGURATIONS`.
    """
    mid = middle_layer(n_layers) if mid is None else mid
    every2 = every_nth_layer(n_layers, 2)
    confs = (
        Configuration(f"layer {mid}, query", (mid,), ("query",)),
        Configuration(f"layer {mid}, input's first token", (mid,), ("input_first",)),
        Configuration(f"layer {mid}, token before the input", (mid,), ("before_input",)),
        Configuration(f"layer {mid}, last 5 tokens", (mid,), LAST5),
        Configuration("every 2nd layer, query", every2, ("query",)),
        Configuration("every 2nd layer, last 5 tokens", every2, LAST5),
        Configuration(f"layer {mid}, query, on a {k}-shot prompt", (mid,), ("query",), k),
    )
    return dict(zip(CONFIGURATIONS, confs))


def mean_site_states(model, task: Task, prompts: Sequence[Prompt], layers: Sequence[int],
                     positions: Sequence[Position], batch_size: int = 16) -> Float[Tensor, "n_layers n_pos d_model"]:
    """Mean over prompts of the residual stream entering each of ``layers`` at each of ``positions`` (each
    resolved in each prompt: a role's own index there).

    Args:
        model: a TransformerLens model or its adapter.
        task: the task (prompt encoding).
        prompts: the prompts, encoded ``batch_size`` at a time.
        layers, positions: the sites.

    Returns:
        ``[len(layers), len(positions), d_model]`` (float64 accumulation, float32 on the CPU).
    """
    ad = adapt(model)
    layers = list(layers)
    total = torch.zeros(len(layers), len(positions), ad.d_model, dtype=torch.float64)
    with torch.no_grad():
        for _, b in batches(ad.tokenizer, task, prompts, batch_size):
            b = b.to(ad.device)
            idx = resolve_positions(positions, b.query_pos, b.tokens.shape[1], b.roles)
            rows = torch.arange(len(b), device=idx.device)[:, None]
            h, at = ad.residual(b.tokens, min(layers)), min(layers)
            for layer in sorted(set(layers)):  # one pass up through the layers
                h, at = ad.run_blocks(h, at, layer), layer
                total[layers.index(layer)] += h[rows, idx].double().sum(0).cpu()
    return (total / len(prompts)).float()


def vanilla_at_sites(model, task: Task, layers: Sequence[int], positions: Sequence[Position],
                     queries: Sequence[Example], demos: Sequence[Example], *, k: int = 5, seed: int = 0
                     ) -> Float[Tensor, "n_layers n_pos d_model"]:
    """The Vanilla TV at every site: mean k-shot state minus mean zero-shot state of the same ``queries``.

    Args:
        model: a TransformerLens model or its adapter.
        task: the task.
        layers, positions: the sites.
        queries: the queries of both kinds of prompt; demos: where the k-shot demonstrations come from.
        k, seed: demonstrations per k-shot prompt and the seed of their draw.

    Returns:
        ``θ[l, p]`` for each site (at one layer and the query: :func:`~tvmech.methods.vanilla.vanilla_task_vector`).
    """
    icl = mean_site_states(model, task, make_prompts(task, queries, k, demos, seed=seed), layers, positions)
    return icl - mean_site_states(model, task, make_prompts(task, queries, 0), layers, positions)


def undefined_roles(tokenizer, task: Task, conf: Configuration, splits: Sequence[tuple[str, Sequence[Example]]],
                    demos: Sequence[Example], seed: int) -> str | None:
    """Why some role of ``conf`` has no token in some prompt of ``splits`` (``(name, queries)``), or ``None``."""
    roles = [p for p in conf.positions if isinstance(p, str) and p != "query"]
    for split, queries in splits if roles else ():
        batch = encode(tokenizer, task, make_prompts(task, queries, conf.k, demos, seed=seed))
        for role in roles:
            bad = int((batch.roles[role] < 0).sum())
            if bad:
                return f"{role} is undefined in {bad} of {len(batch)} {split} prompts (the input starts the prompt)"
    return None


def _select(confs: dict[str, Configuration], names: Sequence[str] | None) -> dict[str, Configuration]:
    if names is None:
        return confs
    unknown = [n for n in names if n not in confs]
    if unknown or not names:
        raise ValueError(f"unknown robustness configuration(s) {unknown or list(names)}; valid: {list(confs)}")
    return {n: confs[n] for n in names}


def robustness_table(model, tasks: Sequence[Task], *, mid: int | None = None, k: int = 5,
                     config: LTVConfig = LTVConfig(), n_test: int | None = None, names: Sequence[str] | None = None,
                     methods: Sequence[str] = METHODS, fv_prompts: int = FV_PROMPTS, progress: bool = True
                     ) -> list[dict]:
    """One record per (task, configuration, method); see :class:`Result` and the module docstring.

    Args:
        model: a loaded model.
        tasks: the tasks.
        mid: the single layer (``None``: the middle layer).
        k: demonstrations of the k-shot configuration and of the Vanilla TV / FV prompts.
        config: the LTV training settings (its ``seed`` also seeds the splits and demonstrations).
        n_test: cap on test queries per task.
        names: ids of the configurations to run (default: all, :data:`CONFIGURATIONS`).
        methods: among :data:`METHODS`.
        fv_prompts: k-shot prompts of the function vector's heads.
        progress: show a progress bar.

    Returns:
        The records.
    """
    ad = adapt(model)
    mid = middle_layer(ad.n_layers) if mid is None else mid
    confs = _select(configurations(ad.n_layers, mid, k), names)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"unknown robustness method(s) {bad or list(methods)}; valid: {list(METHODS)}")
    seed, rows = config.seed, []
    bar = tqdm(total=len(tasks) * len(confs), desc="robustness", disable=not progress)
    for task in tasks:
        sp = task.splits(seed)
        test = heldout_queries(task, seed, n_test)
        vanilla_queries = list(sp.train)[:VANILLA_PROMPTS]
        fv = None
        if "fv" in methods and any(c.k == 0 for c in confs.values()):
            heads = function_vector_heads(model, task, k=k, n_prompts=fv_prompts, seed=seed, progress=progress)
            fv = function_vector(model, task, mid, heads, k=k, n_prompts=fv_prompts, seed=seed).vectors
            fv = fv.reshape(1, 1, -1)  # one vector, shared by every site
        for c in confs.values():
            undefined = undefined_roles(ad.tokenizer, task, c, (("training", sp.train), ("validation", sp.val),
                                                                ("test", test)), sp.train, seed)
            for method in methods if c.k == 0 else ("ltv",):
                n_sites = len(c.layers) * len(c.positions)
                row = {"task": task.name, "configuration": c.name, "method": method, "layers": list(c.layers),
                       "positions": list(c.positions), "k": c.k, "n_sites": n_sites,
                       "n_vectors": 1 if method == "fv" else n_sites}
                if undefined is not None:
                    rows.append({**row, "accuracy": None, "n": None, "undefined": undefined})
                    continue
                if method == "ltv":
                    vec = learn_task_vector(model, task, sp.train, sp.val, layers=c.layers, positions=c.positions,
                                            config=replace(config, k=c.k), progress=False).vectors
                    prompts = len(sp.train)
                elif method == "vanilla":
                    vec = vanilla_at_sites(model, task, c.layers, c.positions, vanilla_queries, sp.train, k=k,
                                           seed=seed)
                    prompts = 2 * len(vanilla_queries)
                else:
                    vec, prompts = fv, 2 * fv_prompts
                inj = Injection(vec, c.layers, c.positions)
                r = evaluate(model, task, test, c.k, sp.train, seed=seed, intervention=inj, progress=False)
                rows.append({**row, "accuracy": r.accuracy, "n": r.n, "norm": float(vec.norm()), "prompts": prompts})
            bar.update()
    bar.close()
    return rows


def run(model, config: Config = Config(), *, progress: bool = True) -> Result:
    """Every configuration and method of ``config`` on every task of it.

    Args:
        model: a loaded model.
        config: the settings.
        progress: show a progress bar.

    Returns:
        The :class:`Result`.
    """
    rows = robustness_table(model, builtin_tasks(config.tasks), mid=config.layer, k=config.k,
                            config=LTVConfig(steps=config.ltv_steps, seed=config.seed), n_test=config.n_test,
                            names=config.configurations, methods=config.methods,
                            fv_prompts=config.fv_prompts or FV_PROMPTS, progress=progress)
    return Result(config, rows)
