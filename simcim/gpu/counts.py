"""What each kernel call of ``kernels/`` must do, as a :class:`~simcim.gpu.model.Work` for the GPU model.

One section per kernel: its counter (a function of the call's shape that mirrors the kernel's launch path at its
default launch configuration) with, right above it, the tables of what its compiled code holds (static SASS
instructions, registers, shared memory, library grids), then the one registry ``COUNTERS`` at the end. Adding a
kernel is adding its section and its line in ``COUNTERS``; ``simcim.validation.blind.SPACE`` says which shapes of it
the blind protocol draws, and ``simcim.validation.measure.build`` how the GPU runs it.
"""

from __future__ import annotations

import dataclasses
import math

from simcim.gpu.model import Work, _cdiv, chain

BF16 = 2


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _positive(name: str, **dims: int) -> None:
    for k, v in dims.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {k} must be an integer >= 1, got {v!r}")


# cuBLAS's kernel for a one-row bf16 F.linear on the H100 (torch 2.11, cuBLAS of CUDA 13): an ``nvjet_sm90_tst``
# kernel of 384 threads (12 warps); its grid, as torch.profiler recorded it for the decode-step shapes
# (tests/data/sim_vs_measured_h100/kernel_grids.json). cuBLAS picks it at run time: other shapes are not derived.
CUBLAS_GEMV_GRIDS = {(128, 128): 16, (8, 128): 1, (256, 128): 32, (2048, 128): 32, (2048, 2048): 32,
                     (64, 2048): 1, (2048, 1024): 32, (50304, 2048): 132}


def linear_bf16(m: int, n: int, k: int) -> Work:
    """``F.linear`` (cuBLAS) of bf16 ``x [m, k]`` by ``W [n, k]``: every weight read once.

    One launch at cuBLAS's own floor (``cublas_min_us``); for a single row at a profiled shape, the
    grid of cuBLAS's kernel (12 warps) from ``CUBLAS_GEMV_GRIDS``, else taken to fill the GPU.
    """
    _positive("linear_bf16", m=m, n=n, k=k)
    return Work("linear_bf16", hbm_bytes=BF16 * (n * k + m * k + m * n), mma_flops=2.0 * m * n * k,
                programs=CUBLAS_GEMV_GRIDS.get((n, k), 0) if m == 1 else 0, warps=12, floor="cublas")


QUANT_SCHEMES = {"int4": (4, 1, True), "int2": (2, 1, True), "ternary": (2, 2, False)}  # bits, planes, zeros


F16ACC_MIN_WEIGHTS = 1 << 25  # simcim.kernels.quant_gemv's threshold for unpack="auto" (a test keeps the two equal)
# simcim.kernels.quant_gemv.F16ACC_CONFIG (a test keeps the two equal): groups a step, BLOCK_N, split-K ways, warps
F16ACC_CONFIG = {"int4": (2, 64, 4, 2), "int2": (2, 32, 8, 1), "ternary": (2, 32, 8, 1)}
# registers per thread of the f16acc GEMV at that config (offline sm_90 compile, triton 3.6, as on the device; int4's
# 168 became 251 with the split-K fixup after the loop, for no fewer instructions: 4 programs an SM instead of 6)
F16ACC_REGS = {"int4": 251, "int2": 128, "ternary": 127}
# static SASS instructions of the fp32-path kernel at (1, 64, split, 2), by scheme and whether it ends with the split-K
# fixup: the launch profile of the H200 run (triton 3.6, tests/data/sim_vs_measured_h200/kernel_grids.json; a test
# keeps the two equal). A one-group program issues about this many once, which is what bounds it.
QGEMV1_INSTR = {("int4", False): 846, ("int2", False): 834, ("ternary", False): 1427,
                ("int4", True): 942, ("int2", True): 937, ("ternary", True): 1487}


