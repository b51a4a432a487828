"""``benchmarks/scale.py --small`` (issue 29): the 8B-scale pipeline benchmark runs end to end on a tiny Llama on
the CPU, every step twice, and writes the JSON the GPU run writes."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py"


def test_the_scale_benchmark_runs_small(tmp_path):
    spec = importlib.util.spec_from_file_location("scale_bench", SCRIPT)
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    assert scale.main(["--small", "--no-split", "--out", str(tmp_path / "s.json")]) == 0
    out = json.loads((tmp_path / "s.json").read_text())
    assert out["model"]["n_layers"] == 4 and out["fingerprint"]["value"].startswith("fp2-")
    failed = {r["step"]: r.get("error") for r in out["steps"] if r.get("error") or r.get("warm_s") is None}
    assert not failed
    assert len(out["pipeline_steps"]) == 8 and out["pipeline_first_call_s"] > 0
