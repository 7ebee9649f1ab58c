#!/usr/bin/env bash
# Issue 44's ship rule, end to end: score a finished `vfl nano train` run and the shipped nano on the same held-out
# items (v1, seed 1, n 200), compare them (compare_evals.py), and ship the run only if it beats the shipped nano on
# all four functions with intervals. Run it from the repository root with the venv active, nothing else on the cores.
#   bash research/nano_v2/ship_check.sh RUN [OUT]     (OUT defaults to runs/ship-check-<run name>)
set -euo pipefail
RUN=${1:?usage: ship_check.sh RUN [OUT]}
OUT=${2:-runs/ship-check-$(basename "$RUN")}
mkdir -p "$OUT"
[ -f "$OUT/shipped-v1.records.jsonl" ] || vfl nano eval --n 200 --batch-size 16 --out "$OUT/shipped-v1.json"
vfl nano eval --weights "$RUN" --n 200 --batch-size 16 --out "$OUT/run-v1.json"
if python research/nano_v2/compare_evals.py "$OUT/run-v1.records.jsonl" "$OUT/shipped-v1.records.jsonl" \
     --out "$OUT/beats.json" --check; then
  vfl nano ship "$RUN"
else
  echo "$RUN does not beat the shipped nano on all four: not shipped (see $OUT/beats.json)"
  exit 1
fi
