"""tvmech's measurements against TransformerLens's own tools (:mod:`tvmech.analysis.tl_agreement`), written to
``figures/tl_agreement.json`` (the README's "agreement with TransformerLens" table).

One row per model: the default model (SmolLM2-135M-Instruct) at ``--layers``, and the tiny random model of each
architecture of the test matrix (``tests/conftest.py``: matrices N(0, 0.2), norm gains N(1, 0.3)) at layer 1.
θ is the vanilla task vector of ``--task`` at the row's layer (``--k``-shot, ``--n-tv`` queries) on the default
model; on the tiny models, which have no task to carry (and on Gemma's sliding-window ones the zero-shot and ICL
query states can coincide, θ = 0), a random direction of half the mean norm of the query stream. The J-lens and
``W_TV`` use ``--prompts`` zero-shot prompts, attribution patching ``--pairs`` clean/corrupt pairs (the corrupt
query token: ``--swap``). A tool that fails on a model leaves its error in the row. CPU, a few minutes:

    python tools/tl_agreement.py [--out figures] [--layers 15] [--skip-default]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's tvmech; the architecture matrix's tiny models

import tvmech as tv  # noqa: E402
from tvmech.analysis import tl_agreement as ta  # noqa: E402
from tvmech.analysis.tv_map import MapConfig  # noqa: E402
from tvmech.data.prompts import make_prompts  # noqa: E402
from tvmech.data.tasks import builtin_task  # noqa: E402
from tvmech.methods.vanilla import vanilla_task_vector  # noqa: E402
from tvmech.pipeline.store import ResultStore, fresh_meta  # noqa: E402


def random_theta(model, rows: ta.QueryRows, layer: int, seed: int) -> torch.Tensor:
    """A random direction of half the mean norm of the stream entering ``layer`` at the queries of ``rows``."""
    ad = tv.adapt(model)
    batch = rows.batch(ad.tokenizer.pad_token_id or 0)
    with torch.no_grad():
        h = ad.residual(batch.tokens.to(ad.device), layer)[torch.arange(len(batch)), batch.query_pos].float().cpu()
    u = torch.randn(ad.d_model, generator=torch.Generator().manual_seed(seed))
    return u / u.norm() * 0.5 * float(h.norm(dim=-1).mean())


def row(model, name: str, layer: int, args: argparse.Namespace, vanilla: bool = True) -> dict:
    """Every comparison of :mod:`tvmech.analysis.tl_agreement` on ``model`` at ``layer``."""
    t0 = time.perf_counter()
    task = builtin_task(args.task)
    queries = task.splits(args.seed).test
    prompts = make_prompts(task, queries[: args.prompts], 0)
    rows = ta.query_rows(model, task, prompts)
    theta = (vanilla_task_vector(model, task, layer, k=args.k, n=args.n_tv, seed=args.seed).vectors.reshape(-1)
             if vanilla else random_theta(model, rows, layer, args.seed))
    swap = model.tokenizer.encode(args.swap, add_special_tokens=False)[-1]
    out = {"model": name, "layer": layer, "task": args.task, "theta": "vanilla" if vanilla else "random",
           "theta_norm": float(theta.norm())}
    out |= ta.guarded("jlens", ta.jacobian_agreement, model, rows, layer, theta, MapConfig(n_heldout=0, seed=args.seed))
    out |= ta.guarded("ap", ta.attribution_agreement, model, task, prompts[: args.pairs], swap)
    out |= ta.guarded("lens", ta.lens_agreement, model, rows)
    out["seconds"] = time.perf_counter() - t0
    print(name, layer, {k: f"{v:.3g}" if isinstance(v, float) else v for k, v in out.items()}, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "figures", help="folder of tl_agreement.json")
    parser.add_argument("--layers", type=int, nargs="+", default=[15], help="the default model's layers")
    parser.add_argument("--task", default="antonym")
    parser.add_argument("--prompts", type=int, default=4, help="zero-shot prompts of the J-lens and W_TV")
    parser.add_argument("--pairs", type=int, default=2, help="clean/corrupt pairs of attribution patching")
    parser.add_argument("--swap", default="z", help="the corrupt query token (its last token)")
    parser.add_argument("--k", type=int, default=5, help="demonstrations per prompt of θ")
    parser.add_argument("--n-tv", type=int, default=16, help="queries averaged into θ")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-default", action="store_true", help="only the architecture matrix")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.manual_seed(args.seed)
    from conftest import ARCHS, arch_hf, char_tokenizer

    rows = []
    if not args.skip_default:
        model = tv.load_model()
        rows += [row(model, "SmolLM2-135M-Instruct", layer, args) for layer in args.layers]
        del model
    for arch in ARCHS:
        tok = char_tokenizer()
        rows.append(row(tv.wrap(arch_hf(arch, len(tok)), tok, f"tiny-{arch}"), f"tiny {arch}", 1, args,
                        vanilla=False))
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "skip_default")}
    ResultStore(args.out).save_table("tl_agreement", rows, fresh_meta("cpu", settings))
    print(f"wrote {args.out / 'tl_agreement.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
