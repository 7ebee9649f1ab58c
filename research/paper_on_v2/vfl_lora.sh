#!/usr/bin/env bash
# Issue 15, item 1: VFL-LoRA on nano v2 (CPU), two skills: grounding among distractors (grounding's VFL, layers
# 20-23) and recognition in crowded scenes (recognition's VFL, 16-20); nano v2 localizes no other function.
# Each variant is about 9-13 min on 2 cores (60 steps of 8, then 400 evaluation items and 20 text questions).
# Grounding trains at the paper's lr 2e-4; recognition at 1e-3, since at 2e-4 no variant learnt it (seed 0:
# every variant 0.77-0.79 against the untouched 0.785; those rows: bench/results/vfl_lora_v2_cpu_recog-crowd_lr2e-4_newline-labels.jsonl).
# Rows *_newline-labels.jsonl were trained when vfl.lora.encode also labelled the chat template's newline after
# the end of turn (fixed 2026-12-07); bench/vfl_lora.py refuses to mix them with new seeds. Resumable: run it again with the same OUT; the rows finished
# so far are committed in bench/results/vfl_lora_v2_cpu_SKILL.jsonl and seed a new machine's run folder.
#   nice bash research/paper_on_v2/vfl_lora.sh [OUT]      (OUT defaults to $HOME/vfl-runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-$HOME/vfl-runs}
VFL=research/nano_v2/results/v2_locate/locate-n40-w3/summary.json   # `vfl locate --model nano --n 40 --window 3`
run() {  # skill seeds lr
  local dir=$OUT/vfl-lora-$1 saved=bench/results/vfl_lora_v2_cpu_$1.jsonl
  mkdir -p "$dir"
  if [ ! -s "$dir/results.jsonl" ] && [ -s "$saved" ]; then cp "$saved" "$dir/results.jsonl"; fi
  .venv/bin/python bench/vfl_lora.py --vfl $VFL --skill "$1" --seeds "$2" --train-n 400 --steps 60 --batch-size 8 \
    --lr "$3" --micro-batch 4 --eval-n 200 --ood-n 50 --eval-batch 16 --out "$dir"
  cp "$dir/results.jsonl" "$saved"
}
run ground-among 0,1,2 2e-4
run recog-crowd 0,1,2 1e-3
.venv/bin/python research/paper_on_v2/lora_verdicts.py   # the paper's claims per skill (vfl_lora_v2_cpu_verdicts.json)
.venv/bin/python research/paper_on_v2/figures.py         # docs/vfl-lora-v2.png, docs/vfl-select-v2.png
