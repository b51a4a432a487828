"""Cold vs warm load of the default model.

Cold: dequantize the GGUF into an empty cache directory (what a first `load_model()` does).
Warm: load the cached safetensors copy. Both are measured in the same run, three times each, and the
medians are written to ``benchmarks/results/load.json`` with the device and date.

    python benchmarks/bench_load.py
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import tvmech as tv


def main(repeats: int = 3) -> dict:
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            tv.load_model(cache_dir=d)
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            tv.load_model(cache_dir=d)
            warm.append(time.perf_counter() - t)
    result = {
        "benchmark": "load_model() cold (dequantize + write cache) vs warm (read cache)",
        "device": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
        "cold_s": cold, "warm_s": warm,
        "cold_median_s": statistics.median(cold), "warm_median_s": statistics.median(warm),
        "speedup": statistics.median(cold) / statistics.median(warm),
    }
    out = Path(__file__).parent / "results" / "load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
