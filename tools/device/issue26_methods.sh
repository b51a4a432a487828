#!/usr/bin/env bash
# Issue 26's methods comparison on the GPU machine after ../shared/device/stage.sh's pieces (GEMMA3=1), in place in
# the copy's figures/ (steps whose saved settings still match are skipped). Every call runs the same list against one
# deadline (LIMIT seconds from the start), so a call stopped by it resumes in the next one (each (task, seed) job of
# a step is saved when it finishes).
#   SmolLM2-135M (paper preset: 10 tasks, seeds 0 1 2, four torchrun ranks on the one GPU): methods, ltv_recipes
#   Gemma-3-270M (its three in-context tasks, seeds 0 1 2): methods, then ltv_recipes
# Results: $OUT/results.tar.gz (every JSON under figures/, per-seed runs included), $OUT/log.txt.
# Usage: LIMIT=560 bash tools/device/issue26_methods.sh [cuda-tests]
set -u
start=$(date +%s)
LIMIT=${LIMIT:-560}
export TQDM_DISABLE=1 OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=4 PYTHONUNBUFFERED=1
log=$OUT/log.txt
left() { echo $(( LIMIT - ($(date +%s) - start) )); }
stamp() { while IFS= read -r l; do echo "$(( $(date +%s) - start )) $l"; done >> "$log"; }
if [ "${1:-}" = cuda-tests ]; then
  python -m pytest -q -p no:cacheprovider tests/unit/methods/test_released.py tests/unit/core/test_optim.py 2>&1 \
    | tail -3 | stamp
fi
G=(capitalize singular_plural sentiment)
run() {  # seconds left must exceed 20 to start; the rest of the arguments: tvmech.pipeline's
  local t; t=$(left)
  [ "$t" -gt 20 ] || { echo "skipped (deadline): $*" | stamp; return; }
  echo "start: $*" | stamp
  timeout "$t" torchrun --standalone --nproc-per-node 4 -m tvmech.pipeline --device cuda:0 --no-png "$@" 2>&1 \
    | grep -aE "^[a-z_]+: |computed|reused|rror|Traceback|seconds" | cut -c1-160 | stamp
}
# in order of need (a call that runs out of time leaves the last ones to the next call)
run --preset paper --only methods ltv_recipes
run --preset paper --model gemma-3-270m --out figures/gemma3 --only methods --tasks "${G[@]}"
run --preset paper --model gemma-3-270m --out figures/gemma3 --only ltv_recipes --tasks "${G[@]}"
echo "end, $(( $(date +%s) - start )) s" | stamp
find figures -name '*.json' -not -path '*/vectors/*' -not -path '*/.tasks/*' | tar czf "$OUT/results.tar.gz" -T -
tail -40 "$log"
