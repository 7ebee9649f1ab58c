# nano v2 run c (issue 44): trains on from run b's finished weights (--init) with OCR's and recognition's shares
# raised, fresh samples (seed 2), its own warm-up and cosine. Code frozen at commit 0313ee1 in
# $HOME/vfl-runs/code-0313ee1 (git archive), so work on the repo cannot change a resumed run.
# Resume: run this file again. FUNCTIONS is fixed at the first start (nano-v2c.functions beside this file, written by after-b-final2.sh from run b's final eval).
# On a new machine without $HOME/vfl-runs: run b must exist first (see nano-v2b.cmd); then
# `git archive 0313ee1 | tar -x -C $HOME/vfl-runs/code-0313ee1` and this file.
F=$(cat $HOME/vfl-runs/nano-v2c.functions)
cd $HOME/vfl-runs/code-0313ee1 && PYTHONPATH=$HOME/vfl-runs/code-0313ee1/src nice -n 10 /work/main/.venv/bin/python -m vfl nano train --out $HOME/vfl-runs/nano-v2c --init $HOME/vfl-runs/nano-v2b --seed 2 --data stream --suite v1 --functions $F --align-words 1 --align-functions recog --lora-rank 64 --lm-start 0 --lr-lm 5e-4 --steps 900 --batch-size 16 --precision fp32 --workers 1 --save-every 20
# At step 900: from /work/main with the venv active, `mkdir -p runs/ship-check-nano-v2c && cp
# $HOME/vfl-runs/eval-shipped-v1.records.jsonl runs/ship-check-nano-v2c/shipped-v1.records.jsonl` (saves 5 min; skip on
# a new machine) and `bash research/nano_v2/ship_check.sh $HOME/vfl-runs/nano-v2c`: ships only if it beats on all four.
