"""Every public function runs with its default arguments (issue 29): each function of ``tvmech.__all__`` (and
``key_vs_random``, the key-heads table) is called with its required arguments only, on the tiny Llama."""

import inspect
from pathlib import Path

import pytest
import torch

import tvmech
from tvmech.analysis.ov import capture
from tvmech.experiments.key_heads import key_vs_random
from tvmech.interventions.injection import Injection

# need the default model's installed weights: called with their defaults by tests/integration (default_model)
REAL_MODEL = {"load_model", "default_gguf_path"}
PUBLIC = sorted(n for n in tvmech.__all__ if inspect.isfunction(getattr(tvmech, n)))


@pytest.fixture(scope="module")
def args(tiny, make_tiny_hf, make_tokenizer):
    """Values of every required argument, by parameter name (``_<function>`` entries override for one)."""
    task = tvmech.builtin_task("capitalize")
    queries = task.examples[:4]
    prompts = tvmech.make_prompts(task, queries, 0)
    tok = make_tokenizer()
    batch = tvmech.encode(tok, task, prompts)
    vec = tvmech.TaskVector.for_model(tiny, 0.5 * torch.randn(1, 1, 64, generator=torch.Generator().manual_seed(0)),
                                      (1,))
    cap = capture(tiny, vec, batch)
    return {"model": tiny, "task": task, "queries": queries, "prompts": prompts, "k": 0, "tokenizer": tok,
            "hf_model": make_tiny_hf(vocab=len(tok)), "name": "tiny", "enabled": True, "source": "capitalize",
            "parts": [Injection.single(torch.zeros(64), 1)], "layer": 1, "layers": [1], "method": "ltv",
            "prefix": torch.zeros(1, 64), "batch": batch, "scoring": task.scoring, "vec": vec, "heads": [(1, 0)],
            "scores": tvmech.taylor_scores(tiny, vec, task, prompts), "vectors": torch.randn(2, 64),
            "tokens": batch.tokens, "query_pos": batch.query_pos, "cap": cap,
            "effect": tvmech.packaged_ov_effect(tiny, cap), "theta": vec.vectors.reshape(-1),
            "W": torch.randn(64, 64, generator=torch.Generator().manual_seed(1)),
            "_generate": {"prompts": ["abc"]}, "_fit_tv_map": {"theta": vec}, "_exact_jacobian": {"theta": vec},
            "_load_tasks": {"path": Path(__file__).parents[1] / "data" / "task_folder"},
            "_builtin_task": {"name": "capitalize"},
            "_reinjection": {"layers": list(cap.layers)}}


def required(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_every_public_function_is_covered(args):
    missing = {n: [p for p in required(getattr(tvmech, n)) if p not in args and p not in args.get(f"_{n}", {})]
               for n in PUBLIC}
    assert not {n: m for n, m in missing.items() if m}, "give these arguments a value in the fixture"
    assert REAL_MODEL <= set(PUBLIC)


@pytest.mark.parametrize("name", [n for n in PUBLIC if n not in REAL_MODEL] + ["key_vs_random"])
def test_runs_with_its_defaults(name, args):
    fn = key_vs_random if name == "key_vs_random" else getattr(tvmech, name)
    given = {**args, **args.get(f"_{name}", {})}
    kwargs = {p: given[p] for p in required(fn)}
    try:
        out = fn(**kwargs)
        if name == "fast_path":
            with out:
                pass
    finally:
        tvmech.set_fast_path(True) if name == "set_fast_path" else None
    assert out is not None or name == "set_fast_path"
