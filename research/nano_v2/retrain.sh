#!/usr/bin/env bash
# nano v2's run d trained again from scratch, as it was trained (issue 44): three stages of `vfl nano train`, each
# from the last one's finished weights (--init), with the commands its train.json records (`vfl nano ship` prints
# them; research/nano_v2/cpu-runs/ has them as run, with the code each was frozen at). About 11.3 h on 2 CPU cores
# (fp32: 4.4 + 3.6 + 3.3 h); each stage resumes from its checkpoint when this is run again, and a finished stage is
# not trained again. With this code stage b's first losses equal run b's to the
# last digit (18.6454, 18.3275). Run it from the repository root with the venv active; ship with `vfl nano ship OUT/d`.
#   bash research/nano_v2/retrain.sh [OUT]     (OUT defaults to $HOME/vfl-runs/nano-v2-again: outside the work tree)
set -euo pipefail
OUT=${1:-$HOME/vfl-runs/nano-v2-again}
COMMON=(--data stream --suite v1 --align-words 1 --align-functions recog --lora-rank 64 --batch-size 16
        --precision fp32 --workers 1 --save-every 20)
# b: from scratch, recognition in two slots of five, LoRA joining at 10% of the steps
nice -n 10 vfl nano train --out "$OUT/b" "${COMMON[@]}" --functions recog,recog,count,ground,ocr \
  --lm-start 0.1 --lr-lm 5e-4 --steps 1500
# c: counting and OCR in two slots of seven
nice -n 10 vfl nano train --out "$OUT/c" --init "$OUT/b" --seed 2 "${COMMON[@]}" \
  --functions recog,recog,count,count,ground,ocr,ocr --lm-start 0 --lr-lm 5e-4 --steps 900
# d: OCR in half the samples, at a quarter of the peak rates (at full ones a stage first undoes the last one's learning)
nice -n 10 vfl nano train --out "$OUT/d" --init "$OUT/c" --seed 4 "${COMMON[@]}" \
  --functions recog,recog,recog,count,count,ground,ocr,ocr,ocr,ocr,ocr,ocr --lm-start 0 \
  --lr-projector 2.5e-4 --lr-lm 1.25e-4 --steps 1000
echo "trained: $OUT/d (vfl nano ship $OUT/d)"
