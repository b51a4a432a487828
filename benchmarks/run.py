"""Run tvmech's speed benchmarks and regenerate ``benchmarks/RESULTS.md``.

    python benchmarks/run.py [--device cpu|cuda] [--quick] [--only NAME ...] [--dtype float32|bfloat16]

Writes ``benchmarks/results/<cpu|cuda>.json`` (atomically) and rewrites the device's section of RESULTS.md,
keeping the other device's section as its JSON has it. Benchmarks: ltv_step, sweep, evaluation,
taylor_vs_ablation, linear_fit, load, step_8b, fv_cie, generate_batched (all by default) and synthetic (only with
``--only``).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the tvmech of this checkout, not an installed one

import torch  # noqa: E402
from common import KINDS, Row, environment, save_results, write_results_md  # noqa: E402
from suite import BENCHMARKS, OPTIONAL, Context  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=list(KINDS))
    p.add_argument("--quick", action="store_true", help="fewer steps and repeats (the CPU run in a few minutes)")
    p.add_argument("--tf32", action="store_true", help="float32 matmuls on TF32 tensor cores (CUDA): rows [tf32]")
    p.add_argument("--only", nargs="+", default=None, choices=[*BENCHMARKS, *OPTIONAL], metavar="NAME",
                   help=f"run only these ({', '.join([*BENCHMARKS, *OPTIONAL])}); the file keeps the others' rows")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="dtype of the default model (step_8b is bfloat16 on CUDA whatever this says)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    if args.tf32:  # float32 matmuls on TF32 tensor cores (CUDA)
        torch.backends.cuda.matmul.allow_tf32 = True
    variant = "".join(f" [{v}]" for v, on in ((args.dtype, args.dtype != "float32"), ("tf32", args.tf32)) if on)
    ctx = Context(args.device, args.dtype, args.quick)
    names = args.only or list(BENCHMARKS)
    env = environment(args.device, args.dtype, args.quick)
    rows: list[Row] = []
    failed = []
    t_all = time.perf_counter()
    for name in names:
        fn = BENCHMARKS.get(name) or OPTIONAL[name]
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        t = time.perf_counter()
        try:
            got = fn(ctx)
        except Exception as e:  # a benchmark that cannot run here is reported, not fatal for the others
            traceback.print_exc()
            failed.append(name)
            got = [Row(name, "did not run", "—", None, None, "", None, f"failed: {type(e).__name__}: {e}"[:300])]
        for r in got:
            r.bench = name + variant
            r.name += variant
            print(f"    {r.name}: {r.value} {r.unit} vs {r.baseline_value} -> ratio {r.ratio}", flush=True)
        rows += got
        ctx.release()
        print(f"    ({time.perf_counter() - t:.0f} s)", flush=True)
        save_results(args.device, env, rows, merge=True)  # after every benchmark: a killed run keeps what it did
    env["wall time of this run"] = f"{time.perf_counter() - t_all:.0f} s" + ("" if args.only is None else
                                                                            f" (--only {' '.join(names)})")
    save_results(args.device, env, rows, merge=args.only is not None)
    write_results_md()
    print(f"wrote benchmarks/results/{args.device}.json and benchmarks/RESULTS.md"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
