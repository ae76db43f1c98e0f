#!/usr/bin/env bash
# On one GPU machine: measure the GPU spec, then run the sim_vs_measured sweep; results under $OUT.
#   run: bash scripts/sim_vs_measured_gpu.sh   (needs a CUDA GPU; OUT defaults to ./out_gpu; on an H200
#        SPEC=simcim/gpu/specs/h200.toml, on another GPU a new file: the spec it measures is the one the sweep predicts with)
# then the kernels, grids, durations and compiled registers of each call (kernel_grids.json)
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-$PWD/out_gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
spec=${SPEC:-simcim/gpu/specs/h100.toml}
python3 -m simcim.kernels.gpu_microbench --out "$spec" 2>&1 | tee "$OUT/microbench.log" || exit 1
cp "$spec" "$OUT/"
[ "${SPEC_ONLY:-0}" = 1 ] && exit 0
# the sweep predicts with the spec just measured (SPEC), whatever the config names
timeout ${SWEEP_TIMEOUT:-470} python3 -m simcim.experiments.cli sweep experiments/configs/sim_vs_measured.toml --out results/sim_vs_measured \
    --set "params.gpu_spec=\"$spec\"" --no-progress 2>&1 | grep -v Warning | tee "$OUT/sweep.log"
timeout ${PROFILE_TIMEOUT:-120} python3 -m simcim.validation.measure "$OUT/kernel_grids.json" 2>&1 | grep -v Warning \
    | tail -n 40
tar czf "$OUT/sim_vs_measured_results.tar.gz" results/sim_vs_measured
ls -la "$OUT"
