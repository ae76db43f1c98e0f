#!/usr/bin/env bash
# GPU measurements for docs/cim.md and docs/benchmarks.md (the analog forward), from the repository root:
#
#   bash scripts/gpu/analog.sh            (results in $OUT/analog/, a summary on stdout; at most 8 minutes:
#                                          each step has a time limit and writes its rows as it goes)
#
# 1. kernel: python -m simcim.kernels.bench --kernel analog at 4096^3 and 8192^3: bf16 matmul, the analog
#    matmul (8-bit DAC/ADC, 512-row tiles) with noise off and with read + output noise, and aihwkit-lightning's
#    Triton forward in the same run (if aihwkit-lightning imports: it is pure Python; without a registry, put
#    its wheel in shared/wheels/ first: pip download aihwkit-lightning==2.1.0 --no-deps -d shared/wheels).
# 2. parity: python -m simcim.analog.parity with that machine's torch and aihwkit-lightning (it computes on CPU).
# 3. bundled model: python -m simcim.analog.bench on cuda, 16K tokens: weights forward, analog with the device's
#    per-weight read noise, analog with a fixed read sigma (both on the Triton kernel).
# 4. OLMoE-1B-7B-shaped random checkpoint (bf16, written to local disk, not $OUT): weights and analog with a
#    fixed read sigma (the device's per-weight read-noise variance would take 28 GB more) on 16K tokens,
#    1024-token windows.
set -euo pipefail
OUT=${OUT:-/tmp/out}
R="$OUT/analog"
PY=${PYTHON:-python}
mkdir -p "$R"
$PY -c "import simcim" 2>/dev/null || $PY -m pip install -q -e . --no-deps
$PY -c "import aihwkit_lightning" 2>/dev/null || $PY -m pip install -q --no-deps aihwkit-lightning==2.1.0 2>/dev/null \
  || $PY -m pip install -q --no-deps shared/wheels/aihwkit_lightning-*.whl 2>/dev/null \
  || echo "aihwkit-lightning not installed: its rows stay empty" | tee "$R/lightning_missing.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$R/gpu.csv"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee "$R/versions.txt"

echo "== 1. analog matmul vs bf16 F.linear vs aihwkit-lightning"
timeout 120 $PY -m simcim.kernels.bench --kernel analog --csv "$R/kernel.csv" 2>&1 | tee "$R/kernel.log" || true

echo "== 2. parity with aihwkit-lightning and aihwkit's formulas"
timeout 40 $PY -m simcim.analog.parity --out "$R/parity" 2>&1 | tee "$R/parity.log" || true

echo "== 3. bundled model, 16K tokens, weights vs analog forward"
timeout 80 $PY -m simcim.analog.bench --model bundled --device cuda --eval-tokens 16384 --seq-len 256 \
  --tile-rows 128 --csv "$R/bundled.csv" 2>&1 | tee "$R/bundled.log" || true

echo "== 4. OLMoE-1B-7B-shaped random checkpoint, 16K tokens"
CKPT=${CKPT:-/tmp/olmoe-1b-7b-random}
[[ -f "$CKPT/config.json" ]] || timeout 90 $PY -m simcim.moe.random_checkpoint --arch olmoe-1b-7b --out "$CKPT" --device cuda \
  --dtype bfloat16 2>&1 | tee "$R/olmoe_checkpoint.log" || true
timeout 130 $PY -m simcim.analog.bench --model "$CKPT" --device cuda --eval-tokens 16384 --seq-len 1024 \
  --batch-size 4 --tile-rows 512 --forward analog-fixed --csv "$R/olmoe.csv" 2>&1 | tee "$R/olmoe.log" || true

echo "== summary"
for f in kernel bundled olmoe; do if [[ -f "$R/$f.csv" ]]; then echo "-- $f"; cat "$R/$f.csv"; fi; done
if [[ -f "$R/parity/parity.md" ]]; then cat "$R/parity/parity.md"; fi
