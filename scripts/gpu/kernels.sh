#!/usr/bin/env bash
# On one Hopper GPU (H100 or H200): the benches of the issue-22 goals (weight-only GEMV/GEMM at M = 1..16, 2/4-bit KV
# decode) with their baselines in the same run, then the kernel tests compiled for the GPU (interpreter off).
#   run from the repo root: bash scripts/gpu/kernels.sh        (about 7 minutes; OUT defaults to ./out_gpu)
# Writes under $OUT/kernels/: gpu.txt, quant_gemv.csv, kv_decode.csv, bench logs with every candidate launch's time,
# tests_core.log / tests_rest.log (and .xml), summary.txt (the goal table, also printed).
set -o pipefail
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
OUT=${OUT:-$PWD/out_gpu}/kernels
mkdir -p "$OUT"
python3 -c "import simcim" 2>/dev/null || pip install -q -e . --no-deps
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
date -u +%Y-%m-%dT%H:%MZ | tee -a "$OUT/gpu.txt"

# each bench in its own process, so that one running out of time keeps the other's CSV (rows are written per case)
timeout ${GEMV_TIMEOUT:-170} python3 -m simcim.kernels.bench --kernel quant_gemv --csv "$OUT/quant_gemv.csv" \
    > "$OUT/quant_gemv.log" 2> "$OUT/quant_gemv.candidates.log"
echo "quant_gemv bench exit $?"
timeout ${KV_TIMEOUT:-140} python3 -m simcim.kernels.bench --kernel kv_decode --csv "$OUT/kv_decode.csv" \
    > "$OUT/kv_decode.log" 2> "$OUT/kv_decode.candidates.log"
echo "kv_decode bench exit $?"

# kernel tests on CUDA tensors (conftest leaves the interpreter off when a GPU is present): the changed kernels
# first, then the rest
core="tests/kernels/test_quant_gemv.py tests/kernels/test_kv_quant.py tests/kernels/test_bench.py tests/kernels/test_hopper_layouts.py"
timeout ${TEST_TIMEOUT:-110} python3 -m pytest -q -p no:cacheprovider $core --junitxml="$OUT/tests_core.xml" \
    > "$OUT/tests_core.log" 2>&1
echo "kernel tests, changed kernels (exit $?): $(tail -n 1 "$OUT/tests_core.log")"
rest=$(ls tests/kernels/test_*.py | grep -v -e test_quant_gemv -e test_kv_quant -e test_bench -e test_hopper_layouts)
timeout ${REST_TIMEOUT:-60} python3 -m pytest -q -p no:cacheprovider $rest --junitxml="$OUT/tests_rest.xml" \
    > "$OUT/tests_rest.log" 2>&1
echo "kernel tests, the others (exit $?): $(tail -n 1 "$OUT/tests_rest.log")"

python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import csv, sys
from pathlib import Path

out = Path(sys.argv[1])
print(open(out / "gpu.txt").read().strip())
for name in ("quant_gemv", "kv_decode"):
    path = out / f"{name}.csv"
    if not path.exists():
        print(f"{name}: no CSV")
        continue
    rows = [r for r in csv.DictReader(open(path)) if r["kernel"] == name]
    print(f"\n{name}: case | impl | us | x baseline ({'bf16 F.linear' if name == 'quant_gemv' else 'sdpa flash'}) "
          f"| roofline | rel err")
    for r in rows:
        if r["impl"].startswith("triton") or r["impl"] == r["baseline"]:
            print(f"  {r['case'][:52]:52s} | {r['impl'][:30]:30s} | {float(r['ms']) * 1e3:9.1f} | "
                  f"{float(r['ratio_to_baseline']):5.2f} | {float(r['roofline_frac']):4.2f} | {float(r['rel_err']):.1e}")
EOF
ls -la "$OUT"
