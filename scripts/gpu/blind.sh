#!/usr/bin/env bash
# The GPU model's blind protocol on one fresh H100 or H200 (docs/sim-vs-measured.md), results under $OUT/blind/:
#   1. the microbenchmarks write a new spec of this GPU          -> spec_fresh.toml, microbench.log
#   2. the blind kind with the committed spec of this GPU         -> committed/ (predictions written before timing)
#   3. the same draw again, predicted from the fresh spec alone   -> fresh/ (a GPU described by its microbenchmarks)
#   4. the suite's own sim_vs_measured calls, committed spec      -> sim_vs_measured/
# then the reports (gpu_model_blind.md, sim_vs_measured.md in each run folder) and a summary. Under 8 minutes.
#   run from the repo root: OUT=/some/dir bash scripts/gpu/blind.sh        (OUT defaults to ./out_gpu)
set -o pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 OUT=${OUT:-$PWD/out_gpu}
dir=$OUT/blind
mkdir -p "$dir"
python3 -c "import simcim.gpu" 2>/dev/null || pip install -q -e . --no-deps
start=$SECONDS
step() { echo "== $1 ($((SECONDS - start)) s)"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$dir/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$dir/gpu.txt"
git rev-parse HEAD > "$dir/commit.txt" 2>/dev/null; git status --porcelain --untracked-files=no >> "$dir/commit.txt"
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)" in
  *H100*) committed=h100 ;;
  *H200*) committed=h200 ;;
  *) committed="" ;;
esac

step "1. microbenchmarks -> $dir/spec_fresh.toml"
timeout 50 python3 -m simcim.kernels.gpu_microbench --out "$dir/spec_fresh.toml" > "$dir/microbench.log" 2>&1
tail -n 3 "$dir/microbench.log"

# one seed for the draw, chosen now: steps 2 and 3 predict (and time) the same calls
seed=$(python3 -c "import secrets; print(secrets.randbelow(2**31))")
echo "draw seed: $seed" | tee "$dir/seed.txt"
blind() {  # blind NAME SPEC BUDGET_S: predictions written, then timed for at most BUDGET_S, in $dir/NAME
  timeout $(($3 + 45)) python3 -m simcim.experiments.cli run experiments/configs/gpu_model_blind.toml --out "$dir/$1" \
      --set "params.gpu_spec=\"$2\"" --set "params.draw_seed=$seed" --set "params.time_budget_s=$3" --no-progress \
      2>&1 | grep -v Warning | tee "$dir/$1.log"
  python3 -m simcim.validation.blind_report "$dir/$1" > /dev/null
}
if [ -n "$committed" ]; then
  step "2. blind, committed spec $committed"
  blind committed "$committed" 140  # the first run compiles the kernels
fi
if [ -s "$dir/spec_fresh.toml" ]; then
  step "3. blind, the fresh microbenchmark spec only"
  blind fresh "$dir/spec_fresh.toml" 75
fi

step "4. sim_vs_measured, the suite's own calls (spec ${committed:-fresh})"
timeout 90 python3 -m simcim.experiments.cli sweep experiments/configs/sim_vs_measured.toml --out "$dir/sim_vs_measured" \
    --set "params.gpu_spec=\"${committed:-$dir/spec_fresh.toml}\"" --set params.quality=false \
    --set params.simulate=false --no-progress 2>&1 | grep -v Warning | tail -n 3
python3 -m simcim.validation.report "$dir/sim_vs_measured" > /dev/null
python3 -m simcim.validation.blind_report "$dir/sim_vs_measured" > /dev/null

step "summary"
for run in committed fresh sim_vs_measured; do
  f=$dir/$run/gpu_model_blind.md
  [ -f "$f" ] || continue
  echo "--- $run"
  grep -E '^- \*\*|calls scored|^[1-5]\. ' "$f" | cut -c1-300
done
grep -E 'MAPE' "$dir/sim_vs_measured/sim_vs_measured.md" 2>/dev/null
echo "total $((SECONDS - start)) s"
ls -la "$dir"
