"""Throughput of the full PCM model (programming noise + drift + read noise) on a large weight set.

    python -m simcim.noise_models.bench [--params 1e9] [--device cpu|cuda] [--dtype float32 bfloat16]
                                 [--csv results/noise_bench.csv]

Bytes are counted as the fewest a pass must move: each target read once and each result written
once (2 x params x element size), the same count as the device-to-device copy measured in the same
run as the baseline. "of copy" is the model's bytes/s over the copy's. Peak extra memory is what the
model allocated beyond its input and output (GPU: the caching allocator's peak; CPU: the growth of
the process's peak resident set, so the model runs before the copy's buffers exist).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from simcim.experiments.report import write_csv
from simcim.noise_models.presets import device_model

T_INFERENCE = 86400.0  # one day after programming


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _time(fn, device: torch.device, repeats: int, warm_up: bool, setup=None) -> float:
    """Median seconds of ``fn`` (CUDA events on a GPU), after one untimed call if ``warm_up``;
    ``setup`` runs untimed before every call (to restore inputs that ``fn`` overwrites)."""
    if warm_up:
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_fused_matches_eager(device: torch.device, n: int = 1 << 24) -> float:
    """Largest relative difference of per-bin mean and sigma between the fused and the torch path.

    The fused output starts as NaN, so an element the kernel failed to write fails the check.
    """
    model = device_model("pcm", 1.0)
    g = torch.rand(n, generator=torch.Generator(device).manual_seed(0), device=device) * model.g_max
    g, _ = g.sort()
    a = torch.full_like(g, float("nan"))
    model.apply(g, torch.Generator(device).manual_seed(1), T_INFERENCE, out=a, fused=True)
    if not torch.isfinite(a).all():
        raise SystemExit("fused kernel left elements unwritten or non-finite")
    b = model.apply(g, torch.Generator(device).manual_seed(2), T_INFERENCE, fused=False)
    worst = 0.0
    for da, db, dg in zip((a - g).chunk(16), (b - g).chunk(16), g.chunk(16)):
        scale = float(dg.mean())
        worst = max(worst, abs(float(da.mean() - db.mean())) / scale,
                    abs(float(da.std() / db.std()) - 1.0))
    return worst


def _variants(model, device: torch.device, chunk_elems: int, gen: torch.Generator):
    """(name, fn(target, out)) for each way of applying the model that this device can run."""
    apply = model.apply
    variants = [("torch chunks, in place",
                 lambda g, o: apply(g, gen, T_INFERENCE, out=g, chunk_elems=chunk_elems, fused=False))]
    if device.type == "cuda":
        from simcim.noise_models.fused import run_fused

        comps = list(model.components)

        def fused(block: int, rounds: int, packed: bool = True):
            return lambda g, o: run_fused(comps, g, g, T_INFERENCE, model.g_max, gen, g, block=block,
                                          philox_rounds=rounds, packed=packed)

        variants = [
            ("fused, in place (default)", lambda g, o: apply(g, gen, T_INFERENCE, out=g)),
            ("fused, to a second tensor", lambda g, o: apply(g, gen, T_INFERENCE, out=o)),
            ("fused, block 1024", fused(1024, 10)),
            ("fused, block 4096", fused(4096, 10)),
            ("fused, 7 rounds, block 2048", fused(2048, 7)),
            ("fused, 7 rounds, block 4096", fused(4096, 7)),
            ("fused, 1 Philox call/element", fused(2048, 10, packed=False)),
            ("fused, accurate libdevice math", lambda g, o: run_fused(comps, g, g, T_INFERENCE, model.g_max,
                                                                     gen, g, fast_math=False)),
        ] + variants
    return variants


def _bench_dtype(model, n: int, device: torch.device, dtype: torch.dtype, repeats: int,
                 chunk_elems: int, gen: torch.Generator) -> list[dict]:
    elem = torch.empty((), dtype=dtype).element_size()
    nbytes = 2 * n * elem
    target = torch.empty(n, dtype=dtype, device=device)
    for piece in target.split(1 << 26):  # fill in pieces: a float32 temporary of 1e9 would double memory
        piece.copy_(torch.rand(piece.shape, generator=gen, device=device) * model.g_max)
    # in-place variants overwrite the targets: on the GPU restore them before every timed run, so each
    # run sees fresh conductances rather than ones drifted by earlier runs (the CPU runs once)
    pristine = target.clone() if device.type == "cuda" else None
    setup = (lambda: target.copy_(pristine)) if pristine is not None else None
    results = {}
    second = None
    for name, fn in _variants(model, device, chunk_elems, gen):
        if "second tensor" in name:
            second = torch.empty_like(target)
        if device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            base = _rss_bytes()
        try:
            # on the CPU one call of 1e9 takes minutes and compiles nothing: no warm-up there
            sec = _time(lambda fn=fn, o=second: fn(target, o), device, repeats,
                        warm_up=device.type == "cuda", setup=setup)
        except Exception as e:  # a failing variant is reported, the others still run
            print(f"{name}: failed: {type(e).__name__}: {e}")
            continue
        finally:
            second = None
        if device.type == "cuda":
            extra = torch.cuda.max_memory_allocated() - base
        else:
            extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        if "second tensor" in name:
            extra -= n * elem  # the output itself is not extra
        results[name] = (sec, max(extra, 0))
        if not bool(torch.isfinite(target[:: max(1, n // 4096)]).all()):
            print(f"{name}: produced non-finite conductances")
    pristine = setup = None  # free the copy before the baseline allocates its own
    copy_dst = torch.empty_like(target)
    copy_sec = _time(lambda: copy_dst.copy_(target), device, repeats, warm_up=True)  # faults pages in
    copy_bw = nbytes / copy_sec
    common = dict(device=str(device), dtype=str(dtype).replace("torch.", ""), params=n)
    rows = [dict(common, variant="device-to-device copy", seconds=copy_sec, gbytes_per_s=copy_bw / 1e9,
                 of_copy=1.0, peak_extra_mib=0.0)]
    for name, (sec, extra) in results.items():
        rows.append(dict(common, variant=name, seconds=sec, gbytes_per_s=nbytes / sec / 1e9,
                         of_copy=nbytes / sec / copy_bw, peak_extra_mib=extra / 2 ** 20))
    return rows


def run(n: int, device: torch.device, dtypes: list[torch.dtype], repeats: int,
        chunk_elems: int) -> list[dict]:
    model = device_model("pcm", 1.0)
    gen = torch.Generator(device).manual_seed(0)
    rows = []
    for dtype in dtypes:
        rows += _bench_dtype(model, n, device, dtype, repeats, chunk_elems, gen)
    return rows


def print_instruction_mix() -> None:
    """Per-element SASS instruction counts of the fused kernel variants (the kernel is straight-line code
    per element, so static counts are what each element executes), from Triton's bundled cuobjdump."""
    import collections
    import os
    import re
    import subprocess

    import triton
    from triton.backends.compiler import GPUTarget

    from simcim.noise_models.fused import _pcm_chain_kernel as kernel

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    names = kernel.arg_names
    pointer = {"g_in_ptr": "*fp32", "g_target_ptr": "*fp32", "out_ptr": "*fp32", "flag_ptr": "*i32"}
    signature = {n: pointer.get(n, "i32" if n in ("n", "seed", "seed_dev") else
                     "constexpr" if n.isupper() else "fp32") for n in names}
    print(f"{'variant':44s} {'instr':>6s} {'MUFU':>5s} {'int':>5s} {'fp32':>5s}  registers")
    for packed, rounds, block, fast in ((True, 10, 1024, True), (True, 10, 2048, True), (True, 7, 2048, True),
                                        (True, 7, 4096, True), (False, 10, 1024, True), (True, 10, 1024, False)):
        const = dict(SAME_INPUT=True, HAS_PROG=True, HAS_DRIFT=True, HAS_READ=True, DEVICE_SEED=False,
                     PACKED=packed, ROUNDS=rounds, BLOCK=block, QUARTER=block // 4, FAST=fast)
        src = triton.compiler.ASTSource(fn=kernel, signature=signature,
                                        constexprs={(names.index(k),): v for k, v in const.items()})
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
        path = Path("/tmp") / f"noise_models_fused_{os.getpid()}.cubin"
        path.write_bytes(compiled.asm["cubin"])
        sass = subprocess.run([cuobjdump, "-sass", str(path)], capture_output=True, text=True, check=True).stdout
        regs = re.search(r"REG:(\d+)", subprocess.run([cuobjdump, "-res-usage", str(path)], capture_output=True,
                                                      text=True, check=True).stdout)
        path.unlink()
        ops = collections.Counter(m.group(2).split(".")[0] for m in
                                  re.finditer(r"/\*[0-9a-f]{4,6}\*/\s+(@!?U?P\w+\s+)?([A-Z0-9_.]+)", sass))
        per = 32 * compiled.metadata.num_warps / block  # instructions per thread -> per element
        integer = sum(ops[o] for o in ("IMAD", "IADD3", "LOP3", "SHF", "ISETP", "LEA", "PRMT", "I2F", "SEL"))
        fp32 = sum(ops[o] for o in ("FFMA", "FMUL", "FADD", "FMNMX", "FSETP", "FSEL"))
        name = (f"{'packed' if packed else 'unpacked'}, {rounds} rounds, block {block}, "
                f"{'fast' if fast else 'libdevice'} math")
        print(f"{name:44s} {sum(ops.values()) * per:6.0f} {ops['MUFU'] * per:5.1f} {integer * per:5.0f} "
              f"{fp32 * per:5.0f}  {regs.group(1) if regs else '?'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", type=float, default=1e9, help="number of weights (conductances)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 5 on GPU, 1 on CPU)")
    ap.add_argument("--chunk-elems", type=int, default=1 << 22)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice); on a shared, oversubscribed machine "
                         "1 thread avoids waiting at intra-op barriers for a descheduled sibling")
    ap.add_argument("--csv", type=Path, default=Path("results/noise_bench.csv"))
    ap.add_argument("--sass", action="store_true",
                    help="compile the fused kernel for sm_90 here (no GPU needed) and print its instruction "
                         "mix per element for each variant, then exit")
    args = ap.parse_args(argv)
    if args.sass:
        print_instruction_mix()
        return
    n = int(args.params)
    if n < 1:
        raise SystemExit(f"--params must be >= 1, got {args.params}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available here")
    repeats = args.repeats or (5 if device.type == "cuda" else 1)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        try:
            worst = check_fused_matches_eager(device)
        except Exception as e:  # report it and still time every variant that runs
            print(f"fused vs torch path check failed: {type(e).__name__}: {e}")
            worst = float("inf")
        # 16 bins of 2^20 draws: sampling alone gives differences of a few 1e-3
        verdict = "ok" if worst < 0.01 else "MISMATCH: the fused kernel does not match the torch path"
        print(f"fused vs torch path, worst per-bin relative difference of mean/sigma: {worst:.4f} ({verdict})")
    rows = run(n, device, [getattr(torch, d) for d in args.dtype], repeats, args.chunk_elems)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"\nPCM model (programming + drift + read noise, t = 1 day) on {n:.3g} params, {name}")
    print(f"{'dtype':9s} {'variant':30s} {'seconds':>9s} {'GB/s':>8s} {'of copy':>8s} "
          f"{'peak extra MiB':>15s}")
    for r in rows:
        print(f"{r['dtype']:9s} {r['variant']:30s} {r['seconds']:9.4f} {r['gbytes_per_s']:8.1f} "
              f"{r['of_copy']:8.3f} {r['peak_extra_mib']:15.1f}")
    write_csv(args.csv, rows)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
