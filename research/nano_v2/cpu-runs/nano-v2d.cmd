# nano v2 run d (issue 44): trains on from run c's finished weights (--init) with OCR in half the samples (6 slots
# of 12; recognition 3, counting 2, grounding 1: run c's held-out v1 n 200 was recognition 0.660, counting 0.905,
# grounding 1.000, OCR 0.055, so recognition and counting keep their run-c rates a step and grounding gives way), fresh samples (seed 4), its own warm-up and cosine. Why: no CPU
# run has read OCR at all (runs b and c sit at the image-blind floor, 1.888 a token: research/nano_v2/blind_floor.py);
# the GPU runs that read it had 11,000-17,500 OCR samples, runs b + c 8,900; this adds 8,000 (16,900 in all).
# A first start with 5 OCR slots of 10 (recognition 2) was stopped after a minute and its folder removed: it cut
# recognition's samples a step from 4.6 to 3.2, and recognition misses the ship rule by 0.006.
# Peak rates a quarter of run c's (projector 2.5e-4, LoRA 1.25e-4): a first run d at run c's peaks (5e-4 and the
# projector's default 1e-3; kept as nano-v2d-peak-rates/) undid in its warm-up what run c had learnt last: over
# steps 1-20, 21-40, 41-60 counting's loss went 0.20, 0.37, 0.45 and OCR's 1.735, 1.856, 1.892 (back to its blind
# floor), as run c's own first 200 steps had; run c's OCR crossed the floor only once its cosine was below ~27%
# of the peak. So run d starts where run c learnt: a quarter of the peaks, cosine to 0.
# Code frozen at commit d814e12 in $HOME/vfl-runs/code-d814e12 (git archive), so work on the repo cannot change a
# resumed run. Resume: run this file again.
# On a new machine without $HOME/vfl-runs: runs b and c must exist first (nano-v2b.cmd, nano-v2c.cmd); then
# `git archive d814e12 | tar -x -C $HOME/vfl-runs/code-d814e12` and this file.
cd $HOME/vfl-runs/code-d814e12 && PYTHONPATH=$HOME/vfl-runs/code-d814e12/src nice -n 10 /work/main/.venv/bin/python -m vfl nano train --out $HOME/vfl-runs/nano-v2d --init $HOME/vfl-runs/nano-v2c --seed 4 --data stream --suite v1 --functions recog,recog,recog,count,count,ground,ocr,ocr,ocr,ocr,ocr,ocr --align-words 1 --align-functions recog --lora-rank 64 --lm-start 0 --lr-projector 2.5e-4 --lr-lm 1.25e-4 --steps 1000 --batch-size 16 --precision fp32 --workers 1 --save-every 20
# Watch: `python research/nano_v2/blind_floor.py --run $HOME/vfl-runs/nano-v2d --block 50` (from /work/main, venv):
# OCR below its blind floor (1.888) by several standard errors means it reads.
# At step 1000: from /work/main with the venv active, `mkdir -p runs/ship-check-nano-v2d && cp
# $HOME/vfl-runs/eval-shipped-v1.records.jsonl runs/ship-check-nano-v2d/shipped-v1.records.jsonl` and
# `bash research/nano_v2/ship_check.sh $HOME/vfl-runs/nano-v2d`: ships only if it beats on all four.
