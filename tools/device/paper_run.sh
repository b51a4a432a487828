#!/usr/bin/env bash
# On the GPU machine after staging (tools/device/profile_run.sh's sibling): the CUDA tests, then the paper preset of
# `python -m tvmech.pipeline` end to end with RANKS worker processes (torchrun) sharing the one GPU, into
# /root/paper (resumable: a second call continues where the first stopped). Prints the step summary.
# Env: RANKS (4), LIMIT (seconds, 500), TESTS (1: run the CUDA tests first), ONLY (steps), THREADS (4),
# FRESH (1: start from an empty output folder and an empty model cache, /root/paper-cache, so that the time
# includes dequantizing the GGUF as on a new machine; 0: resume).
set -u
export TQDM_DISABLE=1 OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${THREADS:-4} TVMECH_CACHE=/root/paper-cache
[ "${FRESH:-0}" = 1 ] && rm -rf /root/paper /root/paper-cache
RANKS=${RANKS:-4}
if [ "${TESTS:-1}" = 1 ]; then
  python -m pytest -q tests/unit/core/test_sharded.py tests/unit/core/test_fast_path.py \
    tests/unit/analysis/test_linear_checks.py 2>&1 | tail -4 | tee "$OUT/tests.txt"
fi
start=$(date +%s)
timeout "${LIMIT:-500}" torchrun --standalone --nproc-per-node "$RANKS" -m tvmech.pipeline --preset paper \
  --out /root/paper --device cuda:0 --no-png ${ONLY:+--only $ONLY} 2>&1 | while IFS= read -r l; do echo "$(( $(date +%s) - start )) $l"; done \
  > "$OUT/paper.log"
echo "rc=${PIPESTATUS[0]} seconds=$(( $(date +%s) - start )) ranks=$RANKS"
grep -aE "^[0-9]+ ([a-z_]+: /|[a-z_]+ +(computed|reused)|.*[Ee]rror)" "$OUT/paper.log" | cut -c1-110 | tail -30
mkdir -p "$OUT/paper"; cp /root/paper/*.json "$OUT/paper/" 2>/dev/null; nvidia-smi --query-gpu=memory.used --format=csv