def quant_gemv(n: int, k: int, scheme: str, group: int = 128, block_n: int = 64, split_ways: int = 8,
               warps: int = 2, unpack: str = "auto") -> Work:
    """``quant_matmul`` for one row at its default config, on the path ``unpack`` names ("fp32", "f16acc",
    or "auto": as the kernel chooses).

    Below ``F16ACC_MIN_WEIGHTS`` weights, the fp32 path (1, 64, 8, 2, 3): the kernel on a grid of
    ``cdiv(n, block_n) x split`` programs (2 warps; split = min(8, groups)). Triton does not pipeline its loads
    (num_stages 1 and 3 time the same), so every group of a program after its first waits for its loads
    (``iters``); the first group's wait is the launch's first load, not a step.
    With split-K, the same launch finishes the sum: each program writes its fp32 partial row and counts itself
    in with an atomic, and the last of a row block re-reads the partials from L2, sums them and casts into y
    (``splitk_fixup``); without, the kernel writes y. Per code: one unpack
    (shift and LOP3 into the mantissa of 1.0, and the FMA with x that consumes it); per packed word,
    two FMAs apply the scale and the zero point; x's group sums are recomputed by every block of
    ``block_n`` rows, which read x from L2.

    From ``F16ACC_MIN_WEIGHTS`` up, the f16acc path at ``F16ACC_CONFIG`` (``block_n``, ``split_ways`` and
    ``warps`` do not apply): first one program per group turns x into fp16 pairs with a per-group scale and
    sum; then per pair of codes a LOP3, an HSUB2 and one fp16x2 FMA, and for 2-bit codes a shift (int4 shifts
    once a word), per word two widenings, an add and the scale's FMA; the split-K sum as above. Its loads are
    staged in registers one step (two groups of one plane) ahead, not pipelined through shared memory: every
    step waits (``iters``), and the programs an SM holds at once follow from the compiled registers
    (``F16ACC_REGS``).
    """
    if scheme not in QUANT_SCHEMES:
        raise ValueError(f"quant_gemv: scheme must be one of {', '.join(QUANT_SCHEMES)}; got {scheme!r}")
    if unpack not in ("auto", "fp32", "f16acc"):
        raise ValueError(f"quant_gemv: unpack must be auto, fp32 or f16acc; got {unpack!r}")
    _positive("quant_gemv", n=n, k=k, group=group)
    bits, planes, zeros = QUANT_SCHEMES[scheme]
    if k % group:
        raise ValueError(f"quant_gemv: k={k} is not a multiple of the group size {group}")
    per_word = 32 // bits
    groups = k // group
    f16acc = n * k >= F16ACC_MIN_WEIGHTS if unpack == "auto" else unpack == "f16acc"
    step_groups = 1
    if f16acc:
        step_groups, block_n, split_ways, warps = F16ACC_CONFIG[scheme]
    split = max(1, min(split_ways, groups))
    weights = planes * n * k * bits / 8 + planes * n * groups * BF16 * (2 if zeros else 1)
    name = f"gemv_{scheme}"
    blocks = _cdiv(n, block_n)
    # split-K: fp32 partial rows written, re-read from L2 and summed by the last program of each row block
    out = split * n * 4 + n * BF16 if split > 1 else n * BF16
    fixup = dict(l2_bytes=split * n * 4, fma=split * n) if split > 1 else dict(l2_bytes=0, fma=0)
    if f16acc:
        pairs = per_word // 2
        word_ops = pairs * (3 if bits == 4 else 4) + (1 if bits == 4 else 0) + 4
        prep = Work(name, hbm_bytes=k * BF16 + k * 2 + groups * 8, fma=4.0 * k, programs=groups, warps=4)
        main = Work(name, hbm_bytes=weights + k * 2 + groups * 8 + out,
                    l2_bytes=(blocks - 1) * (k * 2 + groups * 8) + fixup["l2_bytes"],
                    fma=float(word_ops * planes * n * (k // per_word) + fixup["fma"]), programs=blocks * split,
                    warps=warps, iters=_cdiv(_cdiv(groups, split), step_groups) * planes, regs=F16ACC_REGS[scheme],
                    splitk_fixup=split > 1)
        return chain(name, prep, main)
    main = Work(name, hbm_bytes=weights + k * BF16 + out, l2_bytes=(blocks - 1) * k * BF16 + fixup["l2_bytes"],
                fma=2 * planes * n * (k // per_word) + blocks * k + fixup["fma"], unpack=planes * n * k,
                programs=blocks * split, warps=warps, splitk_fixup=split > 1,
                iters=_cdiv(groups, split) - 1, instr=QGEMV1_INSTR.get((scheme, split > 1), 0))
    return chain(name, main)


def _gather_rows(name: str, m: int, k: int, ncols: int, nnz: int, *, has_vals: bool, val_bytes: int, idx_bytes: int,
                 b_bytes: int, block_nnz: int, block_n: int, warps: int, l2_mib: float) -> Work:
    """``simcim.kernels.sparse._gather_rows_kernel``: output row ``i`` sums the rows of ``B [k, ncols]``
    its nonzeros name.

    One program per output row and column block, ``warps`` warps. Three dependent loads lead to a row's first
    step: its row pointers, then its column indices, then the rows of B they name; every further step repeats
    the last two (``hops``): Triton does not software-pipeline a loop whose load address is another load's
    value (SASS of an offline sm_90 compile, triton 3.9: the step loads its indices, waits, gathers, waits,
    then sums across the warp), so at few programs an SM the steps' round trips add up; with many, their waits
    overlap and the loads' issue bounds the kernel. Per step
    (``block_nnz`` nonzeros times a column block) every thread loads a column index (and a value), and the
    gathered tile: ``block_nnz x block_n`` elements in 16-byte vectors along the row (Triton vectorizes the
    contiguous dim), at least one load a thread; each element is multiplied by its value or added (fp32). A
    tile smaller than the program still issues every lane (the rest masked). B from HBM once and its gathered
    rows from L2 when B fits in ``l2_mib``; otherwise every gathered row comes from HBM (a 32-byte sector at least).
    """
    threads = 32 * warps
    block_n = min(block_n, _pow2(ncols))
    col_blocks = _cdiv(ncols, block_n)
    row_steps = max(1, _cdiv(nnz, m * block_nnz))
    steps = m * col_blocks * row_steps
    vec = max(1, min(16 // b_bytes, block_n))
    elems = max(threads, block_nnz * block_n)
    loads = steps * (threads * (2 if has_vals else 1) + max(threads, block_nnz * block_n // vec))
    hbm = (m + 1) * 8 + nnz * (idx_bytes + (val_bytes if has_vals else 0)) + m * ncols * b_bytes
    gathered = nnz * col_blocks * max(32, min(block_n, ncols) * b_bytes)
    if k * ncols * b_bytes <= l2_mib * 2**20:
        hbm, l2 = hbm + k * ncols * b_bytes, gathered
    else:
        hbm, l2 = hbm + gathered, 0
    return Work(name, hbm_bytes=hbm, l2_bytes=l2, loads=float(loads), fma=float(steps * elems),
                programs=m * col_blocks, warps=warps, depth=3, hops=2 * (row_steps - 1))


def spmm(m: int, k: int, ncols: int, nnz: int, val_bytes: int = BF16, idx_bytes: int = 8, b_bytes: int = BF16,
         block_nnz: int = 16, block_n: int = 128, warps: int = 4, l2_mib: float = 50.0) -> Work:
    """``simcim.kernels.sparse.spmm`` of a CSR ``[m, k]`` by a dense ``[k, ncols]``.

    At its default config (16, 128, 4, 3)."""
    _positive("spmm", m=m, k=k, ncols=ncols)
    if nnz < 0 or nnz > m * k:
        raise ValueError(f"spmm: nnz must be in [0, {m * k}], got {nnz}")
    return _gather_rows("spmm", m, k, ncols, nnz, has_vals=True, val_bytes=val_bytes, idx_bytes=idx_bytes,
                        b_bytes=b_bytes, block_nnz=block_nnz, block_n=block_n, warps=warps, l2_mib=l2_mib)


def embedding_bag(bags: int, per_bag: int, dim: int, vocab: int, elem_bytes: int = 4, block_nnz: int = 16,
                  block_n: int = 64, warps: int = 2, l2_mib: float = 50.0) -> Work:
    """``simcim.kernels.sparse.embedding_bag`` (sum, int64 indices, ``validate=False``).

    At its default config (16, 64, 2, 3).

    Two launches: PyTorch's ``torch.cat`` that appends the end to the offsets (counted as a minimal kernel),
    then the gather-rows kernel over ``bags`` rows of ``per_bag`` indices into a ``[vocab, dim]`` table.
    """
    _positive("embedding_bag", bags=bags, per_bag=per_bag, dim=dim, vocab=vocab)
    name = "embedding_bag"
    cat = Work(name, hbm_bytes=2.0 * (bags + 1) * 8, programs=1)
    gather = _gather_rows(name, bags, vocab, dim, bags * per_bag, has_vals=False, val_bytes=0, idx_bytes=8,
                          b_bytes=elem_bytes, block_nnz=block_nnz, block_n=block_n, warps=warps, l2_mib=l2_mib)
    return chain(name, cat, gather)


# Instructions per thread of ``_fwht_kernel`` at its launch (min(64, 8192 / d) rows, 4 warps), by (bytes an element,
# d): static SASS, NOPs left out. 16-bit at d = 32 and 128: as triton 3.6 compiled it on the device (the launch profile,
# tests/data/sim_vs_measured_h200/kernel_grids.json; a test keeps them equal); the rest from an offline sm_90 compile
# with triton 3.9's ptxas, which gives about twice as many (2642 at d = 128 against 1290). Straight-line code but at
# d = 1024.
FWHT_INSTR = {(2, 16): 274, (2, 32): 254, (2, 64): 1194, (2, 128): 1290, (2, 256): 2269, (2, 512): 2085,
              (2, 1024): 2129, (4, 16): 249, (4, 32): 530, (4, 64): 1110, (4, 128): 2453, (4, 256): 2059,
              (4, 512): 1877, (4, 1024): 1941}


def fwht(rows: int, d: int, elem_bytes: int = BF16) -> Work:
    """``simcim.kernels.fwht.fwht`` of ``rows`` rows of ``d`` channels: read once, written once, in one launch.

    ``min(64, 8192 / d)`` rows a program, 4 warps (masked rows issue too). Per program the compiled kernel's
    instructions (``FWHT_INSTR``, 16-bit elements as bf16), each a lane-op at the FMA rate; a shape it does not
    hold counts the butterflies' ``log2(d)`` adds and the scale per element instead.
    """
    _positive("fwht", rows=rows, d=d)
    if d & (d - 1):
        raise ValueError(f"fwht: d must be a power of two, got {d}")
    block_r = max(1, min(64, 8192 // d))
    programs = _cdiv(rows, block_r)
    instr = FWHT_INSTR.get((4 if elem_bytes == 4 else 2, d))
    lane_ops = programs * 128.0 * instr if instr else rows * d * (math.log2(d) + 1)
    return Work("fwht", hbm_bytes=2.0 * rows * d * elem_bytes, fma=lane_ops, programs=programs, instr=instr or 0)


def sdpa_decode(b: int, h: int, hkv: int, t: int, d: int) -> Work:
    """bf16 ``F.scaled_dot_product_attention`` for one query token against a ``t``-token cache.

    On the H100 (torch 2.11) PyTorch runs cuDNN's flash kernel split over the keys (4 warps a
    program), then cuDNN's reduction over the splits: 2 launches. Splits as torch.profiler recorded
    the grids (kernel_grids.json): one per 128-key block up to 16 (8 at 1024 tokens, 16 at 4096).
    K and V tiles are prefetched, so no iteration waits. The two launches together cost at least
    ``sdpa_min_us`` (the split kernel's prologue is cuDNN's, longer than a minimal kernel's).
    """
    _positive("sdpa_decode", b=b, h=h, hkv=hkv, t=t, d=d)
    splits = max(1, min(_cdiv(t, 128), 16))
    name = "sdpa_decode_bf16"
    kv = BF16 * 2 * b * hkv * t * d
    partial = b * h * splits * (d + 1) * 4
    main = Work(name, hbm_bytes=kv + BF16 * b * h * d + partial, programs=b * h * splits,
                mma_flops=4.0 * b * h * t * d, fma=4.0 * b * h * t, exp=float(b * h * t), floor="sdpa")
    combine = Work(name, hbm_bytes=partial + BF16 * b * h * d, programs=b * h, warps=8)
    return chain(name, main, combine)


# Registers per thread and shared bytes of ``_kv_split_kernel`` at its default launch (4 warps, 1 stage, k_group 64,
# groups_per_step 2 for 4-bit, 1 for 2-bit), by (bits, head dim). d = 32 and 128: as compiled by triton 3.6 on the
# H100 (kernel_grids.json of the stored run); d = 64: ptxas for sm_90 offline (triton 3.9, which gave 128 instead of
# 3.6's 166 at 2 bits, d = 128). 255 registers at 4 bits and d = 128 leave room for 2 programs an SM, not 16.
KV_SPLIT_RESOURCES = {(4, 128): (255, 24576), (2, 128): (166, 24576), (4, 64): (180, 12288), (2, 64): (107, 12288),
                      (4, 32): (164, 6144), (2, 32): (116, 6144)}


# static SASS instructions of the split kernel by (bits, head dim) and of the combine kernel by head dim, at the
# default launch: the launch profile of the H200 run (triton 3.6; a test keeps them equal to it)
KV_SPLIT_INSTR = {(4, 128): 2836, (2, 128): 1628, (4, 32): 1249, (2, 32): 882}
KV_COMBINE_INSTR = {128: 541, 32: 155}


def kv_decode(b: int, h: int, hkv: int, t: int, d: int, bits: int, k_group: int = 64, v_group: int = 64,
              n_sink: int = 4, rotate: bool = True) -> Work:
    """``simcim.kernels.kv_quant.kv_decode`` over a cache of ``t`` tokens: sinks and the last partial key group in bf16.

    Launch chain: FWHT of q (when rotated; ``8192 / d`` rows a program), the split kernel on
    ``(splits + 1) x b*hkv`` programs (4 warps, ``num_stages=1``: each step's loads are waited for; a
    step is 2 key groups at 4 bits, 1 at 2; registers from ``KV_SPLIT_RESOURCES``), the combine
    kernel on ``b*h`` programs. The ``+ 1`` program of each head walks the full-precision tokens 16 at a
    step, each waited too; the grid's last program is one of them, so it runs after the other waves
    (``tail_iters``). The query heads of a kv head are padded to ``max(16, group)`` rows for the
    tensor-core dots, so scores, exponentials and products are counted for the padded rows.
    """
    _positive("kv_decode", b=b, h=h, hkv=hkv, t=t, d=d)
    if bits not in (2, 4):
        raise ValueError(f"kv_decode: bits must be 2 or 4, got {bits}")
    v_group = min(v_group, d)  # one value group per token at most (as the decode step quantizes it)
    t_q = max(0, t - n_sink) // k_group * k_group
    t_f = t - t_q
    groups_q = t_q // k_group
    gp = max(16, _pow2(h // hkv))
    splits = max(1, min(max(1, 2048 // (b * hkv)), groups_q))
    heads = b * hkv
    cache = heads * (2 * t_q * d * bits / 8 + groups_q * d * BF16 * 2 + t_q * (d // v_group) * BF16 * 2
                     + t_f * d * BF16 * 2)
    partials = heads * (splits + 1) * (h // hkv) * (d + 2) * 4  # only the real query rows are stored (g_mask)
    q = b * h * d * BF16
    scores = heads * gp * t
    name = f"kv_decode_{bits}bit"
    per_step = 2 if bits == 4 else 1
    iters = _cdiv(_cdiv(max(groups_q, 1), splits), per_step)
    tail = _cdiv(t_f, 16)  # kv_quant's KF: 16 full-precision tokens a step
    regs, smem = KV_SPLIT_RESOURCES.get((bits, d), (0, 0))
    split = Work(name, hbm_bytes=cache + partials + q, attn_flops=4.0 * scores * d, unpack=2.0 * heads * t_q * d,
                 fma=4.0 * scores, exp=float(scores), programs=(splits + 1) * heads, iters=iters, tail_iters=tail,
                 regs=regs, smem=smem, instr=KV_SPLIT_INSTR.get((bits, d), 0))
    combine = Work(name, hbm_bytes=partials + q, programs=b * h, instr=KV_COMBINE_INSTR.get(d, 0))
    if not rotate:
        return chain(name, split, combine)
    return chain(name, dataclasses.replace(fwht(b * h, d), kernel=name), split, combine)


def fused_launch_config(d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of ``simcim.kernels.attention._fused_launch_config`` on the GPU."""
    return (128, 128, 8) if d <= 128 else (64, 64, 4)


def fused_attention(b: int, h: int, n: int, d: int, causal: bool = True, hkv: int | None = None,
                    block_m: int | None = None, block_n: int | None = None) -> Work:
    """``simcim.kernels.attention.fused_attention`` (one pass) over ``n`` queries and keys.

    Grid: one program per query block and head (``cdiv(n, block_m) x b*h``), 8 warps at head dims
    up to 128. Causal: a query block visits the key blocks up to and including its diagonal, so
    programs differ (``program_work``: visits per query block, query blocks of a head in launch
    order). Per score: two ``tl.dot`` products of depth ``d`` (at the attention-loop dot rate), one
    exp2, and four fp32 operations (scale and subtract, max, row sum, cast to bf16). K and V are
    re-read from L2 by every query block after the first; their loads are pipelined (2-3 stages),
    so no iteration waits.
    """
    _positive("fused_attention", b=b, h=h, n=n, d=d)
    hkv = hkv or h
    bm, bn, warps = fused_launch_config(d)
    block_m, block_n = block_m or bm, block_n or bn
    nm, nn = _cdiv(n, block_m), _cdiv(n, block_n)
    visits = [min(nn, _cdiv((i + 1) * block_m, block_n)) if causal else nn for i in range(nm)]
    blocks = sum(visits)
    scores = float(b * h * blocks * block_m * block_n)
    hbm = BF16 * (2 * b * h * n * d + 2 * b * hkv * n * d)
    return Work("attention_fused_1pass", hbm_bytes=hbm, l2_bytes=b * h * blocks * block_n * d * BF16 * 2.0,
                attn_flops=4.0 * scores * d, fma=4.0 * scores, exp=scores, programs=nm * b * h,
                warps=warps, program_work=tuple(float(v) for v in visits) * (b * h))


def unfused_attention(b: int, h: int, n: int, d: int, hkv: int | None = None, l2_mib: float = 50.0) -> Work:
    """``simcim.kernels.attention.unfused_attention`` (three launches): masked work is not skipped.

    Scores go to memory in fp32 (4 bytes written), the softmax reads them twice (max, then exp
    and sum: 8) and writes bf16 probabilities (2), P @ V reads them (2): 16 bytes per score. When
    the fp32 score matrix fits in L2 (``l2_mib``), the reads of the second and third launch are
    served from L2 (the writes still go back to HBM). Products are ``tl.dot`` tiles (attention-loop
    dot rate).
    """
    _positive("unfused_attention", b=b, h=h, n=n, d=d)
    hkv = hkv or h
    scores = float(b * h * n * n)
    resident = 4 * scores <= l2_mib * 2**20
    name = "attention_unfused_3pass"
    key = "l2_bytes" if resident else "hbm_bytes"
    nq = _cdiv(n, 128)
    qk = Work(name, hbm_bytes=4.0 * scores + BF16 * (b * h * n * d + b * hkv * n * d), attn_flops=2.0 * scores * d,
              programs=nq * nq * b * h, warps=8)  # 128 x 128 score tiles, 8 warps
    softmax = dataclasses.replace(Work(name, **{key: 8.0 * scores}) + Work(
        name, hbm_bytes=2.0 * scores, fma=4.0 * scores, exp=scores, launches=0), programs=b * h * n)
    pv = dataclasses.replace(Work(name, **{key: 2.0 * scores}) + Work(
        name, hbm_bytes=BF16 * (b * hkv * n * d + b * h * n * d), attn_flops=2.0 * scores * d, launches=0),
        programs=nq * b * h, warps=8)  # 128-query blocks over 64-key steps, 8 warps
    return chain(name, qk, softmax, pv)


COUNTERS = {
    "linear_bf16": linear_bf16,
    "quant_gemv": quant_gemv,
    "spmm": spmm,
    "embedding_bag": embedding_bag,
    "fwht": fwht,
    "sdpa_decode": sdpa_decode,
    "kv_decode": kv_decode,
    "fused_attention": fused_attention,
    "unfused_attention": unfused_attention,
}


def count(kernel: str, **shape: int | str | bool) -> Work:
    """The :class:`Work` of ``kernel`` (a key of ``COUNTERS``) at ``shape``."""
    if kernel not in COUNTERS:
        raise ValueError(f"unknown kernel {kernel!r} (known: {', '.join(COUNTERS)})")
    return COUNTERS[kernel](**shape)
