#!/usr/bin/env bash
# GPU runs for docs/moe.md: the 64-expert bundled model trained wide on the GPU, and OLMoE-1B-7B-shaped
# noise_injection / moe_noise trials (PCM preset, all roles, 16K evaluation tokens, bf16).
#
#   bash scripts/gpu/moe64.sh [all|train|olmoe]     (from the repository root; results in $OUT/moe64/)
#
# train: python -m simcim.bundled.train --model bundled-64e --device cuda at a GPU size (TRAIN_MINUTES of
#        training, default 4), its log and safetensors in $OUT/moe64/model/, then the clean held-out perplexity
#        and the router-input massive-activation measure of it and of the two shipped bundled models.
# olmoe: python -m simcim.moe.scale on a random OLMoE-1B-7B checkpoint (written to local disk, not to $OUT):
#        per kind the load, first trial (with the clean reference), a second trial's programming and
#        evaluation time, peak GPU memory, and one more trial under the profiler (top operators, host syncs).
set -euo pipefail
PHASE=${1:-all}
case "$PHASE" in all|train|olmoe) ;; *) echo "moe64.sh: unknown phase '$PHASE' (all, train or olmoe)" >&2; exit 2;; esac
OUT=${OUT:-/tmp/out}
R="$OUT/moe64"
PY=${PYTHON:-python}
mkdir -p "$R"
$PY -c "import simcim" 2>/dev/null || $PY -m pip install -q -e . --no-deps
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$R/gpu.csv"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$R/versions.txt"

if [[ $PHASE == all || $PHASE == train ]]; then
  SIZE=${SIZE:-"--hidden 256 --intermediate 64 --layers 8 --heads 8"}
  echo "== train bundled-64e on the GPU ($SIZE, ${TRAIN_MINUTES:-4} min)"
  # shellcheck disable=SC2086
  $PY -m simcim.bundled.train --model bundled-64e --device cuda $SIZE --batch 64 --lr 1e-3 --eval-every 50 \
    --max-minutes "${TRAIN_MINUTES:-4}" --out "$R/model" 2>&1 | tee "$R/train_gpu.log"
  cp "$R/train_gpu.log" "$R/model/train.log"
  for m in bundled bundled-64e "$R/model"; do
    echo "== $m: clean perplexity and router-input channels"
    $PY -m simcim.moe.activations "$m" --device cuda
  done 2>&1 | tee "$R/activations.txt"
fi

if [[ $PHASE == all || $PHASE == olmoe ]]; then
  echo "== OLMoE-1B-7B-shaped trials (PCM 1 day, all roles, 16K tokens, bf16)"
  $PY -m simcim.moe.scale --arch olmoe-1b-7b --device cuda --dtype bfloat16 --noise pcm --eval-tokens 16384 \
    --seq-len 2048 --batch-size 4 --trials 2 --profile --checkpoint /tmp/olmoe-1b-7b-random --out "$R/olmoe" \
    2>&1 | tee "$R/olmoe.log"
fi
echo "results in $R"
