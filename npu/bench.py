"""Simulation speed: simulated memory accesses per second, per prefetcher, on one core.

    python -m simcim.npu.bench [--accesses 10000000] [--csv results/npu_bench.csv]

One SpMV trace of at least ``--accesses`` lane accesses goes through the full hierarchy
(16 KiB NPU cache, 256 KiB L2, 2 MiB LLC, DRAM) once per prefetcher, after a JIT warm-up
on a small trace, so compile time is not counted. ``ratio`` is each rate over the rate of
the no-prefetch run measured in the same process on the same trace. Rates are given per
wall-clock second and per CPU second of the (single-threaded) process; on a machine shared
with other work the CPU-second rate is the one-core figure.

ChampSim cannot be built here (no network beyond package registries), so its rate is not
measured in the same run; the figures users report for it are quoted in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from simcim.experiments.report import write_csv
from simcim.npu import prefetchers
from simcim.npu.cache import CacheConfig, HierarchyConfig
from simcim.npu.core import CoreConfig, simulate
from simcim.npu.trace import WorkloadSpec, build_trace

TARGET_RATE = 1_000_000


def full_hierarchy() -> HierarchyConfig:
    return HierarchyConfig(levels=(CacheConfig("npu_cache", 16, 4, 2), CacheConfig("l2", 256, 16, 20),
                                   CacheConfig("llc", 2048, 16, 40)))


def bench(accesses: int, seed: int = 0) -> list[dict[str, object]]:
    if accesses < 1000:
        raise ValueError(f"--accesses must be >= 1000, got {accesses}")
    cols, density = 262144, 0.0005
    lanes_per_row = 3 * cols * density + 3  # index + value + gather per non-zero, row pointer, store
    spec = WorkloadSpec(workload="spmv", rows=int(accesses / lanes_per_row) + 1, cols=cols, density=density)
    hier, core = full_hierarchy(), CoreConfig()
    warm = build_trace(WorkloadSpec(workload="spmv", rows=8, cols=4096, density=0.01), seed)
    for name in prefetchers.PREFETCHERS:
        simulate(warm, hier, core, name)
    t0 = time.perf_counter()
    trace = build_trace(spec, seed)
    arrays = trace.arrays()
    build_s = time.perf_counter() - t0
    rows: list[dict[str, object]] = []
    for name in prefetchers.PREFETCHERS:
        m = simulate(trace, hier, core, name, None, 16, arrays)
        rows.append({"prefetcher": name, "accesses": trace.n_accesses, "line_requests": m["line_requests"],
                     "seconds": m["sim_seconds"], "cpu_seconds": m["sim_cpu_seconds"],
                     "accesses_per_s": m["sim_accesses_per_second"],
                     "accesses_per_cpu_s": m["sim_accesses_per_cpu_second"],
                     "cycles": m["cycles"], "trace_build_s": build_s})
    base = rows[0]["accesses_per_cpu_s"]
    for r in rows:
        r["ratio"] = r["accesses_per_cpu_s"] / base
        r["meets_1M_per_s"] = r["accesses_per_cpu_s"] >= TARGET_RATE
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accesses", type=int, default=10_000_000, help="trace length in lane accesses")
    ap.add_argument("--csv", type=Path, default=Path("results/npu_bench.csv"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        rows = bench(args.accesses, args.seed)
    except ValueError as e:
        raise SystemExit(f"simcim.npu.bench: {e}") from None
    print(f"simcim.npu.bench on {platform.processor() or platform.machine()}, one core; "
          f"trace: SpMV, {rows[0]['accesses']:,} accesses (built in {rows[0]['trace_build_s']:.1f} s)")
    print(f"{'prefetcher':<10} {'wall s':>7} {'cpu s':>7} {'accesses/s':>12} {'acc/cpu-s':>12} "
          f"{'lines/cpu-s':>12} {'ratio':>6} {'>=1M/s':>7}")
    for r in rows:
        print(f"{r['prefetcher']:<10} {r['seconds']:>7.2f} {r['cpu_seconds']:>7.2f} {r['accesses_per_s']:>12,.0f} "
              f"{r['accesses_per_cpu_s']:>12,.0f} {r['line_requests'] / r['cpu_seconds']:>12,.0f} "
              f"{r['ratio']:>6.2f} {str(r['meets_1M_per_s']):>7}")
    write_csv(args.csv, rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
