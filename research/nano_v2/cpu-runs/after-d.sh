#!/usr/bin/env bash
# Waits for run d to finish (step 1000), runs ship_check.sh on it (held-out v1 n 200 against the shipped nano; ships
# only if it beats on all four); if it ships, commits the weights and runs research/nano_v2/after_ship.sh (v2 evals,
# make demo in a fresh clone, locate n 40 window 3, compare --paper; ~40 min).
# Start it beside the resumed run: cd $HOME/vfl-runs && setsid nohup bash after-d.sh > after-d.log 2>&1 < /dev/null &
R=$HOME/vfl-runs
while pgrep -f "nano train --out $R/nano-v2d " > /dev/null; do sleep 30; done
steps=$(python3 -c "import json; print(len(json.load(open('$R/nano-v2d/losses.json'))))")
[ "$steps" = 1000 ] || { echo "run d stopped at step $steps, not finished"; exit 1; }
cd /work/main && source .venv/bin/activate
mkdir -p runs/ship-check-nano-v2d && cp $R/eval-shipped-v1.records.jsonl runs/ship-check-nano-v2d/shipped-v1.records.jsonl
echo "ship check of run d from $(date)"
if bash research/nano_v2/ship_check.sh $R/nano-v2d > $R/ship-d.log 2>&1; then
  echo "run d shipped $(date)"
  git add src/vfl/nano/weights && git commit -qm "nano v2: ship run d (issue 44's rule held: see runs/ship-check-nano-v2d/beats.json)"
  bash research/nano_v2/after_ship.sh runs/nano-v2 > $R/after-ship-d.log 2>&1 && echo "after_ship done $(date)"
else
  echo "run d not shipped $(date): see $R/ship-d.log"
fi
mkdir -p $R/final-d && cp runs/ship-check-nano-v2d/* $R/final-d/ 2>/dev/null
