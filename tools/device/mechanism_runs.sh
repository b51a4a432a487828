#!/usr/bin/env bash
# The issue-11 mechanism runs on one GPU: many small processes at once (each is bound by kernel launches and
# Python, not by the GPU), one per (seed, task group), all writing into per-seed run folders that
# `python -m tvmech.pipeline --seeds ...` later gathers (tvmech.pipeline.scheduler). Every process is per-task
# resumable, so a process stopped by its time limit loses only its current task.
#
# Usage (on the GPU machine, after ../shared/device/stage.sh's pieces):  bash tools/device/mechanism_runs.sh PHASE
#   PHASE a: SmolLM2 OV/MLP reconstructions (α 0.5-8), key heads + sinks, linear maps for seeds 0 1 2;
#            Gemma-3 ICL accuracy.
#   PHASE b: Gemma-3 on the tasks it does in context (from phase a's ICL): reconstructions, key heads + sinks,
#            linear maps for seeds 0 1 2, layer sweep at a few layers; SmolLM2 layer sweep at layer 15, seeds 0-2;
#            anything phase a left unfinished. Phase b again (on the results carried in) finishes what is left.
# Results: $W (default /root/w), packed into $OUT/results.tar.gz at the end.
set -u
phase=${1:?phase a or b}
W=${W:-/root/w}
LIMIT=${LIMIT:-530}
mkdir -p "$W/logs"
# on a fresh machine, an earlier phase's results carried in as .device/results_*.tar.gz are unpacked first
for t in .device/results_*.tar.gz; do [ -f "$t" ] && tar xzf "$t" -C "$W"; done
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
read -r -a F <<< "${TVF:-python -m tvmech.pipeline --device cuda --no-png}"
ALPHAS=(--mech-alphas 0.5 1 2 4 8)
G1=(country_capital capitalize antonym english_french)
G2=(masculine_feminine present_past singular_plural)
G3=(sentiment question_type nli)
launch() {  # name, then the command
  local name=$1; shift
  timeout "$LIMIT" "$@" > "$W/logs/$name.log" 2>&1 &
}
finished() {  # name, the step whose line a finished process prints last
  grep -q "^$2: " "$W/logs/$1.log" 2>/dev/null
}
smol_mech() {  # (what a finished process of an earlier phase did is skipped)
  for s in 0 1 2; do
    d=$W/smol/runs/seed$s
    for g in 1 2 3; do
      eval "tasks=(\"\${G$g[@]}\")"
      finished "smol_mech_s${s}_g$g" sinks || launch "smol_mech_s${s}_g$g" "${F[@]}" --out "$d" --seed "$s" \
        --only ov_circuits key_heads sinks --tasks "${tasks[@]}" "${ALPHAS[@]}"
    done
    finished "smol_linear_s$s" linear || launch "smol_linear_s$s" "${F[@]}" --out "$d" --seed "$s" --only linear
  done
}
case $phase in
  a)
    smol_mech
    launch gemma_icl "${F[@]}" --model gemma-3-270m --out "$W/gemma" --only icl
    ;;
  b)
    smol_mech  # resumes whatever phase a left (finished tasks are reused)
    finished smol_sweep15 sweep || launch smol_sweep15 "${F[@]}" --out "$W/smol_sweep15" --seeds 0 1 2 --only sweep --sweep-layers 15
    # Gemma-3: the tasks it does in context: 5-shot ICL >= 0.4 and >= 0.15 above zero-shot
    mapfile -t GT < <(python - "$W/gemma/icl_accuracy.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
acc = {(r["task"], r["k"]): r["accuracy"] for r in rows}
for t in dict.fromkeys(r["task"] for r in rows):
    if acc[(t, 5)] >= 0.4 and acc[(t, 5)] - acc[(t, 0)] >= 0.15:
        print(t)
PY
)
    echo "Gemma-3 tasks: ${GT[*]}" | tee "$W/logs/gemma_tasks.txt"
    half=$(( (${#GT[@]} + 1) / 2 ))
    for s in 0 1 2; do
      d=$W/gemma/runs/seed$s
      finished "gemma_mech_s${s}_g1" sinks || launch "gemma_mech_s${s}_g1" "${F[@]}" --model gemma-3-270m --out "$d" --seed "$s" \
        --only ov_circuits key_heads sinks --tasks "${GT[@]:0:$half}" "${ALPHAS[@]}"
      finished "gemma_mech_s${s}_g2" sinks || launch "gemma_mech_s${s}_g2" "${F[@]}" --model gemma-3-270m --out "$d" --seed "$s" \
        --only ov_circuits key_heads sinks --tasks "${GT[@]:$half}" "${ALPHAS[@]}"
      finished "gemma_linear_s$s" linear || launch "gemma_linear_s$s" "${F[@]}" --model gemma-3-270m --out "$d" --seed "$s" --only linear \
        --linear-tasks "${GT[@]:0:3}"
    done
    finished gemma_sweep sweep || launch gemma_sweep "${F[@]}" --model gemma-3-270m --out "$W/gemma" --only sweep --tasks "${GT[@]}" \
      --sweep-layers 3 6 9 12 15
    ;;
esac
start=$(date +%s)
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do
  sleep 10
  echo "$(( $(date +%s) - start )) s: $(jobs -rp | wc -l) running; GPU $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null)" >> "$W/logs/progress.txt"
done
wait
grep -l -i "error\|traceback" "$W"/logs/*.log > "$W/logs/failed.txt" 2>/dev/null
tail -n 3 "$W"/logs/*.log | tail -n 80
tar czf "$OUT/results_$phase.tar.gz" -C "$W" --exclude='*.html' --exclude='*.csv' --exclude='plotly.min.js' .
ls -la "$OUT"
