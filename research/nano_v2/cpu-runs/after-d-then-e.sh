#!/usr/bin/env bash
# Waits for after-d.sh (run d's ship check); if run d did not ship, starts run e (nano-v2e.cmd) and, at its end,
# ship_check.sh on it. Start: cd $HOME/vfl-runs && setsid nohup bash after-d-then-e.sh > after-d-then-e.log 2>&1 < /dev/null &
R=$HOME/vfl-runs
while pgrep -f "bash after-d.sh" > /dev/null; do sleep 30; done
grep -q "run d shipped" $R/after-d.log && { echo "run d shipped: no run e"; exit 0; }
grep -q "run d not shipped" $R/after-d.log || { echo "run d's check did not run: see after-d.log"; exit 1; }
echo "run e starts $(date)"
bash $R/nano-v2e.cmd >> $R/nano-v2e.log 2>&1
steps=$(python3 -c "import json; print(len(json.load(open('$R/nano-v2e/losses.json'))))")
[ "$steps" = 600 ] || { echo "run e stopped at step $steps, not finished"; exit 1; }
cd /work/main && source .venv/bin/activate
mkdir -p runs/ship-check-nano-v2e && cp $R/eval-shipped-v1.records.jsonl runs/ship-check-nano-v2e/shipped-v1.records.jsonl
echo "ship check of run e from $(date)"
if bash research/nano_v2/ship_check.sh $R/nano-v2e > $R/ship-e.log 2>&1; then echo "run e shipped $(date)"; else echo "run e not shipped $(date)"; fi
mkdir -p $R/final-e && cp runs/ship-check-nano-v2e/* $R/final-e/ 2>/dev/null
