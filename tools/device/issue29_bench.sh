#!/usr/bin/env bash
# Issues 26 and 29's GPU benchmark rows, on the GPU machine after ../shared/device/stage.sh's pieces:
#   benchmarks/scale.py (the 8B-shaped per-task pipeline, one GPU and split by device_map), then
#   benchmarks/run.py --device cuda --only fv_cie generate_batched (ratios against the old code in the same run).
# Results under $OUT: scale.json, cuda.json, RESULTS.md, log.txt.  Usage: bash tools/device/issue29_bench.sh [--before]
set -u
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1 PYTHONPATH=.:${PYTHONPATH:-}
start=$(date +%s)
stamp() { while IFS= read -r l; do echo "$(( $(date +%s) - start )) $l"; done | tee -a "$OUT/log.txt"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | stamp
python benchmarks/scale.py --device cuda --out "$OUT/scale.json" "$@" 2>&1 | grep -v Warning | stamp
[ -n "${SKIP_RUN:-}" ] || python benchmarks/run.py --device cuda --only fv_cie generate_batched 2>&1 | grep -E "^\[|    |wrote|rror" | stamp
cp benchmarks/results/cuda.json benchmarks/RESULTS.md "$OUT/" 2>/dev/null
echo "end, $(( $(date +%s) - start )) s" | stamp
