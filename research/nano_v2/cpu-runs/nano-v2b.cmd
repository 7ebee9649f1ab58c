# nano v2 run b (issue 44): the code frozen at commit 50b7102 in $HOME/vfl-runs/code-50b7102 (git archive), so work
# on the repo cannot change a resumed run. Resume: run this file again (bash $HOME/vfl-runs/nano-v2b.cmd).
# On a new machine: make setup in the repo, then `git archive 50b7102 | tar -x -C $HOME/vfl-runs/code-50b7102`.
cd $HOME/vfl-runs/code-50b7102 && PYTHONPATH=$HOME/vfl-runs/code-50b7102/src nice -n 10 /work/main/.venv/bin/python -m vfl nano train --out $HOME/vfl-runs/nano-v2b --data stream --suite v1 --functions recog,recog,count,ground,ocr --align-words 1 --align-functions recog --lora-rank 64 --lm-start 0.1 --lr-lm 5e-4 --steps 1500 --batch-size 16 --precision fp32 --workers 1 --save-every 20
