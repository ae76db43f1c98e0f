"""Benchmark every kernel beside its baseline in one run.

``python -m simcim.kernels.bench [--kernel NAME] [--csv PATH]``.

Each row is one implementation on one case: median time (``triton.testing.do_bench``, or replays
of a CUDA graph for launches shorter than ~50 us), achieved TFLOP/s and GB/s, the fraction of the
roofline measured at the start of the same run (a device-to-device copy for bandwidth, a large
bf16 cuBLAS matmul for arithmetic), the ratio to the case's named baseline (baseline time /
this time: above 1 is faster), and the relative error against the reference, checked in the same
run on the same inputs. Weights and caches that would fit in L2 are rotated among several copies,
so the figures are for data coming from device memory.

``--tiny`` runs small sizes with a host timer; with ``TRITON_INTERPRET=1`` on a CPU it checks the
harness itself, not speed.
"""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from simcim.kernels._common import interpreting

KERNELS = ("roofline", "attention", "quant_gemv", "quant_gemv_sizes", "kv_decode", "analog", "sparse", "fwht")


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

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


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


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    if torch.isnan(out).any():
        return float("nan")
    return float((out - ref).norm() / ref.norm().clamp(min=1e-30))


def copies_for(nbytes: int, env: Env) -> int:
    """How many copies of a working set of ``nbytes`` make the rotation overflow L2 twice over."""
    return max(1, math.ceil(2 * env.l2_bytes / max(nbytes, 1))) if env.cuda else 1


def _finish(rows: list[Row], baseline_impl: str, case: str) -> None:
    base = [r for r in rows if r.case == case and r.impl == baseline_impl]
    if not base:
        return
    for r in rows:
        if r.case == case:
            r.baseline = baseline_impl
            r.ratio_to_baseline = base[0].ms / r.ms


def _sync(env: Env) -> None:
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


