"""What every kernel bench shares: the result row, the timer, the roofline measured in the same run.

Each row is one implementation on one case: median time (``triton.testing.do_bench``, or replays
of a CUDA graph for launches shorter than ~50 us), achieved TFLOP/s and GB/s, the fraction of the
roofline measured at the start of the same run (a device-to-device copy for bandwidth, a large
bf16 cuBLAS matmul for arithmetic), the ratio to the case's named baseline (baseline time /
this time: above 1 is faster), and the relative error against the reference, checked in the same
run on the same inputs (:func:`simcim.kernels.testing.rel_err`: an output with a NaN fails).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


@dataclasses.dataclass
class Row:
    kernel: str
    case: str
    impl: str
    ms: float
    tflops: float = float("nan")
    gbps: float = float("nan")
    roofline_frac: float = float("nan")
    baseline: str = ""
    ratio_to_baseline: float = float("nan")
    rel_err: float = float("nan")
    note: str = ""


ANALOG_SIZES = (4096, 8192)  # square M = N = K of the analog bench, unless --analog-size says otherwise


@dataclasses.dataclass
class Env:
    device: torch.device
    tiny: bool
    copy_gbps: float = float("nan")
    mm_tflops: float = float("nan")
    l2_bytes: int = 50 * 2**20
    analog_sizes: tuple[int, ...] = ANALOG_SIZES
    on_rows: Callable[[list[Row]], None] | None = None  # where a bench hands the rows it has so far

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def checkpoint(self, rows: list[Row]) -> None:
        """Hand over a bench's rows so far (after each case), so that a run stopped midway keeps them."""
        if self.on_rows is not None:
            self.on_rows(rows)


def bench(fn: Callable[[], object], env: Env, graph: bool = False) -> float:
    """Median milliseconds of ``fn``."""
    if env.cuda:
        import triton.testing as tt

        if graph:
            return float(tt.do_bench_cudagraph(fn, rep=100, return_mode="median"))
        return float(tt.do_bench(fn, warmup=25, rep=200, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def copies_for(nbytes: int, env: Env) -> int:
    """How many copies of a working set of ``nbytes`` make the rotation overflow L2 twice over."""
    return max(1, math.ceil(2 * env.l2_bytes / max(nbytes, 1))) if env.cuda else 1


def finish(rows: list[Row], baseline_impl: str, case: str) -> None:
    base = [r for r in rows if r.case == case and r.impl == baseline_impl]
    if not base:
        return
    for r in rows:
        if r.case == case:
            r.baseline = baseline_impl
            r.ratio_to_baseline = base[0].ms / r.ms


def sync(env: Env) -> None:
    if env.cuda:
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------ roofline


def bench_roofline(env: Env) -> list[Row]:
    rows = []
    n = (1 << 28) if not env.tiny else (1 << 16)  # 512 MiB of bf16
    a = torch.randn(n, device=env.device, dtype=torch.bfloat16)
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a), env)
    env.copy_gbps = 2 * a.numel() * 2 / ms / 1e6
    rows.append(
        Row("roofline", f"copy {a.numel() * 2 >> 20} MiB", "torch copy_", ms, gbps=env.copy_gbps, roofline_frac=1.0)
    )
    s = 8192 if not env.tiny else 64
    x = torch.randn(s, s, device=env.device, dtype=torch.bfloat16)
    w = torch.randn(s, s, device=env.device, dtype=torch.bfloat16)
    ms = bench(lambda: x @ w, env)
    env.mm_tflops = 2 * s**3 / ms / 1e9
    rows.append(Row("roofline", f"bf16 matmul {s}^3", "torch matmul", ms, tflops=env.mm_tflops, roofline_frac=1.0))
    return rows


def fastest(call: Callable[[object], object], env: Env, configs: list, graph: bool = False, label: str = "config",
            key: Callable[[object], object] = lambda cfg: None, calls: int = 1) -> dict[object, tuple[float, object]]:
    """The fastest ``call(config)`` for each ``key(config)`` over ``configs`` (the first only, off the GPU).

    Returns key -> (ms per call, config); ``calls`` is how many kernel calls one ``call`` makes (the time is
    divided by it). A config the compiler or the shared memory rejects is reported and skipped.
    """
    out: dict[object, tuple[float, object]] = {}
    for cfg in configs if env.cuda else configs[:1]:
        try:
            ms = bench(lambda cfg=cfg: call(cfg), env, graph=graph) / calls
        except Exception as e:  # a launch the compiler or the shared memory rejects
            print(f"  {label} {cfg} failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
            continue
        if len(configs) > 1:
            print(f"  {label} {cfg}: {ms * 1e3:.1f} us", file=sys.stderr)
        k = key(cfg)
        if ms < out.get(k, (float("inf"),))[0]:
            out[k] = (ms, cfg)
    return out


def best(call: Callable[[object], object], env: Env, configs: list, graph: bool = False) -> tuple[float, object]:
    """Fastest of ``call(config)`` over ``configs`` (the first only, off the GPU); (ms, config)."""
    return fastest(call, env, configs, graph).get(None, (float("inf"), None))


def mem_frac(gbps: float, env: Env) -> float:
    return gbps / env.copy_gbps if env.copy_gbps == env.copy_gbps else float("nan")


def flop_frac(tflops: float, env: Env) -> float:
    return tflops / env.mm_tflops if env.mm_tflops == env.mm_tflops else float("nan")


def format_table(rows: list[Row]) -> str:
    head = (
        f"{'kernel':<10} {'case':<44} {'impl':<30} {'ms':>9} {'TFLOP/s':>8} {'GB/s':>8} {'roof':>5} "
        f"{'x base':>7} {'rel err':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.kernel:<10} {r.case[:44]:<44} {r.impl[:30]:<30} {r.ms:9.4f} {r.tflops:8.1f} {r.gbps:8.0f} "
            f"{r.roofline_frac:5.2f} {r.ratio_to_baseline:7.2f} {r.rel_err:8.1e}"
        )
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in dataclasses.fields(Row)])
        writer.writeheader()
        for r in rows:
            writer.writerow(dataclasses.asdict(r))
