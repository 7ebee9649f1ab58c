#!/usr/bin/env bash
# Issue 15, item 2: VFL-select on nano v2 (CPU), the nano v1 experiment's pool design (200 samples, 20% budget,
# LoRA rank 16 on all layers, 2 epochs) with nano v2's VFLs (recognition 16-20, grounding 20-23: the two
# functions nano v2 localizes); arms full, random, vfl, expert, oracle; seeds 0, 1, 2. About 75 min on 2 cores.
# Resumable: run it again with the same OUT; finished rows are committed in bench/results/vfl_select_v2_cpu.jsonl
# and seed a new machine's run folder.
#   nice bash research/paper_on_v2/vfl_select.sh [OUT]      (OUT defaults to $HOME/vfl-runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-$HOME/vfl-runs}/vfl-select-v2
VFL=research/nano_v2/results/v2_locate/locate-n40-w3/summary.json   # `vfl locate --model nano --n 40 --window 3`
saved=bench/results/vfl_select_v2_cpu
mkdir -p "$OUT"
if [ ! -s "$OUT/results.jsonl" ] && [ -s "$saved.jsonl" ]; then cp "$saved.jsonl" "$OUT/results.jsonl"; fi
.venv/bin/python bench/vfl_select.py --vfl $VFL --seeds 0,1,2 --eval-batch 16 --out "$OUT"
cp "$OUT/results.jsonl" "$saved.jsonl"
cp "$OUT/agreement.json" "${saved}_agreement.json"
