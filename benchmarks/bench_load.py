"""Loading the default model, each measurement in a fresh Python process (what a user's script or a new
notebook kernel pays), against the imports it cannot avoid, measured in the same run.

* ``floor``: ``import torch, transformers`` and TransformerLens's bridge (the libraries a load needs);
* ``warm``: ``import tvmech; tvmech.load_model()`` with the dequantized cache present (wall time of the
  process, and the ``load_model()`` call alone inside it);
* ``cold``: the same into an empty cache directory (dequantize the GGUF, write the cache);
* ``second``: a second ``load_model()`` in the warm process (what the README measured before issue 13).

Medians of ``--repeats`` runs are written to ``benchmarks/results/load.json`` with device, date and versions.

    python benchmarks/bench_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLOOR = "import torch, transformers, transformer_lens.model_bridge"
LOAD = """
import time, json, sys
t0 = time.perf_counter()
import tvmech
t1 = time.perf_counter()
tvmech.load_model(cache_dir=sys.argv[1] or None)
t2 = time.perf_counter()
tvmech.load_model(cache_dir=sys.argv[1] or None)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "second_s": t3 - t2}))
"""


def _run(code: str, *args: str) -> tuple[float, dict]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True)
    wall = time.perf_counter() - t
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "{}"
    return wall, json.loads(last) if last.startswith("{") else {}


def measure(repeats: int = 3) -> dict[str, list[float]]:
    """Each measurement's seconds over ``repeats`` fresh-process runs (after one priming run)."""
    rows: dict[str, list[float]] = {k: [] for k in ("floor_wall_s", "warm_wall_s", "warm_load_s", "warm_import_s",
                                                     "second_load_s", "cold_wall_s", "cold_load_s")}
    _run(LOAD, "")  # make sure the default cache exists (and the files are in the page cache)
    for _ in range(repeats):
        rows["floor_wall_s"].append(_run(FLOOR)[0])
        wall, inner = _run(LOAD, "")
        rows["warm_wall_s"].append(wall)
        rows["warm_load_s"].append(inner["load_s"])
        rows["warm_import_s"].append(inner["import_s"])
        rows["second_load_s"].append(inner["second_s"])
        with tempfile.TemporaryDirectory() as d:
            wall, inner = _run(LOAD, d)
            rows["cold_wall_s"].append(wall)
            rows["cold_load_s"].append(inner["load_s"])
    return rows


def main(repeats: int = 3) -> dict:
    rows = measure(repeats)
    med = {k.replace("_s", "_median_s"): statistics.median(v) for k, v in rows.items()}
    result = {
        "benchmark": "load_model() in fresh processes: warm (cache present), cold (empty cache), the import floor",
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "versions": {n: md.version(n) for n in ("torch", "transformers", "transformer-lens")},
        **rows, **med,
        "warm_over_floor": med["warm_wall_median_s"] / med["floor_wall_median_s"],
        "cold_over_warm": med["cold_wall_median_s"] / med["warm_wall_median_s"],
    }
    out = Path(__file__).parent / "results" / "load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    main(parser.parse_args().repeats)
