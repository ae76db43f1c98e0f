#!/usr/bin/env bash
# `simcim sweep --gpus` on a GPU machine: checks that each worker sees only its own GPU, then times
# the same sweep on one GPU and on all of them. Results under $OUT/multi_gpu_sweep/.
#   run from the repo root: bash scripts/gpu/multi_gpu_sweep.sh   (under 8 minutes)
set -o pipefail
export PYTHONUNBUFFERED=1 OUT=${OUT:-$PWD/out_gpu}
dir="$OUT/multi_gpu_sweep"
mkdir -p "$dir"
python3 -c "import simcim.experiments.cluster" 2>/dev/null || pip install -q -e . --no-deps
nvidia-smi --query-gpu=index,name,uuid,memory.total --format=csv | tee "$dir/gpus.csv"
lscpu | grep 'Model name' | tee -a "$dir/gpus.csv"

# 1. pinning: one worker per GPU, each with one visible device whose UUID differs from the others'
timeout 240 python3 - "$dir/pinning.json" <<'EOF' || exit 1
import json, os, sys
from dask.distributed import Client
from simcim.experiments.cluster import gpu_devices, local_cluster

def seen():
    import torch
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "count": torch.cuda.device_count(),
            "uuid": str(torch.cuda.get_device_properties(0).uuid), "name": torch.cuda.get_device_name(0)}

devices = gpu_devices("all")
with local_cluster(devices) as cluster, Client(cluster) as client:
    client.wait_for_workers(len(devices), timeout=120)
    out = client.run(seen)
json.dump(out, open(sys.argv[1], "w"), indent=2)
uuids = {v["uuid"] for v in out.values()}
ok = len(out) == len(devices) and all(v["count"] == 1 for v in out.values()) and len(uuids) == len(devices)
print(f"pinning: {len(devices)} workers, one visible GPU each, {len(uuids)} distinct GPUs -> {'OK' if ok else 'FAILED'}")
sys.exit(0 if ok else 1)
EOF

# 2. the same sweep (24 trials: bundled model, 6 noise levels x 4 chips, 64K eval tokens) on 1 GPU, then on all
n=$(nvidia-smi -L | wc -l)
for gpus in 1 all; do
    [ "$gpus" = all ] && [ "$n" -lt 2 ] && { echo "one GPU only: no multi-GPU timing"; break; }
    rm -rf "results/multi_gpu_$gpus"
    start=$(date +%s.%N)
    timeout 200 python3 -m simcim.experiments.cli sweep experiments/configs/quickstart.toml --gpus "$gpus" \
        --out "results/multi_gpu_$gpus" --set 'params.device="auto"' --set params.eval_tokens=65536 \
        --set 'experiment.seeds=4' --no-progress 2>&1 | grep -v Warning | tee "$dir/sweep_$gpus.log"
    end=$(date +%s.%N)
    python3 - "results/multi_gpu_$gpus" "$gpus" "$start" "$end" >> "$dir/timings.csv" <<'EOF'
import sys
import simcim
df = simcim.load(sys.argv[1])
wall = float(sys.argv[4]) - float(sys.argv[3])
print(f"{sys.argv[2]},{len(df)},{wall:.1f},{df['wall_time_s'].sum():.1f},{df['perplexity'].mean():.4f}")
EOF
done
sed -i '1i gpus,trials,wall_s,sum_trial_s,mean_perplexity' "$dir/timings.csv"
cat "$dir/timings.csv"
python3 - "$dir/timings.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
if len(rows) == 2:
    one, every = (float(r["wall_s"]) for r in rows)
    print(f"speedup of --gpus all over --gpus 1: {one / every:.2f}x ({one:.1f} s -> {every:.1f} s, process start included)")
EOF
