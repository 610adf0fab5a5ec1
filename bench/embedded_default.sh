#!/usr/bin/env bash
# The embedded default (run.sh) over several seeds: whole-command wall time, best validation F1 and test F1
# of each, as bench/RESULTS.md records them. Extra flags after the seeds go to run.sh (and on to run_ner.py),
# to measure another recipe the same way.
#
#   bash bench/embedded_default.sh 42 1 2
#   bash bench/embedded_default.sh 42 1 2 -- --learning_rate 1e-4 --eval_strategy epoch --save_strategy epoch
#
# Each run writes to $WORK/seed-S (default a fresh temporary folder), removed afterwards but for its logs.
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do seeds+=("$1"); shift; done
[ $# -gt 0 ] && shift
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
for seed in "${seeds[@]}"; do
  out="$work/seed-$seed"
  start=$(date +%s.%N)
  OUTPUT_DIR="$out" bash run.sh --seed "$seed" "$@" > "$work/seed-$seed.log" 2>&1
  end=$(date +%s.%N)
  python - "$out" "$seed" "$start" "$end" <<'PY'
import json, sys
out, seed, start, end = sys.argv[1:]
scores = {split: json.load(open(f"{out}/{split}_results.json")) for split in ("eval", "predict")}
print(f"seed {seed}: {float(end) - float(start):.1f} s, validation F1 {scores['eval']['eval_f1']:.4f}, "
      f"test F1 {scores['predict']['predict_f1']:.4f}", flush=True)
PY
  rm -rf "$out"
done
echo "logs in $work"
