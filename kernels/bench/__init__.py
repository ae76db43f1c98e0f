"""Benchmark every kernel beside its baseline in one run.

``python -m simcim.kernels.bench [--kernel NAME] [--csv PATH]``.

One module per kernel's bench (``attention``, ``quant_gemv``, ``kv_decode``, ``analog``, ``sparse``, ``fwht``), each
a function of the shared :class:`Env` returning :class:`Row` s (:mod:`.harness`). Weights and caches that would fit
in L2 are rotated among several copies, so the figures are for data coming from device memory.

``--tiny`` runs small sizes with a host timer; with ``TRITON_INTERPRET=1`` on a CPU it checks the harness itself,
not speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from simcim.kernels._common import interpreting
from simcim.kernels.bench.analog import bench_analog
from simcim.kernels.bench.attention import bench_attention
from simcim.kernels.bench.fwht import bench_fwht
from simcim.kernels.bench.harness import (
    ANALOG_SIZES,
    Env,
    Row,
    bench,
    bench_roofline,
    copies_for,
    format_table,
    sync,
    write_csv,
)
from simcim.kernels.bench.kv_decode import bench_kv_decode
from simcim.kernels.bench.quant_gemv import bench_quant_gemv, bench_quant_gemv_sizes
from simcim.kernels.bench.sparse import bench_sparse

__all__ = ["BENCHES", "KERNELS", "Env", "Row", "bench", "bench_roofline", "copies_for", "run", "write_csv", "main"]

BENCHES: dict[str, Callable[[Env], list[Row]]] = {
    "roofline": bench_roofline,
    "attention": bench_attention,
    "quant_gemv": bench_quant_gemv,
    "quant_gemv_sizes": bench_quant_gemv_sizes,
    "kv_decode": bench_kv_decode,
    "analog": bench_analog,
    "sparse": bench_sparse,
    "fwht": bench_fwht,
}
KERNELS = tuple(BENCHES)


def run(
    kernels: list[str],
    tiny: bool = False,
    device: str | None = None,
    on_progress: Callable[[list[Row]], None] | None = None,
    analog_sizes: tuple[int, ...] = ANALOG_SIZES,
) -> list[Row]:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type != "cuda" and not (tiny and interpreting()):
        raise ValueError("kernels.bench needs a CUDA GPU (or --tiny with TRITON_INTERPRET=1 to check the harness)")
    if any(d < 16 for d in analog_sizes):
        raise ValueError(f"analog sizes must be >= 16; got {list(analog_sizes)}")
    env = Env(dev, tiny, analog_sizes=tuple(analog_sizes))
    if env.cuda:
        env.l2_bytes = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", env.l2_bytes))
    rows: list[Row] = []
    order = ["roofline"] + [k for k in kernels if k != "roofline"]
    for name in order:
        t0 = time.time()
        if on_progress is not None:
            env.on_rows = lambda part, done=list(rows): on_progress(done + part)
        try:
            rows += BENCHES[name](env)
        except Exception as e:  # one broken bench must not lose the others' numbers
            print(f"bench {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            rows.append(Row(name, "", "FAILED", float("nan"), note=f"{type(e).__name__}: {str(e)[:300]}"))
        print(f"[{name}: {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
        sync(env)
        if on_progress is not None:
            on_progress(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simcim.kernels.bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--kernel", action="append", choices=KERNELS + ("all",), help="which benchmark (repeatable; default all)"
    )
    parser.add_argument("--csv", type=Path, default=Path("results/kernels_bench.csv"), help="CSV to write")
    parser.add_argument("--tiny", action="store_true", help="small sizes, to check the harness")
    parser.add_argument("--analog-size", type=int, action="append", metavar="D",
                        help="M = N = K of the analog bench (repeatable; default 4096 and 8192)")
    args = parser.parse_args(argv)
    kernels = [k for k in KERNELS if k != "roofline"] if not args.kernel or "all" in args.kernel else args.kernel
    try:
        rows = run(kernels, args.tiny, on_progress=lambda done: write_csv(done, args.csv),
                   analog_sizes=tuple(args.analog_size or ANALOG_SIZES))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(format_table(rows))
    write_csv(rows, args.csv)
    print(f"wrote {args.csv}")
    return 0
