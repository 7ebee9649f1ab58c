#!/usr/bin/env bash
# Issue 15, item 3: which DINOv2 layers should feed nano's projector? The layer-selection study on nano v2's
# language model: one variant per similarity group of nano's encoder (its representative layer, from
# `vfl vision-layers`), one from the last layer, one from the groups' fusion. Every variant reads through nano
# v2's trained language model (its LoRA, frozen: `--lm-from`) and trains only a fresh projector, with nano v2's
# first-stage recipe (first_stage.json: streamed v1 data, recognition's tokens aligned to its words, projector
# lr 1e-3) for 300 steps of 16; so the variants differ in the encoder layers alone. Training all of nano per
# variant (nano v2's 3,400 steps, about 11 h each on 2 cores) is out of reach here. A pilot from the last layer
# (80 steps, 1,280 samples; n 30) read grounding 0.97, counting 0.30, recognition 0.47, OCR 0.03.
# Measured on 2 cores (AMD EPYC, fp32): 12.6-15.5 s a step, 63-80 min a variant and 8-13 min to score it, 5 variants.
# Resumable: run it again with the same OUT; the study table is copied to bench/results/encoder_layers_v2_cpu.json,
# the paired outcomes and the verdicts on the paper's findings to encoder_layers_v2_cpu_{outcomes.jsonl,verdicts.json}.
#   nice bash research/paper_on_v2/encoder_layers.sh [OUT]      (OUT defaults to $HOME/vfl-runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-$HOME/vfl-runs}/encoder-layers-v2
mkdir -p "$OUT"
if [ ! -s "$OUT/vision-layers/groups.json" ]; then
  .venv/bin/vfl vision-layers --encoder nano --out "$OUT/vision-layers"
fi
.venv/bin/vfl nano study --groups "$OUT/vision-layers/groups.json" --recipe research/paper_on_v2/first_stage.json \
  --lm-from src/vfl/nano/weights --steps 300 --n 100 --out "$OUT/study"
cp "$OUT/study/study.json" bench/results/encoder_layers_v2_cpu.json
cp "$OUT/vision-layers/groups.json" bench/results/encoder_layers_v2_cpu_groups.json
.venv/bin/python research/paper_on_v2/encoder_verdicts.py "$OUT/study"   # the paper's findings, one by one
