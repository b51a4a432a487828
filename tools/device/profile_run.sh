#!/usr/bin/env bash
# On the GPU machine after staging: the CUDA tests of sharding, then the one-task timing and profile of the
# paper-preset steps (tools/device/profile_steps.py); writes under $OUT.
set -u
export TQDM_DISABLE=1 OMP_WAIT_POLICY=PASSIVE
python -m pytest -q -x tests/unit/core/test_sharded.py 2>&1 | tail -15 | tee "$OUT/sharded.txt"
python tools/device/profile_steps.py /root/prof --only ov_circuits key_heads sinks lens linear > "$OUT/first.txt" 2>&1
grep -E "^[a-z_]+: " "$OUT/first.txt"
python tools/device/profile_steps.py /root/prof --only icl sweep robustness geometry peft ov_circuits key_heads sinks lens linear \
  --profile sweep robustness key_heads sinks lens linear ov_circuits > "$OUT/second.txt" 2>&1
grep -E "^[a-z_]+: " "$OUT/second.txt"
cp /root/prof/*.prof "$OUT/" 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv
