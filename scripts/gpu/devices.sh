#!/usr/bin/env bash
# The device models' GPU figures (docs/devices.md, "Throughput" and the GPU tests) on one fresh H100 or H200,
# results under $OUT/devices/:
#   1. the fused PCM kernel and the chunked torch path on 1e9 conductances, float32 and bfloat16,
#      against a device-to-device copy (after checking the fused kernel against the torch path) -> bench.csv, bench.log
#   2. the GPU tests of simcim.noise_models (distribution, reproducibility, in place = out of place) -> tests.log
# About 2 minutes.   run from the repo root: OUT=/some/dir bash scripts/gpu/devices.sh   (OUT defaults to ./out_gpu)
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-$PWD/out_gpu}
dir=$OUT/devices
mkdir -p "$dir"
python3 -c "import simcim.noise_models.fused" 2>/dev/null || pip install -q -e . --no-deps

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$dir/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$dir/gpu.txt"
git rev-parse HEAD > "$dir/commit.txt" 2>/dev/null
date -u +%F >> "$dir/gpu.txt"

echo "== 1. python -m simcim.noise_models.bench --params 1e9 --dtype float32 bfloat16"
timeout 300 python3 -m simcim.noise_models.bench --params 1e9 --dtype float32 bfloat16 --csv "$dir/bench.csv" \
  2>&1 | tee "$dir/bench.log"
bench_rc=$?

echo "== 2. python -m pytest -q tests/noise_models/test_gpu.py"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/noise_models/test_gpu.py > "$dir/tests.log" 2>&1
tests_rc=$?
tail -n 1 "$dir/tests.log"

echo "== summary: $(head -n 2 "$dir/gpu.txt" | tail -n 1), bench exit $bench_rc, tests exit $tests_rc"
grep -E "fused vs torch|copy|default|torch chunks" "$dir/bench.log"
[ "$bench_rc" = 0 ] && [ "$tests_rc" = 0 ]
