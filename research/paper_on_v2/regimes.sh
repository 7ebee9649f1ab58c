#!/usr/bin/env bash
# Issue 15, item 4: does training the language model move, widen or spread where nano reads each function?
# The same v1 data (nano v2's first stage: recognition twice, counting, grounding, OCR in turn; recognition's image
# tokens aligned to its words), the same seed, steps and batch, trained three ways (bench/nano_recipes.py):
# projector only; projector + LoRA rank 64 on every layer from 10% of the steps (nano v2's regime); projector +
# the whole language model from 10%. Then each is scored (v1 and v2 held out, n 100 a function), located
# (`vfl locate`, 40 probes a function, windows of 3) and the bands compared (`vfl compare`, OUT/regimes/compare).
# 600 steps of 16 is where nano v2's first stage read grounding 0.565 and counting 0.505 (9,600 samples); on 2
# CPU cores (fp32) about 2-3 h a regime (steps of 16 took a median 11.1 s in nano v2's run d, 14-16 s in the
# encoder study through a frozen LoRA), then about 15 min of locate each. Resumable: run it again with the
# same OUT; scored rows go to OUT/regimes/results.jsonl and are copied to bench/results/regimes_v2_cpu.jsonl;
# regime_verdicts.py then sets each regime's bands and read profiles against projector-only (regimes_v2_cpu_verdicts.json,
# docs/regimes-v2.png).
#   nice bash research/paper_on_v2/regimes.sh [OUT]      (OUT defaults to $HOME/vfl-runs)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-$HOME/vfl-runs}/regimes
# In two stages, so the first answer (LoRA against projector-only, about 5.5 h) does not wait for the third regime:
# a rerun with one more recipe finds the first two trained, scored and located, and trains only the new one.
for recipes in projector,lora projector,lora,full; do
  .venv/bin/python bench/nano_recipes.py --recipes "$recipes" --suite v1 \
    --functions recog,recog,count,ground,ocr --align-functions recog --steps 600 --batch-size 16 --workers 1 \
    --device cpu --precision fp32 --save-every 20 --n 100 --eval-batch 16 --locate 40 --window 3 --out "$OUT"
  cp "$OUT/results.jsonl" bench/results/regimes_v2_cpu.jsonl
  .venv/bin/python research/paper_on_v2/regime_verdicts.py "$OUT"   # moved, widened or spread: paired bootstrap
done
