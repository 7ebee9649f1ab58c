#!/usr/bin/env bash
# The last call of a GPU session (tools/gpu_kit.py makes the pieces and prints the calls before it): stage the
# carried piece, install the kit, train nano v2's recipes side by side within a time budget, score each on both
# suites (and locate them), and pack the results into $OUT, even when the deadline stopped the work.
#
#   device run: carry [".kit/N"], command "bash tools/gpu_run.sh", timeout_s 600
#   here, after: python tools/gpu_kit.py receive FILES_AT runs/gpu
#
# Settings, from the environment: BUDGET (training seconds of every recipe, 240), DEADLINE (seconds after which
# the work is stopped so that the results still go back, 540), RECIPES (projector,lora,full), N (held-out items
# per function and suite, 200), LOCATE (v2 probes per function for `vfl locate`, 20), WORKERS (DataLoader workers
# per recipe, 4), DEVICE (cuda). Further arguments go to bench/nano_recipes.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
started=$SECONDS
python3 tools/gpu_kit.py stage .kit || exit 2
site=$(python3 tools/gpu_kit.py unpack) || exit 2
export PYTHONPATH="$PWD/src:$site" VFL_CACHE=${VFL_CACHE:-/tmp/vfl-cache} PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
          torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', torch.get_num_threads(), 'threads')"
} > "$OUT/device.txt"
left=$(( ${DEADLINE:-540} - (SECONDS - started) ))
[ "$left" -lt 60 ] && left=60
timeout -s INT "$left" python3 bench/nano_recipes.py --device "${DEVICE:-cuda}" --concurrent \
    --workers "${WORKERS:-4}" --budget "${BUDGET:-240}" --recipes "${RECIPES:-projector,lora,full}" \
    --n "${N:-200}" --locate "${LOCATE:-20}" --ocr-answers letters --pseudo-words 0.5 --out runs/recipes "$@" \
    2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "stopped at the ${DEADLINE:-540} s deadline; what finished goes back" | tee -a "$OUT/log.txt"
tail -c 1500000 "$OUT/log.txt" > "$OUT/log.tmp" && mv "$OUT/log.tmp" "$OUT/log.txt"  # its end, within --other-mib
# the full fine-tune's language model (270 MB) cannot come back: it is scored here
python3 tools/gpu_kit.py send runs/recipes --out "$OUT" --other-files 2 --other-mib 2 --exclude '*checkpoint.pt' \
    --exclude 'calibration/*' --exclude 'probes-v2/*' --exclude '*language_model.safetensors' || exit 2
exit "$status"
