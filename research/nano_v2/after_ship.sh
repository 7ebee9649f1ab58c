#!/usr/bin/env bash
# What issue 44 asks of newly shipped nano weights, measured in one go (about 40 min on 2 CPU cores, nothing
# else on them): v2-suite accuracy (held-out words, recognition with binding distractors), open-vocabulary and
# pseudo-word OCR, `make demo`'s wall time as a newcomer runs it (a fresh clone of HEAD, set-up included),
# `vfl locate --n 40 --window 3` and its comparison with the paper's Qwen2.5-VL-7B order. v1's n-200 table is ship_check.sh's (runs/ship-check-<run>/run-v1.json).
# Run it from the repository root with the venv active, after `vfl nano ship` and its commit.
#   bash research/nano_v2/after_ship.sh [OUT]     (OUT defaults to runs/nano-v2)
set -euo pipefail
OUT=${1:-runs/nano-v2}
mkdir -p "$OUT"
vfl nano eval --suite v2 --n 200 --batch-size 16 --out "$OUT/eval-v2-held-out.json"
vfl nano eval --suite v2 --words train --n 200 --batch-size 16 --out "$OUT/eval-v2-train-words.json"
vfl nano eval --suite v1 --words pseudo --n 200 --batch-size 16 --out "$OUT/eval-v1-pseudo.json"
clone=$(mktemp -d) && git clone -q . "$clone/main"
start=$(date +%s)
(cd "$clone/main" && make demo) > "$OUT/demo.log" 2>&1
echo "make demo: $(( $(date +%s) - start )) s" | tee "$OUT/demo-seconds.txt"
mkdir -p "$OUT/demo" && cp "$clone/main/runs/demo/"{curves.png,summary.json,report.md} "$OUT/demo/"   # the README's figure
vfl locate --model nano --n 40 --window 3 --out "$OUT/locate-n40-w3"
vfl compare "$OUT/locate-n40-w3" --names "nano v2 n40 w3" --paper --out "$OUT/vs-paper"
echo "done: $OUT (evals, demo.log, demo/, locate-n40-w3/, vs-paper/)"
