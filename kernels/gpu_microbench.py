"""Measure a GPU's spec for the performance model (``simcim.gpu.model.GPUSpec``).

``python -m simcim.kernels.gpu_microbench``.

Each rate comes from one small kernel that does nothing but that operation, so the model's
constants are properties of the GPU, not of the kernels it predicts:

- copy bandwidth and bf16 matmul rate: ``simcim.kernels.bench.bench_roofline`` (512 MiB copy, 8192^3);
- ``mem_latency_us``: copies of 1 to 64 MiB (rotated past L2, CUDA-graph replays), a least-squares
  line time = a + bytes / bandwidth; the intercept a less one launch;
- ``l2_gbps``: the same copy on 8 MiB buffers that stay in L2;
- fma / unpack / exp / load: register-only Triton loops (4 independent chains per element, 1024
  elements per program, 8 programs per SM) timed with ``do_bench``;
- ``launch_us``: 200 empty kernels captured in one CUDA graph, per kernel;
- ``kernel_min_us``: 256 one-program kernels in one CUDA graph, each loading a distinct 4 KB (L2) and
  storing 4 KB, per kernel: the least a kernel that touches memory costs;
- ``l2_iter_us`` / ``dram_iter_us``: one program, 4 warps, no pipelining, a loop whose iteration loads
  an 8 KB bf16 tile at an address that depends on the previous tile's sum (1 MB window: L2; 100 MB
  of distinct tiles: HBM), per iteration;
- ``sm_gbps``: a copy kernel with one program per SM (4 warps, 8 KB tiles, 256 MiB), read + write
  bytes per second per program;
- ``attn_tflops``: ``tl.dot`` rate of the fused attention's loop without its softmax (S = Q K^T,
  P = S in bf16, O += P V; 128 x 128 tiles, d = 128, 8 warps, 2 stages; 16 heads x 4096 tokens);
- ``cublas_min_us`` / ``sdpa_min_us``: 256 calls of ``F.linear`` on a 1 x 64 input and a 64 x 64 weight, and of
  bf16 ``F.scaled_dot_product_attention`` for one query over 64 keys (d = 64), each on its own inputs,
  in one CUDA graph, per call: what the libraries' smallest kernels cost;
- ``dram_hop_us`` / ``l2_hop_us``: one thread chasing pointers through a random cycle of 128-byte slots
  over 256 MiB (HBM) and 1 MiB (L2), per hop;
- ``cublas_program_gbps``: cuBLAS's one-row bf16 GEMV at 64 x 8192 and 64 x 32768 (rotated past L2, CUDA graph):
  the slope of time against weight bytes, over the programs its kernel runs (profiled with torch.profiler);
- ``splitk_fixup_us``: 256 launches in one CUDA graph of 16 x 8 two-warp programs that each store a 64-float partial
  row, with and without the split-K fixup of ``simcim.kernels.quant_gemv`` after it (barrier, acq_rel atomic count, the
  last program's reload and sum of the partials, its store, the count's reset), per call: what the fixup adds;
- ``lone_instr_ns``: one program of 2 warps running straight-line code once (16 and 64 unrolled steps of unpack and
  FMA on 4 words a thread, each call on its own words, 256 calls in one CUDA graph), the slope of its time against
  the compiled kernel's SASS instruction count (cuobjdump), median of five after one discarded: what an instruction
  costs a lone program on its one pass;
- ``regs_per_sm`` / ``smem_per_sm_kib``: the device's properties.

``--out FILE`` writes the spec TOML; ``--tiny`` with ``TRITON_INTERPRET=1`` checks the script on CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

from simcim.gpu.model import GPUSpec, write_spec
from simcim.kernels._common import codes_to_float, interpreting
from simcim.kernels.bench import Env, bench, bench_roofline
from simcim.kernels.profile import launched_kernels, sass_opcodes


@triton.jit
def _fma_kernel(X, Y, R, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(X + offs)
    b, c, d = a + 1.0, a + 2.0, a + 3.0
    for _ in range(R):  # 8 FMAs per iteration, 4 independent chains
        a = a * 0.999 + 0.5
        b = b * 0.999 + 0.5
        c = c * 0.999 + 0.5
        d = d * 0.999 + 0.5
        a = a * 1.001 - 0.5
        b = b * 1.001 - 0.5
        c = c * 1.001 - 0.5
        d = d * 1.001 - 0.5
    tl.store(Y + offs, a + b + c + d)


@triton.jit
def _unpack_kernel(W, Y, R, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    w = tl.load(W + offs)
    acc0 = tl.zeros([BLOCK], tl.float32)
    acc1 = tl.zeros([BLOCK], tl.float32)
    for _ in range(R):  # 8 int4 codes per word, each unpacked and consumed by one FMA; 4 chains
        w = w + 0x01010101  # a new word each iteration, so nothing is hoisted out of the loop
        acc0 = acc0 * 0.5 + codes_to_float(w & 15)
        acc1 = acc1 * 0.5 + codes_to_float((w >> 4) & 15)
        acc0 = acc0 * 0.5 + codes_to_float((w >> 8) & 15)
        acc1 = acc1 * 0.5 + codes_to_float((w >> 12) & 15)
        acc0 = acc0 * 0.5 + codes_to_float((w >> 16) & 15)
        acc1 = acc1 * 0.5 + codes_to_float((w >> 20) & 15)
        acc0 = acc0 * 0.5 + codes_to_float((w >> 24) & 15)
        acc1 = acc1 * 0.5 + codes_to_float((w >> 28) & 15)
    tl.store(Y + offs, acc0 + acc1)


@triton.jit
def _exp_kernel(X, Y, R, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(X + offs)
    b, c, d = a + 0.1, a + 0.2, a + 0.3
    for _ in range(R):  # 4 exp2 per iteration, each with the multiply of its argument
        a = tl.exp2(a * -0.5)
        b = tl.exp2(b * -0.5)
        c = tl.exp2(c * -0.5)
        d = tl.exp2(d * -0.5)
    tl.store(Y + offs, a + b + c + d)


@triton.jit
def _load_kernel(T, Y, R, TABLE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    i0 = offs % TABLE
    i1 = (offs * 7 + 3) % TABLE
    acc0 = tl.zeros([BLOCK], tl.float32)
    acc1 = tl.zeros([BLOCK], tl.float32)
    for _ in range(R):  # 2 gathered loads per iteration from an L1-resident table, each index updated
        i0 = (i0 * 5 + 1) & (TABLE - 1)
        i1 = (i1 * 5 + 3) & (TABLE - 1)
        acc0 += tl.load(T + i0)
        acc1 += tl.load(T + i1)
    tl.store(Y + offs, acc0 + acc1)


@triton.jit
def _straight_kernel(W, Y, STEPS: tl.constexpr, BLOCK: tl.constexpr):
    # unrolled, so each step is new code: the program issues every instruction once, as a one-group GEMV does
    offs = tl.arange(0, BLOCK)
    w = tl.load(W + offs)
    a0 = tl.zeros([BLOCK], tl.float32)
    a1 = tl.zeros([BLOCK], tl.float32)
    for j in tl.static_range(STEPS):
        c = codes_to_float(((w ^ ((j * 40503 + 1) & 0xFFFF)) >> (4 * (j % 7))) & 15)
        if j % 2 == 0:
            a0 = a0 * 0.5 + c
        else:
            a1 = a1 * 0.5 + c
    tl.store(Y + offs, a0 + a1)


@triton.jit
def _empty_kernel(Y):
    pass


@triton.jit
def _touch_kernel(X, Y, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs) * 2.0 + 1.0)


@triton.jit
def _splitk_tail_kernel(X, P, CNT, Y, N, SPLIT: tl.constexpr, FIXUP: tl.constexpr, BLOCK: tl.constexpr):
    # the end of a split-K program of simcim.kernels.quant_gemv: store an fp32 partial row; with FIXUP,
    # count in (barrier, acq_rel atomic) and, as the last of the row block, sum the partials (.cg loads),
    # store y, reset the count
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    y = tl.load(X + offs) * 2.0
    tl.store(P + tl.program_id(1) * N + offs, y)
    if FIXUP:
        tl.debug_barrier()
        arrived = tl.atomic_add(CNT + tl.program_id(0), 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT - 1:
            y = tl.zeros([BLOCK], tl.float32)
            for s in tl.static_range(SPLIT):
                y += tl.load(P + s * N + offs, cache_modifier=".cg")
            tl.store(Y + offs, y)
            tl.atomic_xchg(CNT + tl.program_id(0), 0, sem="relaxed", scope="gpu")


@triton.jit
def _wait_kernel(X, Y, R, WRAP, ROWS: tl.constexpr, COLS: tl.constexpr):
    # each iteration's tile address depends on the previous tile's sum (always 0 at run time), so
    # every iteration waits for its load: the loop's per-iteration latency
    offs = tl.arange(0, ROWS)[:, None] * COLS + tl.arange(0, COLS)[None, :]
    acc = 0.0
    dep = 0
    for i in range(R):
        t = tl.load(X + (i % WRAP) * (ROWS * COLS) + dep + offs).to(tl.float32)
        s = tl.sum(tl.sum(t, 1), 0)
        acc += s
        dep = (s > 1e30).to(tl.int32)
    tl.store(Y, acc)


@triton.jit
def _stream_kernel(X, Y, CHUNK, BLOCK: tl.constexpr):
    base = tl.program_id(0).to(tl.int64) * CHUNK
    for off in range(0, CHUNK, BLOCK):
        offs = base + off + tl.arange(0, BLOCK)
        tl.store(Y + offs, tl.load(X + offs))


@triton.jit
def _chase_kernel(P, Y, R):
    i = tl.load(P)
    for _ in range(R):  # each load's address is the last load's value: one round trip per hop
        i = tl.load(P + i)
    tl.store(Y, i)


def _cublas_program_gbps(env: Env, dtype: torch.dtype) -> float:
    """Bytes a second one program of cuBLAS's one-row bf16 GEMV streams from HBM: ``F.linear`` of 1 x k by 64 x k at
    k = 8192 and 32768 (1 and 4 MiB of weight, rotated past L2, in a CUDA graph), the slope of time against bytes
    over the programs of its kernel (profiled; both sizes must launch one kernel of the same grid, else 0)."""
    if not env.cuda:
        return 1.0
    times, grids, sizes = [], [], []
    for k in (512, 1536):
        copies = max(2, -(-2 * env.l2_bytes // (64 * k * 2)))
        xs = torch.randn(copies, 1, k, device=env.device, dtype=dtype)
        ws = torch.randn(copies, 64, k, device=env.device, dtype=dtype)
        call = lambda i, xs=xs, ws=ws: torch.nn.functional.linear(xs[i], ws[i])  # noqa: E731
        times.append(_graph_time_per_call(call, copies, env))
        grids.append([math.prod(k["grid"] or [0]) for k in launched_kernels(lambda call=call: call(0))])
        sizes.append(64 * k * 2)
    if len(grids[0]) != 1 or grids[0] != grids[1] or times[1] <= times[0]:
        print(f"cublas_program_gbps: cuBLAS launched {grids}; not one kernel of one grid, left unmeasured")
        return 0.0
    return (sizes[1] - sizes[0]) / (times[1] - times[0]) / grids[0][0]


def _lone_instr_s(env: Env) -> float:
    """Seconds per SASS instruction of straight-line code one 2-warp program issues once: ``_straight_kernel`` at 16
    and 64 steps, 256 calls on distinct words in one CUDA graph, the median of five slopes after one discarded (a first
    timing in a process ran 50% slow on the H200 while its clock ramped); 0 where the SASS cannot be read."""
    calls = 256 if env.cuda else 2
    words = torch.randint(0, 2**31 - 1, (calls, 256), device=env.device, dtype=torch.int32)
    out = torch.empty(calls, 256, device=env.device, dtype=torch.float32)
    launches, instr = [], []
    for steps in (16, 64):
        handle = _straight_kernel.warmup(words[0], out[0], STEPS=steps, BLOCK=256, num_warps=2, grid=(1,))
        ops = sass_opcodes(handle)
        if not ops:
            return 0.0
        instr.append(sum(ops.values()))
        launches.append(lambda i, s=steps: _straight_kernel[(1,)](words[i], out[i], STEPS=s, BLOCK=256, num_warps=2))
    if instr[1] <= instr[0]:
        return 0.0
    slopes = [(_graph_time_per_call(launches[1], calls, env) - _graph_time_per_call(launches[0], calls, env))
              / (instr[1] - instr[0]) for _ in range(6)][1:]
    return max(0.0, statistics.median(slopes))


def _hop_time(nbytes: int, hops: int, env: Env) -> float:
    """Seconds per dependent load over a random cycle through ``nbytes`` of 128-byte slots."""
    slot = 16  # int64 elements: 128 bytes, so every hop touches a new line
    n = max(2, nbytes // (slot * 8))
    order = torch.randperm(n, device=env.device) * slot
    chase = torch.zeros(n * slot, device=env.device, dtype=torch.int64)
    chase[order] = torch.roll(order, -1)
    out = torch.empty(1, device=env.device, dtype=torch.int64)
    ms = bench(lambda: _chase_kernel[(1,)](chase, out, hops, num_warps=1), env)
    return ms * 1e-3 / (hops + 1)


@triton.jit
def _attn_dot_kernel(Q, K, V, Out, N, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    h = tl.program_id(1).to(tl.int64)
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    q = tl.load(Q + h * N * D + rows[:, None] * D + offs_d[None, :])
    acc = tl.zeros([BM, D], tl.float32)
    for start in range(0, N, BN):
        cols = start + tl.arange(0, BN)
        k = tl.load(K + h * N * D + cols[:, None] * D + offs_d[None, :])
        v = tl.load(V + h * N * D + cols[:, None] * D + offs_d[None, :])
        s = tl.dot(q, tl.trans(k))
        acc += tl.dot(s.to(V.dtype.element_ty), v)
    tl.store(Out + h * N * D + rows[:, None] * D + offs_d[None, :], acc.to(Out.dtype.element_ty))


def _sig(x: float) -> float:
    """Four significant digits: the spec file stays readable, tiny CPU-check rates stay non-zero."""
    return float(f"{x:.4g}")


def _rate(kernel, args: tuple, ops_per_iter: int, env: Env, programs: int, block: int, r: int, **meta) -> float:
    """Operations per second of ``kernel`` over ``programs`` x ``block`` elements and ``r`` iterations."""
    grid = (programs,)
    ms = bench(lambda: kernel[grid](*args, r, BLOCK=block, **meta), env)
    return programs * block * r * ops_per_iter / (ms * 1e-3)


def _graph_time_per_call(fn, calls: int, env: Env) -> float:
    """Seconds per call of ``fn`` when ``calls`` of them are replayed in one CUDA graph."""
    return bench(lambda: [fn(i) for i in range(calls)], env, graph=env.cuda) * 1e-3 / calls


def measure(env: Env) -> GPUSpec:
    bench_roofline(env)
    dev = env.device
    props = torch.cuda.get_device_properties(dev) if env.cuda else None
    sms = props.multi_processor_count if props else 2
    programs = sms * 8 if env.cuda else 2
    block = 1024 if env.cuda else 16
    r = 4096 if env.cuda else 2
    x = torch.rand(programs * block, device=dev, dtype=torch.float32)
    y = torch.empty_like(x)
    fma = _rate(_fma_kernel, (x, y), 8, env, programs, block, r)
    words = torch.randint(0, 2**31 - 1, (programs * block,), device=dev, dtype=torch.int32)
    unpack = _rate(_unpack_kernel, (words, y), 8, env, programs, block, r)
    exp = _rate(_exp_kernel, (x, y), 4, env, programs, block, r)
    table = torch.rand(4096, device=dev, dtype=torch.float32)
    loads = _rate(_load_kernel, (table, y), 2, env, programs, block, r, TABLE=4096)

    launch = _graph_time_per_call(lambda i: _empty_kernel[(1,)](y), 200 if env.cuda else 2, env)

    # the smallest kernel that reads and writes memory: one program, 4 KB in and out, distinct buffers
    calls = 256 if env.cuda else 2
    src = torch.rand(calls, 1024, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    kernel_min = _graph_time_per_call(lambda i: _touch_kernel[(1,)](src[i], dst[i], BLOCK=1024), calls, env)

    # the split-K fixup's tail: 16 row blocks of 64 x 8 splits (2 warps a program, one wave), with and without it
    blocks, split, width = (16, 8, 64) if env.cuda else (2, 2, 16)
    n = blocks * width
    xk = torch.rand(calls, n, device=dev, dtype=torch.float32)
    parts = torch.empty(calls, split, n, device=dev, dtype=torch.float32)
    yk = torch.empty(calls, n, device=dev, dtype=torch.float32)
    counts = torch.zeros(blocks, device=dev, dtype=torch.int32)
    tails = [_graph_time_per_call(lambda i, f=f: _splitk_tail_kernel[(blocks, split)](
        xk[i], parts[i], counts, yk[i], n, SPLIT=split, FIXUP=f, BLOCK=width, num_warps=2), calls, env)
        for f in (False, True)]
    if not torch.allclose(yk[0], 2.0 * split * xk[0]):
        raise RuntimeError("gpu_microbench: the split-K fixup kernel summed its partials wrongly")

    # a loop whose iterations wait for their loads: 8 KB bf16 tiles, from L2 (1 MB window) and from HBM
    rows, cols = (64, 64) if env.cuda else (4, 8)
    tile = rows * cols
    n_dram = 12800 if env.cuda else 4  # 100 MiB of distinct tiles: twice the L2
    n_l2 = 128 if env.cuda else 2
    buf = torch.randn(n_dram * tile + 1, device=dev, dtype=torch.bfloat16)
    out1 = torch.empty(1, device=dev, dtype=torch.float32)

    def per_iter(r: int, wrap: int) -> float:
        ms = bench(lambda: _wait_kernel[(1,)](buf, out1, r, wrap, ROWS=rows, COLS=cols, num_warps=4, num_stages=1),
                   env)
        return ms * 1e-3 / r

    dram_iter = per_iter(n_dram, n_dram)
    l2_iter = per_iter(4096 if env.cuda else 4, n_l2)

    # one program per SM streaming its share of a 256 MiB copy: bytes a program keeps in flight / latency
    block = 4096 if env.cuda else 16
    chunk = ((1 << 27) // sms // block) * block if env.cuda else 2 * block
    xs = torch.randn(sms * chunk, device=dev, dtype=torch.bfloat16)
    ys = torch.empty_like(xs)
    ms = bench(lambda: _stream_kernel[(sms,)](xs, ys, chunk, BLOCK=block, num_warps=4), env)
    sm_bw = 2 * xs.numel() * 2 / (ms * 1e-3) / sms

    # tl.dot rate in the fused attention's loop shape
    heads, n_ctx, d, bm = (16, 4096, 128, 128) if env.cuda else (1, 32, 16, 16)
    dtype = torch.bfloat16 if env.cuda else torch.float32
    q, k, v = (torch.randn(heads, n_ctx, d, device=dev, dtype=dtype) for _ in range(3))
    o = torch.empty_like(q)
    ms = bench(lambda: _attn_dot_kernel[(n_ctx // bm, heads)](q, k, v, o, n_ctx, D=d, BM=bm, BN=bm, num_warps=8,
                                                              num_stages=2 if env.cuda else 1), env)
    attn = 4.0 * heads * n_ctx * n_ctx * d / (ms * 1e-3)

    # copy time against size, from HBM (rotated over enough buffers to overflow L2 twice)
    sizes = [1 << s for s in (range(20, 27) if env.cuda else range(10, 12))]
    times = []
    for nbytes in sizes:
        n = nbytes // 2
        copies = max(1, -(-2 * env.l2_bytes // nbytes)) if env.cuda else 1
        src = [torch.randn(n, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
        dst = [torch.empty_like(s) for s in src]
        times.append(_graph_time_per_call(lambda i, s=src, d=dst: d[i].copy_(s[i]), copies, env))
        moved = torch.tensor([2.0 * s for s in sizes], dtype=torch.float64)
    t = torch.tensor(times, dtype=torch.float64)
    slope, intercept = torch.linalg.lstsq(torch.stack([moved, torch.ones_like(moved)], 1), t[:, None]).solution[:, 0]
    mem_latency = max(0.0, float(intercept) - launch)

    # the libraries' floors: cuBLAS's one-row GEMV and SDPA's decode chain at their smallest
    calls = 256 if env.cuda else 2
    xs1 = torch.randn(calls, 1, 64, device=dev, dtype=dtype)
    ws1 = torch.randn(calls, 64, 64, device=dev, dtype=dtype)
    cublas_min = _graph_time_per_call(lambda i: torch.nn.functional.linear(xs1[i], ws1[i]), calls, env)
    cublas_program = _cublas_program_gbps(env, dtype)
    qs1 = torch.randn(calls, 1, 1, 1, 64, device=dev, dtype=dtype)
    ks1, vs1 = (torch.randn(calls, 1, 1, 64, 64, device=dev, dtype=dtype) for _ in range(2))
    sdpa_min = _graph_time_per_call(
        lambda i: torch.nn.functional.scaled_dot_product_attention(qs1[i], ks1[i], vs1[i]), calls, env)

    dram_hop = _hop_time(256 << 20 if env.cuda else 4096, 20000 if env.cuda else 4, env)
    l2_hop = _hop_time(1 << 20 if env.cuda else 4096, 20000 if env.cuda else 4, env)
    lone_instr = _lone_instr_s(env) if env.cuda else 0.0
    regs_per_sm = int(getattr(props, "regs_per_multiprocessor", 65536)) if props else 65536
    smem_per_sm = (getattr(props, "shared_memory_per_multiprocessor", 233472) if props else 233472) / 1024

    n_l2 = (8 << 20) // 2 if env.cuda else 1024
    a = torch.randn(n_l2, device=dev, dtype=torch.bfloat16)
    b = torch.empty_like(a)
    l2 = 2 * a.numel() * 2 / _graph_time_per_call(lambda i: b.copy_(a), 50 if env.cuda else 2, env)

    name = torch.cuda.get_device_name(dev) if env.cuda else "cpu (interpreter check)"
    when = dt.date.today().isoformat()
    return GPUSpec(
        name=name,
        copy_gbps=_sig(env.copy_gbps),
        mem_latency_us=_sig(mem_latency * 1e6),
        l2_gbps=_sig(l2 / 1e9),
        mma_tflops=_sig(env.mm_tflops),
        fma_tops=_sig(fma / 1e12),
        unpack_tops=_sig(unpack / 1e12),
        exp_tops=_sig(exp / 1e12),
        load_tops=_sig(loads / 1e12),
        launch_us=_sig(launch * 1e6),
        l2_mib=_sig(env.l2_bytes / 2**20),
        sms=int(sms),
        kernel_min_us=_sig(kernel_min * 1e6),
        l2_iter_us=_sig(l2_iter * 1e6),
        dram_iter_us=_sig(dram_iter * 1e6),
        sm_gbps=_sig(sm_bw / 1e9),
        attn_tflops=_sig(attn / 1e12),
        cublas_min_us=_sig(cublas_min * 1e6),
        sdpa_min_us=_sig(sdpa_min * 1e6),
        dram_hop_us=_sig(dram_hop * 1e6),
        l2_hop_us=_sig(l2_hop * 1e6),
        splitk_fixup_us=_sig(max(0.0, tails[1] - tails[0]) * 1e6),
        cublas_program_gbps=_sig(cublas_program / 1e9),
        lone_instr_ns=_sig(lone_instr * 1e9),
        regs_per_sm=regs_per_sm,
        smem_per_sm_kib=_sig(smem_per_sm),
        measured=f"{name}, torch {torch.__version__}, triton {triton.__version__}, {when}; "
        f"python -m simcim.kernels.gpu_microbench; copy line slope {2 / float(slope) / 1e9:.0f} GB/s",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simcim.kernels.gpu_microbench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="write the spec TOML here")
    ap.add_argument("--tiny", action="store_true", help="small sizes, to check the script (TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not (args.tiny and interpreting()):
        print("error: gpu_microbench needs a CUDA GPU (or --tiny with TRITON_INTERPRET=1)", file=sys.stderr)
        return 2
    env = Env(torch.device("cuda" if cuda else "cpu"), tiny=args.tiny)
    if cuda:
        env.l2_bytes = int(torch.cuda.get_device_properties(0).L2_cache_size)
    spec = measure(env)
    for key, value in vars(spec).items():
        print(f"{key:>15} = {value}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_spec(spec, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