def _best(call: Callable[[object], object], env: Env, configs: list, graph: bool = False) -> tuple[float, object]:
    """Fastest of ``call(config)`` over ``configs`` (the first only, off the GPU); (ms, config)."""
    best: tuple[float, object] = (float("inf"), None)
    for cfg in configs if env.cuda else configs[:1]:
        try:
            ms = bench(lambda: call(cfg), env, graph=graph)
        except Exception as e:  # a config the compiler or the shared memory rejects
            print(f"  config {cfg} failed: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
            continue
        if len(configs) > 1:
            print(f"  config {cfg}: {ms * 1e3:.1f} us", file=sys.stderr)
        if ms < best[0]:
            best = (ms, cfg)
    return best


def _mem_frac(gbps: float, env: Env) -> float:
    return gbps / env.copy_gbps if env.copy_gbps == env.copy_gbps else float("nan")


def _flop_frac(tflops: float, env: Env) -> float:
    return tflops / env.mm_tflops if env.mm_tflops == env.mm_tflops else float("nan")


# ----------------------------------------------------------------------------- attention


def bench_attention(env: Env) -> list[Row]:
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from simcim.kernels.attention import fused_attention, unfused_attention

    rows: list[Row] = []
    d, h = 128, 16
    seqs = (4096, 8192, 16384) if not env.tiny else (64,)
    for n in seqs:
        b = max(1, 16384 // n) if not env.tiny else 1
        hh = h if not env.tiny else 2
        for causal in (False, True):
            case = f"B{b} H{hh} N{n} D{d} {'causal' if causal else 'full'} bf16"
            q, k, v = (torch.randn(b, hh, n, d, device=env.device, dtype=torch.bfloat16) for _ in range(3))
            flops = 4 * b * hh * n * n * d * (0.5 if causal else 1.0)
            ref = None
            if env.cuda:
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
                    ref = sdpa()
                    ms = bench(sdpa, env)
                rows.append(
                    Row(
                        "attention",
                        case,
                        "sdpa flash",
                        ms,
                        tflops=flops / ms / 1e9,
                        roofline_frac=_flop_frac(flops / ms / 1e9, env),
                    )
                )
            # check against fp32 math on a slice of heads (the full fp32 score matrix would not fit)
            sl = slice(0, 1)
            exact = F.scaled_dot_product_attention(
                q[sl, :2].float(), k[sl, :2].float(), v[sl, :2].float(), is_causal=causal
            )
            candidates = [(128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3), (128, 64, 8, 3)]
            best: tuple[float, tuple | None] = (float("inf"), None)
            if env.cuda:
                for cfg in candidates:
                    try:
                        ms = bench(lambda cfg=cfg: fused_attention(q, k, v, causal, block=cfg), env)
                    except Exception as e:  # a config that does not fit in shared memory
                        print(f"  attention config {cfg} failed: {type(e).__name__}", file=sys.stderr)
                        continue
                    best = min(best, (ms, cfg))
            else:
                best = (bench(lambda: fused_attention(q, k, v, causal), env), None)
            ms, cfg = best
            out = fused_attention(q, k, v, causal, block=cfg)
            err = rel_err(out[sl, :2], exact)
            rows.append(
                Row(
                    "attention",
                    case,
                    "triton fused (1 pass)",
                    ms,
                    tflops=flops / ms / 1e9,
                    roofline_frac=_flop_frac(flops / ms / 1e9, env),
                    rel_err=err,
                    note=f"block={cfg}",
                )
            )
            del out
            ms = bench(lambda: unfused_attention(q, k, v, causal), env)
            out = unfused_attention(q, k, v, causal)
            rows.append(
                Row(
                    "attention",
                    case,
                    "triton unfused (3 pass)",
                    ms,
                    tflops=flops / ms / 1e9,
                    roofline_frac=_flop_frac(flops / ms / 1e9, env),
                    rel_err=rel_err(out[sl, :2], exact),
                    note=f"scores {b * hh * n * n * 4 >> 20} MiB fp32 + probs {b * hh * n * n * 2 >> 20} MiB",
                )
            )
            del out, ref
            _finish(rows, "sdpa flash" if env.cuda else "triton fused (1 pass)", case)
            torch.cuda.empty_cache() if env.cuda else None
    return rows


# ---------------------------------------------------------------------------- quant GEMV


def bench_quant_gemv(env: Env) -> list[Row]:
    import torch.nn.functional as F

    from simcim.kernels.quant_gemv import dequantize, quant_matmul, quantize_groupwise, quantize_ternary

    rows: list[Row] = []
    shapes = ((8192, 8192), (28672, 8192), (8192, 28672)) if not env.tiny else ((96, 128),)
    group = 128 if not env.tiny else 32
    for n, k in shapes:
        for m in (1, 8) if not env.tiny else (1, 3):
            case = f"M{m} N{n} K{k} g{group}"
            w = torch.randn(n, k, device=env.device, dtype=torch.bfloat16) * 0.02
            x = torch.randn(m, k, device=env.device, dtype=torch.bfloat16)
            copies = copies_for(w.numel() * 2, env)
            ws = [w] + [torch.randn_like(w) for _ in range(copies - 1)]
            ms = bench(lambda: [F.linear(x, wi) for wi in ws], env, graph=env.cuda) / copies
            bytes_bf16 = w.numel() * 2 + x.numel() * 2 + m * n * 2
            gbps = bytes_bf16 / ms / 1e6
            rows.append(
                Row(
                    "quant_gemv",
                    case,
                    "bf16 F.linear",
                    ms,
                    tflops=2 * m * n * k / ms / 1e9,
                    gbps=gbps,
                    roofline_frac=_mem_frac(gbps, env),
                )
            )
            for scheme in ("int4", "int2", "ternary"):
                make = {
                    "int4": lambda t: quantize_groupwise(t, 4, group),
                    "int2": lambda t: quantize_groupwise(t, 2, group),
                    "ternary": lambda t: quantize_ternary(t, 2, group),
                }[scheme]
                qw = make(w)
                copies = copies_for(qw.nbytes(), env)
                qws = [qw] + [make(torch.randn_like(w) * 0.02) for _ in range(copies - 1)]
                ref = x.float() @ dequantize(qw).t()
                if m == 1:  # ((groups per step, BLOCK_N, split-K ways, warps, stages) or (BLOCK_M, BLOCK_N,
                    # WORDS or BLOCK_K, warps, stages), kernel). The m=1 kernel: "m1:fp32" one code per shift +
                    # LOP3 into fp32; "m1:f16acc" two per shift + LOP3 + HSUB2 into an fp16x2 FMA (x scaled to
                    # fp16 per group by a first launch); "m1:asm" two per shift + LOP3 + packed FMA, widened
                    candidates = [
                        ((1, 64, 8, 2, 3), "m1:fp32"),
                        ((1, 64, 16, 2, 3), "m1:fp32"),
                        ((1, 128, 16, 4, 3), "m1:fp32"),
                        ((1, 64, 8, 2, 1), "m1:f16acc"),
                        ((2, 64, 4, 2, 1), "m1:f16acc"),
                        ((2, 64, 8, 2, 1), "m1:f16acc"),
                        ((2, 32, 8, 1, 1), "m1:f16acc"),
                        ((2, 128, 8, 4, 1), "m1:f16acc"),
                        ((1, 64, 16, 2, 3), "m1:asm"),
                    ]
                else:
                    candidates = [
                        ((8, 8, 64, 4, 3), "slices"),
                        ((8, 32, 32, 8, 3), "slices"),
                        ((16, 64, 128, 4, 3), "dot"),
                        ((16, 32, 256, 4, 4), "dot"),
                        ((16, 128, 128, 4, 3), "dot"),
                        ((16, 64, 256, 8, 3), "dot"),
                    ]

                def gemv(cand, q):
                    kernel, _, unpack = cand[1].partition(":")
                    return quant_matmul(x, q, config=cand[0], gemv=kernel, unpack=unpack or "auto")

                best: dict[str, tuple[float, tuple]] = {}  # the fastest config of each kernel style
                for cand in candidates if env.cuda else [(None, "m1")]:
                    try:
                        t = bench(lambda c=cand: [gemv(c, q) for q in qws], env, graph=env.cuda) / copies
                    except Exception as e:
                        print(f"  gemv config {cand} failed: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
                        continue
                    print(f"  {case} {scheme} {cand}: {t * 1e3:.1f} us", file=sys.stderr)
                    best[cand[1]] = min(best.get(cand[1], (float("inf"), cand)), (t, cand))
                ranked = sorted(best.values())
                for ms, cfg in ranked[:1] if m > 1 else ranked:
                    err = rel_err(gemv(cfg, qw), ref)
                    nbytes = qw.nbytes() + x.numel() * 2 + m * n * 2
                    gbps = nbytes / ms / 1e6
                    rows.append(
                        Row(
                            "quant_gemv",
                            case,
                            f"triton {scheme}" + (f" {cfg[1]}" if m == 1 else ""),
                            ms,
                            tflops=2 * m * n * k / ms / 1e9,
                            gbps=gbps,
                            roofline_frac=_mem_frac(gbps, env),
                            rel_err=err,
                            note=f"{nbytes / 2**20:.1f} MiB moved; config={cfg}",
                        )
                    )
            _finish(rows, "bf16 F.linear", case)
    return rows


def bench_quant_gemv_sizes(env: Env) -> list[Row]:
    """int4 GEMV (M=1) across weight sizes, the fp32 and f16acc paths at their default configs beside bf16:
    where ``unpack="auto"`` switches (``simcim.kernels.quant_gemv.F16ACC_MIN_WEIGHTS``)."""
    import torch.nn.functional as F

    from simcim.kernels.quant_gemv import dequantize, quant_matmul, quantize_groupwise

    rows: list[Row] = []
    shapes = ((2048, 1024), (2048, 2048), (4096, 4096), (8192, 4096), (8192, 8192)) if not env.tiny else ((64, 128),)
    group = 128 if not env.tiny else 32
    for n, k in shapes:
        case = f"M1 N{n} K{k} g{group} int4"
        w = torch.randn(n, k, device=env.device, dtype=torch.bfloat16) * 0.02
        x = torch.randn(1, k, device=env.device, dtype=torch.bfloat16)
        copies = copies_for(w.numel() * 2, env)
        ws = [w] + [torch.randn_like(w) for _ in range(copies - 1)]
        ms = bench(lambda: [F.linear(x, wi) for wi in ws], env, graph=env.cuda) / copies
        rows.append(Row("quant_gemv", case, "bf16 F.linear", ms, gbps=w.numel() * 2 / ms / 1e6))
        qw = quantize_groupwise(w, 4, group)
        copies = copies_for(qw.nbytes(), env)
        qws = [qw] + [quantize_groupwise(torch.randn_like(w) * 0.02, 4, group) for _ in range(copies - 1)]
        ref = x.float() @ dequantize(qw).t()
        for unpack in ("fp32", "f16acc"):
            ms = bench(lambda u=unpack: [quant_matmul(x, q, unpack=u) for q in qws], env, graph=env.cuda) / copies
            gbps = qw.nbytes() / ms / 1e6
            err = rel_err(quant_matmul(x, qw, unpack=unpack), ref)
            rows.append(
                Row("quant_gemv", case, f"triton int4 m1:{unpack}", ms, gbps=gbps, roofline_frac=_mem_frac(gbps, env),
                    rel_err=err)
            )
        _finish(rows, "bf16 F.linear", case)
    return rows


# ------------------------------------------------------------------------------ KV decode


def bench_kv_decode(env: Env) -> list[Row]:
    import torch.nn.functional as F

    from simcim.kernels.kv_quant import kv_decode, kv_decode_reference, quantize_kv

    rows: list[Row] = []
    b, h, hkv, d = (8, 32, 8, 128) if not env.tiny else (1, 4, 2, 64)
    t = 32768 if not env.tiny else 200
    case = f"B{b} H{h} HKV{hkv} T{t} D{d}"
    k = torch.randn(b, hkv, t, d, device=env.device, dtype=torch.bfloat16)
    v = torch.randn(b, hkv, t, d, device=env.device, dtype=torch.bfloat16)
    q = torch.randn(b, h, d, device=env.device, dtype=torch.bfloat16)
    dense_bytes = 2 * k.numel() * 2
    q4 = q[:, :, None, :]
    sdpa = lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)  # noqa: E731
    ms = bench(sdpa, env, graph=env.cuda)
    rows.append(
        Row(
            "kv_decode",
            case,
            "bf16 sdpa (auto backend)",
            ms,
            gbps=dense_bytes / ms / 1e6,
            roofline_frac=_mem_frac(dense_bytes / ms / 1e6, env),
            note=f"cache {dense_bytes >> 20} MiB",
        )
    )
    if env.cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
            try:
                with sdpa_kernel([backend]):
                    ms = bench(sdpa, env, graph=True)
                rows.append(
                    Row(
                        "kv_decode",
                        case,
                        f"bf16 sdpa {name}",
                        ms,
                        gbps=dense_bytes / ms / 1e6,
                        roofline_frac=_mem_frac(dense_bytes / ms / 1e6, env),
                    )
                )
            except Exception as e:
                print(f"  sdpa {name} backend failed: {type(e).__name__}: {e}", file=sys.stderr)
    for bits in (2, 4):
        for rotate in (True,):
            cache = quantize_kv(
                k,
                v,
                bits,
                k_group=64 if not env.tiny else 16,
                v_group=64 if not env.tiny else 32,
                n_sink=4,
                rotate=rotate,
            )
            ref = kv_decode_reference(q, cache)
            # (splits, unpack, warps, register cap, key groups per step); 128 registers fit 4 programs of
            # 4 warps (or 2 of 8) on an SM
            configs = [
                (32, "asm", 4, None, 1),
                (32, "asm", 4, 128, 1),
                (64, "asm", 4, 128, 1),
                (32, "asm", 4, None, 2),
                (32, "asm", 8, None, 2),
                (32, "asm", 8, 128, 2),
                (64, "asm", 8, 128, 2),
                (32, "int", 4, None, 1),
            ]

            def call(c):
                return kv_decode(
                    q, cache, num_splits=c[0], unpack=c[1], num_warps=c[2], max_registers=c[3], groups_per_step=c[4]
                )

            ms, cfg = _best(call, env, configs if env.cuda else [(None, "asm", 4, None, 1)], graph=env.cuda)
            splits = cfg
            err = rel_err(call(cfg), ref)
            nbytes = cache.nbytes()
            rows.append(
                Row(
                    "kv_decode",
                    case,
                    f"triton {bits}-bit{' +FWHT' if rotate else ''}",
                    ms,
                    gbps=nbytes / ms / 1e6,
                    roofline_frac=_mem_frac(nbytes / ms / 1e6, env),
                    rel_err=err,
                    note=f"cache {nbytes / 2**20:.0f} MiB ({dense_bytes / nbytes:.2f}x smaller); config={splits}",
                )
            )
    _finish(rows, "bf16 sdpa (auto backend)", case)
    return rows


# --------------------------------------------------------------------------- analog matmul


def _aihwkit_lightning_linear(w: torch.Tensor, cfg, env: Env):
    """aihwkit-lightning's Triton analog linear with the closest configuration, or None and why."""
    import os

    os.environ["AIHWKIT_USE_TRITON"] = "1"
    # its kernel reads a module-level float (FLOAT32_TINY), which triton 3.6 refuses unless this is set
    os.environ.setdefault("TRITON_ALLOW_NON_CONSTEXPR_GLOBALS", "1")
    try:
        from aihwkit_lightning.nn import AnalogLinear as AHLinear
        from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig
    except Exception as e:  # not installed, or it does not import here
        return None, f"aihwkit-lightning unavailable: {type(e).__name__}: {e}"
    rpu = TorchInferenceRPUConfig()
    rpu.forward.inp_res = 2 * cfg.dac_levels
    rpu.forward.out_res = 2 * cfg.adc_levels
    rpu.forward.out_bound = 10.0
    rpu.forward.out_noise = 0.02
    rpu.forward.out_noise_per_channel = True
    rpu.mapping.max_input_size = cfg.tile_rows
    rpu.pre_post.input_range.enable = True
    rpu.pre_post.input_range.dynamic = True
    # fp16: with bf16 operands its kernel fails to compile on triton 3.6 ("Both operands must be same
    # dtype. Got fp16 and bf16"); the tensor-core rate of fp16 and bf16 is the same
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=env.device, dtype=torch.float16)
    lin.weight.data.copy_(w)
    try:
        mod = AHLinear.from_digital(lin, rpu).to(env.device)
        mod.train()  # its output noise is applied in training mode only
    except Exception as e:
        return None, f"aihwkit-lightning AnalogLinear failed: {type(e).__name__}: {e}"
    return mod, "fp16; inp_res/out_res 8-bit, out_noise 0.02 per channel, dynamic input range, 512-row tiles"


def bench_analog(env: Env) -> list[Row]:
    from simcim.kernels.analog_matmul import AnalogConfig, analog_matmul, analog_matmul_reference, program_weights

    rows: list[Row] = []
    shapes = tuple((d, d, d) for d in env.analog_sizes) if not env.tiny else ((64, 96, 128),)
    for m, n, k in shapes:
        case = f"M{m} N{n} K{k} tiles512 dac8 adc8"
        x = torch.randn(m, k, device=env.device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=env.device, dtype=torch.bfloat16) * 0.02
        flops = 2 * m * n * k
        ms = bench(lambda: x @ w.t(), env)
        rows.append(
            Row(
                "analog",
                case,
                "bf16 matmul",
                ms,
                tflops=flops / ms / 1e9,
                roofline_frac=_flop_frac(flops / ms / 1e9, env),
            )
        )
        for noisy in (False, True):
            cfg = AnalogConfig(
                tile_rows=512 if not env.tiny else 32,
                dac_bits=8,
                adc_bits=8,
                adc_bound=16.0,
                read_noise=0.02 if noisy else 0.0,
                out_noise=0.01 if noisy else 0.0,
            )
            aw = program_weights(w, cfg)
            candidates = [
                (128, 256, 64, 8, 3, True),
                (128, 256, 64, 8, 3, False),
                (128, 128, 64, 8, 4, True),
                (128, 128, 64, 8, 4, False),
                (128, 128, 64, 4, 4, True),
                (128, 128, 128, 8, 3, True),
            ]
            best: tuple[float, tuple | None] = (float("inf"), None)
            for c in candidates if env.cuda else [None]:
                try:
                    t = bench(lambda c=c: analog_matmul(x, aw, seed=1, config=c), env)
                except Exception as e:
                    print(f"  analog config {c} failed: {type(e).__name__}", file=sys.stderr)
                    continue
                best = min(best, (t, c))
            ms, c = best
            note = f"config={c}"
            err = float("nan")
            if not noisy:
                rs = slice(0, 256)
                err = rel_err(analog_matmul(x[rs], aw, config=c), analog_matmul_reference(x[rs], aw))
            rows.append(
                Row(
                    "analog",
                    case,
                    f"triton analog{' +read noise' if noisy else ' (noise off)'}",
                    ms,
                    tflops=flops / ms / 1e9,
                    roofline_frac=_flop_frac(flops / ms / 1e9, env),
                    rel_err=err,
                    note=note,
                )
            )
        if env.cuda:
            mod, why = _aihwkit_lightning_linear(w, cfg, env)
            if mod is not None:
                try:
                    xh = x.half()
                    with torch.no_grad():
                        ms = bench(lambda: mod(xh), env)
                    rows.append(
                        Row(
                            "analog",
                            case,
                            "aihwkit-lightning TritonLinear",
                            ms,
                            tflops=flops / ms / 1e9,
                            roofline_frac=_flop_frac(flops / ms / 1e9, env),
                            note=why,
                        )
                    )
                except Exception as e:
                    why = f"aihwkit-lightning forward failed: {type(e).__name__}: {' '.join(str(e).split())[-700:]}"
                    mod = None
            if mod is None:
                print(f"  {why}", file=sys.stderr)
                rows.append(Row("analog", case, "aihwkit-lightning TritonLinear", float("nan"), note=why))
        _finish(rows, "bf16 matmul", case)
    return rows


# --------------------------------------------------------------------------------- sparse


def bench_sparse(env: Env) -> list[Row]:
    import torch.nn.functional as F

    from simcim.kernels.sparse import embedding_bag, spmm

    rows: list[Row] = []
    g = torch.Generator().manual_seed(0)
    m = k = 16384 if not env.tiny else 128
    for density in (0.001, 0.01) if not env.tiny else (0.05,):
        for n in (64, 256) if not env.tiny else (32,):
            dtype = torch.float32
            case = f"M{m} K{k} N{n} density{density} fp32"
            nnz = int(m * k * density)
            idx = torch.randint(0, m * k, (nnz,), generator=g).unique()
            rows_, cols = idx // k, idx % k
            a = (
                torch.sparse_coo_tensor(torch.stack([rows_, cols]), torch.randn(idx.numel(), generator=g), (m, k))
                .to_sparse_csr()
                .to(env.device)
                .to(dtype)
            )
            b = torch.randn(k, n, device=env.device, dtype=dtype)
            nnz = a.values().numel()
            gathered = nnz * (4 + 8 + n * 4) + m * n * 4  # col idx + value + B row per nonzero, C once
            ref = torch.sparse.mm(a, b)
            ms = bench(lambda: torch.sparse.mm(a, b), env)
            rows.append(
                Row(
                    "sparse",
                    case,
                    "torch.sparse.mm (CSR)",
                    ms,
                    gbps=gathered / ms / 1e6,
                    roofline_frac=_mem_frac(gathered / ms / 1e6, env),
                    note=f"nnz={nnz}",
                )
            )
            ms, cfg = _best(
                lambda c: spmm(a, b, config=c),
                env,
                [None, (16, min(n, 128), 4, 3), (32, min(n, 128), 4, 3), (8, n, 4, 3), (16, 64, 4, 2)],
            )
            timed = [("triton spmm", ms)]
            if env.cuda:  # the same call replayed in a CUDA graph: the kernel without its host-side launch
                timed.append(("triton spmm (graph)", bench(lambda c=cfg: spmm(a, b, config=c), env, graph=True)))
            err = rel_err(spmm(a, b), ref)
            for impl, ms in timed:
                rows.append(
                    Row(
                        "sparse",
                        case,
                        impl,
                        ms,
                        gbps=gathered / ms / 1e6,
                        roofline_frac=_mem_frac(gathered / ms / 1e6, env),
                        rel_err=err,
                        note=f"config={cfg}",
                    )
                )
            _finish(rows, "torch.sparse.mm (CSR)", case)
    vocab, dim = (1_000_000, 128) if not env.tiny else (1000, 32)
    bags, per_bag = (4096, 64) if not env.tiny else (16, 5)
    for dtype in (torch.float32, torch.bfloat16):
        case = f"embedding_bag V{vocab} D{dim} bags{bags}x{per_bag} {str(dtype)[6:]}"
        table = torch.randn(vocab, dim, device=env.device, dtype=dtype)
        indices = torch.randint(0, vocab, (bags * per_bag,), generator=g).to(env.device)
        offsets = torch.arange(0, bags * per_bag, per_bag, device=env.device)
        es = table.element_size()
        gathered = indices.numel() * (8 + dim * es) + bags * dim * es
        ref = F.embedding_bag(indices, table, offsets, mode="sum")
        ms = bench(lambda: F.embedding_bag(indices, table, offsets, mode="sum"), env)
        rows.append(
            Row(
                "sparse",
                case,
                "F.embedding_bag",
                ms,
                gbps=gathered / ms / 1e6,
                roofline_frac=_mem_frac(gathered / ms / 1e6, env),
            )
        )
        # None: embedding_bag's default, (16, 64, 2, 3); (16, 128, 4, 3): SpMM's, its default before 2026-12-02
        configs = [None, (16, 128, 4, 3), (8, 128, 4, 3), (32, 128, 4, 3), (8, 32, 1, 3), (16, 128, 8, 3)]
        # as called by default (validated: one host sync a call), and the kernel alone in a CUDA graph
        for validate in (True, False):
            ms, cfg = _best(
                lambda c, v=validate: embedding_bag(table, indices, offsets, config=c, validate=v),
                env,
                configs,
                graph=env.cuda and not validate,
            )
            out = embedding_bag(table, indices, offsets, config=cfg, validate=validate)
            rows.append(
                Row(
                    "sparse",
                    case,
                    "triton embedding_bag" + ("" if validate else " (validate=False, graph)"),
                    ms,
                    gbps=gathered / ms / 1e6,
                    roofline_frac=_mem_frac(gathered / ms / 1e6, env),
                    rel_err=rel_err(out, ref),
                    note=f"config={cfg}",
                )
            )
        _finish(rows, "F.embedding_bag", case)
    return rows


# ----------------------------------------------------------------------------------- FWHT


def bench_fwht(env: Env) -> list[Row]:
    from simcim.kernels.fwht import fwht, hadamard_matrix

    rows: list[Row] = []
    d = 128
    n_rows = 8 * 8 * 32768 if not env.tiny else 64
    case = f"rows{n_rows} D{d} bf16 (KV write)"
    x = torch.randn(n_rows, d, device=env.device, dtype=torch.bfloat16)
    hm = (hadamard_matrix(d, device=env.device) / math.sqrt(d)).to(torch.bfloat16)
    nbytes = 2 * x.numel() * 2
    ms = bench(lambda: x @ hm, env)
    rows.append(
        Row(
            "fwht",
            case,
            "bf16 matmul by H/sqrt(D)",
            ms,
            gbps=nbytes / ms / 1e6,
            roofline_frac=_mem_frac(nbytes / ms / 1e6, env),
        )
    )
    ms = bench(lambda: fwht(x), env)
    rows.append(
        Row(
            "fwht",
            case,
            "triton fwht",
            ms,
            gbps=nbytes / ms / 1e6,
            roofline_frac=_mem_frac(nbytes / ms / 1e6, env),
            rel_err=rel_err(fwht(x), x.float() @ hm.float()),
        )
    )
    _finish(rows, "bf16 matmul by H/sqrt(D)", case)
    return rows


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
        try:
            rows += BENCHES[name](env)
        except Exception as e:  # one broken bench must not lose the others' numbers
            print(f"bench {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            rows.append(Row(name, "", "FAILED", float("nan"), note=f"{type(e).__name__}: {str(e)[:300]}"))
        print(f"[{name}: {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
        _sync(env)
        if on_progress is not None:
            on_progress(rows)
    return rows


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in dataclasses.fields(Row)])
        writer.writeheader()
        for r in rows:
            writer.writerow(dataclasses.asdict(r))


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


if __name__ == "__main__":
    sys.exit(main())
