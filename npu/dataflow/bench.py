"""Design points per second of the FuseMax model: one vectorized call vs a Python loop of scalar calls.

    python -m simcim.npu.dataflow.bench [--points 10000] [--repeats 5] [--csv fusemax_bench.csv]

The grid crosses 2D array size, 1D array size, buffer size, DRAM bandwidth and sequence length
(FuseMax design, BERT shapes). The baseline evaluates the same model one point at a time, on a
sample of the points, in the same run. Rates are given in wall time and in this process's CPU time
(on a shared machine the second is the steadier).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simcim.npu.dataflow.arch import MODELS
from simcim.npu.dataflow.designs import DESIGNS
from simcim.npu.dataflow.model import evaluate


def grid(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dim = 2.0 ** rng.integers(4, 10, n)
    return {
        "rows": dim,
        "cols": dim,
        "pes_1d": 2.0 ** rng.integers(4, 10, n),
        "glb_bytes": 2.0 ** rng.integers(18, 28, n),
        "dram_bytes_per_s": 2.0 ** rng.integers(35, 42, n),
        "seq": 2.0 ** rng.integers(10, 21, n),
    }


def run(design: str, n: int, repeats: int, loop_sample: int) -> dict[str, float | str | int]:
    d = DESIGNS[design]
    m = MODELS["BERT"]
    g = grid(n)
    arch = {k: g[k] for k in ("rows", "cols", "pes_1d", "glb_bytes", "dram_bytes_per_s")}
    wl = {"B": m.batch, "H": m.heads, "M": g["seq"], "P": g["seq"], "E": m.e, "F": m.f}
    evaluate(d, wl, arch)  # compile the design once (parse + pass analysis), as a sweep would
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = evaluate(d, wl, arch)
        best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    k = min(loop_sample, n)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(k):
        one = evaluate(d, {**wl, "M": g["seq"][i], "P": g["seq"][i]}, {key: v[i] for key, v in arch.items()})
        assert float(one["latency_s"]) == out["latency_s"][i]
    loop, loop_cpu = (time.perf_counter() - t0) / k, (time.process_time() - c0) / k
    return {
        "design": design,
        "points": n,
        "vectorized_s": best,
        "vectorized_points_per_s": n / best,
        "loop_points_per_s": 1.0 / loop,
        "speedup_vs_loop": (n / best) * loop,
        # CPU time of this process: on a shared machine, less disturbed by other jobs than wall time
        "vectorized_cpu_points_per_s": n / max(best_cpu, 1e-9),
        "loop_cpu_points_per_s": 1.0 / max(loop_cpu, 1e-9),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--loop-sample", type=int, default=200, help="points timed one at a time for the baseline")
    ap.add_argument("--csv", type=Path, default=Path("fusemax_bench.csv"))
    args = ap.parse_args(argv)
    if args.points < 1 or args.repeats < 1 or args.loop_sample < 1:
        raise SystemExit("--points, --repeats and --loop-sample must be >= 1")
    rows = [run(name, args.points, args.repeats, args.loop_sample) for name in DESIGNS]
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:,.4g}"))
    table.to_csv(args.csv, index=False)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
