"""Shared pieces of the benchmarks: timing, the result row, the environment record, results files and the
RESULTS.md renderer. Nothing here imports tvmech at module import time except :func:`environment`."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"
KINDS = {"cpu": "CPU", "cuda": "GPU"}  # results/<kind>.json -> its RESULTS.md section

# bfloat16 dense (no sparsity) tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                    "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0, "RTX 4090": 165.0}


@dataclass
class Row:
    """One benchmark result: ``value`` against ``baseline_value`` (both measured in the same run, same data).

    ``ratio`` is ``baseline / value`` for times (> 1: faster than the baseline) and ``value / baseline`` for
    rates; :func:`speedup` and :func:`rate_ratio` fill it in.
    """

    name: str
    what: str
    baseline: str
    baseline_value: float | None
    value: float | None
    unit: str
    ratio: float | None = None
    notes: str = ""
    spread: dict = field(default_factory=dict)  # {"value": [min, max], "baseline": [min, max], "n": repeats}
    ratio_kind: str = "speedup"  # "speedup": baseline / value; "rate": value / baseline; "times": value / baseline
    bench: str = ""  # the benchmark (``--only`` name) that made the row; set by run.py


def speedup(name: str, what: str, baseline: str, base: list[float], val: list[float], unit: str,
            notes: str = "") -> Row:
    """A time row: medians of the repeats, ratio = baseline / value (how many times faster)."""
    b, v = statistics.median(base), statistics.median(val)
    return Row(name, what, baseline, b, v, unit, b / v if v else None, notes, spread(val, base))


def rate_ratio(name: str, what: str, baseline: str, base: list[float], val: list[float], unit: str,
               notes: str = "") -> Row:
    """A rate row (higher is better): ratio = value / baseline."""
    b, v = statistics.median(base), statistics.median(val)
    return Row(name, what, baseline, b, v, unit, v / b if b else None, notes, spread(val, base), "rate")


def multiple(name: str, what: str, baseline: str, base: list[float], val: list[float], unit: str,
             notes: str = "") -> Row:
    """A time row read as a multiple of the baseline (ratio = value / baseline; > 1: takes longer)."""
    b, v = statistics.median(base), statistics.median(val)
    return Row(name, what, baseline, b, v, unit, v / b if b else None, notes, spread(val, base), "times")


def single(name: str, what: str, baseline: str, val: list[float], unit: str, notes: str = "") -> Row:
    """A row without a measured baseline (the reason goes in ``notes``)."""
    return Row(name, what, baseline, None, statistics.median(val), unit, None, notes, spread(val))


def spread(val: list[float], base: list[float] | None = None) -> dict:
    out = {"value": [min(val), max(val)], "n": len(val)}
    if base:
        out["baseline"] = [min(base), max(base)]
    return out


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device) -> tuple[float, object]:
    """Wall seconds of ``fn()`` with the device synchronised before and after, and its result."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=HERE, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tvmech"], cwd=HERE.parent,
                               capture_output=True, text=True).stdout.strip()
        last = subprocess.run(["git", "log", "-1", "--format=%h", "--", "tvmech"], cwd=HERE.parent,
                              capture_output=True, text=True).stdout.strip()
        return sha + (f" (tvmech/ last changed in {last})" if last and not sha.startswith(last) else "") + (
            " (tvmech/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()}, {torch.get_num_threads()} threads ({os.cpu_count()} cores visible)"


def bf16_peak(name: str) -> float | None:
    for key, peak in BF16_PEAK_TFLOPS.items():
        if key in name:
            return peak
    return None


def environment(device: str, dtype: str, quick: bool) -> dict:
    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    env = {"device": device_name(device), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
           "python": platform.python_version(), "torch": torch.__version__, "transformers": version("transformers"),
           "transformer_lens": version("transformer-lens"), "tvmech commit": git_commit(), "dtype": dtype,
           "mode": "quick" if quick else "full"}
    if torch.device(device).type == "cuda":
        env["CUDA"] = torch.version.cuda or "?"
    return env


def write_json(path: Path, data: dict) -> None:
    """Atomic write: a temporary file in the same directory, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def result_path(kind: str) -> Path:
    return RESULTS_DIR / f"{kind}.json"


def save_results(kind: str, env: dict, rows: list[Row], merge: bool) -> dict:
    """Write ``results/<kind>.json``. With ``merge`` (an ``--only`` run) the other benchmarks' rows of the
    previous file are kept, and the file records which runs its rows come from."""
    new = [asdict(r) for r in rows]
    names = {r["bench"] for r in new}
    old_rows = []
    path = result_path(kind)
    if merge and path.exists():
        old = json.loads(path.read_text())
        old_rows = [dict(r, notes=(r.get("notes") or "") + f" [from the run of {old['environment']['date']}]"
                         if "[from the run of" not in (r.get("notes") or "") else r.get("notes"))
                    for r in old.get("rows", []) if r.get("bench") not in names]
    data = {"environment": env, "rows": old_rows + new}
    write_json(path, data)
    return data


# ----------------------------------------------------------------------------------- RESULTS.md
HEADER = """# tvmech speed benchmarks

Regenerated by `benchmarks/run.py`; do not edit by hand.

    python benchmarks/run.py --device cpu [--quick]     # the CPU section
    python benchmarks/run.py --device cuda [--quick]    # the GPU section
    python benchmarks/run.py --only ltv_step sweep      # some benchmarks only (the others' rows are kept)

Each run rewrites its own device's section (from `benchmarks/results/<cpu|cuda>.json`) and keeps the other
as it was, so CPU and GPU results measured on different machines both appear. Every **ratio** compares two
numbers measured *in the same run, on the same data*: for a time it is baseline ÷ value (how many times
faster than the baseline), for a rate (prompts/s, TFLOP/s) value ÷ baseline; a ratio marked
"(value ÷ baseline)" is a time read as a multiple of its baseline (> 1: takes longer). "—": no baseline
could be measured (the notes say why). Values are medians of the
repeats; the range in brackets is min–max over the repeats. Warm-up runs are not timed; on CUDA the timed
regions are synchronised. These are benchmarks, not tests: nothing here asserts a speed. A `--quick` run
(the environment table says which) takes few steps and repeats: its numbers show the order of magnitude.

The benchmarks: `ltv_step`, `sweep`, `evaluation`, `taylor_vs_ablation`, `linear_fit`, `load`, `step_8b`,
`fv_cie` (function-vector indirect effects, `bench_fv.py`),
`generate_batched` (32 steered prompts in one batch vs one at a time, `bench_generate.py`);
`--only synthetic` (not in the default set) times the synthetic-ICL training of `bench_synthetic.py`. The
single-purpose scripts `bench_ltv.py`, `bench_load.py` and `bench_synthetic.py` still run on their own.
"""


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    if unit in ("ms", "ms/step", "ms/prompt"):
        s = f"{x:.1f}"
    elif unit == "s":
        s = f"{x:.2f}" if x < 100 else f"{x:.0f}"
    elif abs(x) >= 100:
        s = f"{x:.0f}"
    elif abs(x) >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3g}"
    return f"{s} {unit}".strip()


def _cell(r: dict, key: str, spread_key: str) -> str:
    s = fmt(r[key], r["unit"])
    sp = (r.get("spread") or {}).get(spread_key)
    if sp and r[key] is not None and (r.get("spread") or {}).get("n", 1) > 1:
        s += f" [{fmt(sp[0], r['unit']).split()[0]}–{fmt(sp[1], r['unit']).split()[0]}]"
    return s


def section(kind: str, data: dict) -> str:
    title = KINDS[kind]
    env = data["environment"]
    lines = [f"## {title}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env.items()]
    lines += ["", "| benchmark | value | baseline (same run) | ratio | notes |", "|---|---|---|---|---|"]
    for r in data["rows"]:
        base = r["baseline"] + (f": {_cell(r, 'baseline_value', 'baseline')}" if r["baseline_value"] is not None
                                else "")
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        if r["ratio"] is not None and r.get("ratio_kind") == "times":
            ratio += " (value ÷ baseline)"
        notes = " ".join(x for x in (r["what"] + ".", r["notes"]) if x and x != ".").replace("|", "\\|")
        lines.append(f"| {r['name']} | {_cell(r, 'value', 'value')} | {base.replace('|', chr(92) + '|')} | {ratio} "
                     f"| {notes} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    parts = [HEADER]
    for kind in KINDS:
        path = result_path(kind)
        if path.exists():
            parts.append(section(kind, json.loads(path.read_text())))
        else:
            parts.append(f"## {KINDS[kind]}\n\nNot measured yet: `python benchmarks/run.py --device {kind}`.\n")
    return "\n".join(parts)


def write_results_md() -> None:
    write_text(RESULTS_MD, render())
