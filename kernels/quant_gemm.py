"""Low-bit weight-only matmul for small batches (M = 2..16 and above): three Triton kernels and their launchers.

- ``"tc"`` (M = 2..16, fp16/bf16 activations): ``y^T = W x^T`` on the tensor cores with the codes themselves as
  the dot's left operand, made in registers from the packed words by one shift and one LOP3 (Hopper's tensor
  cores read the left operand from registers; the words reach them through the pipeline's asynchronous
  shared-memory copy, and no dequantized tile goes through shared memory); the scale and zero apply to each
  group's fp32 sum. The few activation rows, padded to 16, are the right operand. Weight words are loaded
  evict-first (each is read once), the loop is software-pipelined over ``num_stages``, and K is split over
  ``split_k`` programs whose partial sums the last program of each row block adds in the same launch
  (deterministic: in split order).
- ``"slices"`` (M <= 8, any float activations): CUDA-core products, the codes of a word unpacked once for all rows.
- ``"dot"`` (any M): ``x @ W^T`` with the dequantized tile as the dot's right operand.

Formats and the reference are in :mod:`simcim.kernels.quant_formats`; :func:`simcim.kernels.quant_gemv.quant_matmul`
picks the kernel.
"""

from __future__ import annotations

import torch

from simcim.kernels._common import HAVE_TRITON, next_pow2
from simcim.kernels.launch import DotConfig, SlicesConfig, TensorCoreConfig, default
from simcim.kernels.quant_formats import QuantizedWeight

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from simcim.kernels._common import codes_to_float, mma

TC_MAX_M = 16  # the tensor-core kernel pads M to this many rows

_SPLIT_COUNTS: dict[torch.device, torch.Tensor] = {}
_RETIRED_COUNTS: list[torch.Tensor] = []  # outgrown buffers stay allocated: a captured CUDA graph may still use one


def split_counts(device: torch.device, blocks: int) -> torch.Tensor:
    """Zeroed int32 arrival counts, one per row block, for the split-K sums inside one launch (each call
    leaves them zero).

    One buffer per device, allocated on first use and kept (a CUDA graph that captured it replays on it), so calls
    that use it must not run concurrently on two streams."""
    counts = _SPLIT_COUNTS.get(device)
    if counts is None or counts.numel() < blocks:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("quant_matmul: run it once outside CUDA-graph capture first (it allocates its "
                               "split-K counters on first use)")
        if device in _SPLIT_COUNTS:
            _RETIRED_COUNTS.append(_SPLIT_COUNTS[device])
        counts = torch.zeros(max(blocks, 1 << 14), device=device, dtype=torch.int32)
        _SPLIT_COUNTS[device] = counts
    return counts


if HAVE_TRITON:

    @triton.jit
    def splitk_sum(part, p_ptrs, p_mask, split_stride, count, SPLIT_K: tl.constexpr):
        """Split-K in one launch: each program stores its fp32 partial (``p_ptrs`` + its split times ``split_stride``)
        and counts itself in at ``count`` (one counter per output block); the last to arrive sums the partials in
        split order (deterministic) and resets the count for the next call. Returns whether this program came last,
        and then the sum. The barrier orders every thread's partial before the count's release; .cg reads skip L1."""
        tl.store(p_ptrs + tl.program_id(1) * split_stride, part, mask=p_mask)
        tl.debug_barrier()
        arrived = tl.atomic_add(count, 1, sem="acq_rel", scope="gpu")
        last = arrived == SPLIT_K - 1
        total = tl.zeros_like(part)
        if last:
            for s in tl.static_range(SPLIT_K):
                total += tl.load(p_ptrs + s * split_stride, mask=p_mask, other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(count, 0, sem="relaxed", scope="gpu")
        return last, total

    @triton.jit
    def _qgemv_kernel(
        X,
        WP,
        S,
        Z,
        B,
        Y,
        M,
        N,
        K,
        stride_xm,
        stride_wp,
        stride_wn,
        stride_sp,
        stride_sn,
        stride_ym,
        BITS: tl.constexpr,
        PLANES: tl.constexpr,
        HAS_ZERO: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        WORDS: tl.constexpr,
    ):
        # Decode path (M <= 8): code i of word j multiplies x[j * PER_WORD + ch(i)] (ch(i) = 2i, or 2i + 1 - PER_WORD
        # for the upper half: pair order), so each code position is a strided slice of x and no register
        # reshapes are needed; the codes of a word are unpacked once and reused for all BLOCK_M rows. Scale
        # and zero apply once per word: sum_i (q_i - z) s x_i.
        PER_WORD: tl.constexpr = 32 // BITS
        MASK: tl.constexpr = (1 << BITS) - 1
        WPG: tl.constexpr = GROUP // PER_WORD
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, BLOCK_M)
        offs_j = tl.arange(0, WORDS)
        n_mask = offs_n < N
        m_mask = offs_m < M
        words_total = K // PER_WORD
        acc = tl.zeros([BLOCK_M, BLOCK_N, WORDS], tl.float32)
        for j0 in range(0, words_total, WORDS):
            wj = j0 + offs_j
            j_mask = wj < words_total
            x_ptrs = X + offs_m[:, None] * stride_xm + wj[None, :] * PER_WORD
            x_mask = m_mask[:, None] & j_mask[None, :]
            w_mask = n_mask[:, None] & j_mask[None, :]
            grp = wj // WPG
            x_sum = tl.zeros([BLOCK_M, WORDS], tl.float32)
            for p in tl.static_range(PLANES):
                w = tl.load(WP + p * stride_wp + offs_n[:, None] * stride_wn + wj[None, :], mask=w_mask, other=0)
                t = tl.zeros([BLOCK_M, BLOCK_N, WORDS], tl.float32)
                for i in tl.static_range(PER_WORD):
                    x_i = tl.load(x_ptrs + (2 * (i % (PER_WORD // 2)) + i // (PER_WORD // 2)), mask=x_mask, other=0.0)
                    x_i = x_i.to(tl.float32)
                    if p == 0:
                        x_sum += x_i
                    c = codes_to_float((w >> (i * BITS)) & MASK)
                    t += c[None, :, :] * x_i[:, None, :]
                sz_ptrs = p * stride_sp + offs_n[:, None] * stride_sn + grp[None, :]
                sc = tl.load(S + sz_ptrs, mask=w_mask, other=0.0).to(tl.float32)
                if HAS_ZERO:
                    z = tl.load(Z + sz_ptrs, mask=w_mask, other=0.0).to(tl.float32)
                else:
                    z = tl.full([BLOCK_N, WORDS], 1.0, tl.float32)
                acc += sc[None, :, :] * (t - z[None, :, :] * x_sum[:, None, :])
        y = tl.sum(acc, 2)
        if HAS_BIAS:
            y += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(
            Y + offs_m[:, None] * stride_ym + offs_n[None, :],
            y.to(Y.dtype.element_ty),
            mask=m_mask[:, None] & n_mask[None, :],
        )


    @triton.jit
    def _qmm_kernel(
        X,
        WP,
        S,
        Z,
        B,
        Y,
        M,
        N,
        K,
        stride_xm,
        stride_wp,
        stride_wn,
        stride_sp,
        stride_sn,
        stride_ym,
        BITS: tl.constexpr,
        PLANES: tl.constexpr,
        HAS_ZERO: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        GROUP: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        # Batched path (M > 8): dequantize a weight tile to the activation dtype, then tensor cores.
        PER_WORD: tl.constexpr = 32 // BITS
        WORDS: tl.constexpr = BLOCK_K // PER_WORD
        NG: tl.constexpr = BLOCK_K // GROUP
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        n_mask = offs_n < N
        ch = tl.arange(0, PER_WORD)
        shifts = (ch // 2 + (ch % 2) * (PER_WORD // 2)) * BITS  # weight ch of a word is code ch/2 or PW/2 + ch/2
        words_total = K // PER_WORD
        groups_total = K // GROUP
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            offs_w = k0 // PER_WORD + tl.arange(0, WORDS)
            offs_g = k0 // GROUP + tl.arange(0, NG)
            w_mask = n_mask[:, None] & (offs_w[None, :] < words_total)
            g_mask = n_mask[:, None] & (offs_g[None, :] < groups_total)
            x = tl.load(
                X + offs_m[:, None] * stride_xm + offs_k[None, :],
                mask=(offs_m[:, None] < M) & (offs_k[None, :] < K),
                other=0.0,
            )
            for p in tl.static_range(PLANES):
                words = tl.load(
                    WP + p * stride_wp + offs_n[:, None] * stride_wn + offs_w[None, :], mask=w_mask, other=0
                )
                codes = codes_to_float((words[:, :, None] >> shifts[None, None, :]) & ((1 << BITS) - 1))
                codes = tl.reshape(codes, [BLOCK_N, NG, GROUP])
                sz_ptrs = p * stride_sp + offs_n[:, None] * stride_sn + offs_g[None, :]
                sc = tl.load(S + sz_ptrs, mask=g_mask, other=0.0).to(tl.float32)
                if HAS_ZERO:
                    z = tl.load(Z + sz_ptrs, mask=g_mask, other=0.0).to(tl.float32)
                else:
                    z = tl.full([BLOCK_N, NG], 1.0, tl.float32)
                w = tl.reshape((codes - z[:, :, None]) * sc[:, :, None], [BLOCK_N, BLOCK_K])
                acc += mma(x, tl.trans(w.to(x.dtype)))
        if HAS_BIAS:
            acc += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(
            Y + offs_m[:, None] * stride_ym + offs_n[None, :],
            acc.to(Y.dtype.element_ty),
            mask=(offs_m[:, None] < M) & (offs_n[None, :] < N),
        )



    @triton.jit
    def _qmm_tc_kernel(
        X,
        WP,
        S,
        Z,
        B,
        Y,
        P,
        CNT,
        M,
        N,
        K,
        stride_xm,
        stride_wp,
        stride_wn,
        stride_sp,
        stride_sn,
        stride_ym,
        BITS: tl.constexpr,
        PLANES: tl.constexpr,
        HAS_ZERO: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        GROUP: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        SPLIT_K: tl.constexpr,
        MP: tl.constexpr,
    ):
        # y^T [N, M] = W [N, K] x^T [K, M], the codes themselves on the tensor cores, the scale and zero applied to
        # each group's fp32 sum: y_nm = sum_g s_ng (sum_{k in g} q_nk x_mk - z_ng sum_{k in g} x_mk).
        # Per group and code position j, one shift and one LOP3 put code j of every word of the group's
        # [BLOCK_N, WPG] tile in the mantissa of the 16-bit float C (bf16 128 or fp16 1024: C + q exactly). That
        # chain has constant operands only, so Triton copies the words into shared memory asynchronously (the
        # software pipeline), loads them from there straight into the left-operand registers of the dot and makes
        # the codes there: no dequantized tile goes through shared memory. Code j of word w multiplies input
        # w PW + ch(j) (the pair order of simcim.kernels.quant_formats), gathered as the right operand
        # x_j^T [KW, MP]. The C offset comes off with the zero, (z + C) sum_g x. A dot is at least 16 deep: groups
        # of fewer words are padded with zero inputs.
        PW: tl.constexpr = 32 // BITS
        WPG: tl.constexpr = GROUP // PW
        KW: tl.constexpr = 16 if WPG < 16 else WPG
        GPS: tl.constexpr = BLOCK_K // GROUP  # groups a step
        MASK: tl.constexpr = (1 << BITS) - 1
        DT: tl.constexpr = X.dtype.element_ty
        MAGIC: tl.constexpr = 0x4300 if DT == tl.bfloat16 else 0x6400
        C: tl.constexpr = 128.0 if DT == tl.bfloat16 else 1024.0
        pid_n = tl.program_id(0)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_m = tl.arange(0, MP)
        offs_w = tl.arange(0, KW)
        n_mask = offs_n < N
        m_mask = offs_m < M
        w_in = offs_w < WPG
        groups = K // GROUP
        steps = tl.cdiv(groups, GPS)
        per_split = tl.cdiv(steps, SPLIT_K)
        g_lo = tl.program_id(1) * per_split * GPS
        g_hi = tl.minimum(g_lo + per_split * GPS, groups)
        w_rows = WP + offs_n[:, None] * stride_wn + offs_w[None, :]
        x_rows = X + offs_m[:, None] * stride_xm + offs_w[None, :] * PW
        s_rows = offs_n * stride_sn
        acc = tl.zeros([BLOCK_N, MP], tl.float32)
        for g0 in range(g_lo, g_hi, GPS):
            for gi in tl.static_range(GPS):
                g = g0 + gi
                n_live = offs_n < tl.where(g < g_hi, N, 0)  # all off past the split's last group
                m_live = offs_m < tl.where(g < g_hi, M, 0)
                x_sum = tl.zeros([MP], tl.float32)
                for p in tl.static_range(PLANES):
                    w = tl.load(w_rows + p * stride_wp + g * WPG, mask=n_live[:, None] & w_in[None, :], other=0,
                                eviction_policy="evict_first")
                    part = tl.zeros([BLOCK_N, MP], tl.float32)
                    for j in tl.static_range(PW):
                        ch = 2 * (j % (PW // 2)) + j // (PW // 2)
                        xj = tl.load(x_rows + g * GROUP + ch, mask=m_live[:, None] & w_in[None, :], other=0.0)
                        if p == 0:
                            x_sum += tl.sum(xj.to(tl.float32), 1)
                        c = (((w >> (j * BITS)) & MASK) | MAGIC).to(tl.int16).to(DT, bitcast=True)
                        part += mma(c, tl.trans(xj))
                    sc = tl.load(S + p * stride_sp + s_rows + g, mask=n_live, other=0.0).to(tl.float32)
                    if HAS_ZERO:
                        z = tl.load(Z + p * stride_sp + s_rows + g, mask=n_live, other=0.0).to(tl.float32)
                    else:
                        z = tl.full([BLOCK_N], 1.0, tl.float32)
                    acc += sc[:, None] * (part - (z + C)[:, None] * x_sum[None, :])
        if SPLIT_K > 1:
            p_ptrs = P + offs_n[:, None] * MP + offs_m[None, :]
            last, acc = splitk_sum(acc, p_ptrs, n_mask[:, None], N * MP, CNT + pid_n, SPLIT_K)
        else:
            last = True
        if last:
            if HAS_BIAS:
                acc += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)[:, None]
            y_ptrs = Y + offs_m[None, :] * stride_ym + offs_n[:, None]
            tl.store(y_ptrs, acc.to(Y.dtype.element_ty), mask=n_mask[:, None] & m_mask[None, :])


def _operands(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None, y: torch.Tensor) -> tuple:
    """The pointer and stride arguments that the slices and dot kernels share."""
    return (
        x,
        qw.packed,
        qw.scales,
        qw.zeros if qw.zeros is not None else qw.scales,
        bias if bias is not None else qw.scales,
        y,
        x.shape[0],
        qw.n,
        qw.k,
        x.stride(0),
        qw.packed.stride(0),
        qw.packed.stride(1),
        qw.scales.stride(0),
        qw.scales.stride(1),
        y.stride(0),
    )


def _format_meta(qw: QuantizedWeight, bias: torch.Tensor | None) -> dict:
    return dict(BITS=qw.bits, PLANES=qw.planes, HAS_ZERO=qw.zeros is not None, HAS_BIAS=bias is not None,
                GROUP=qw.group_size)


def slices_config(m: int, qw: QuantizedWeight, device: torch.device) -> SlicesConfig:
    cfg = default(SlicesConfig, "gemv_slices_m2" if m <= 2 else "gemv_slices", device)
    return cfg._replace(block_m=next_pow2(m), words=max(cfg.words, qw.group_size * qw.bits // 32))


def dot_config(qw: QuantizedWeight, device: torch.device) -> DotConfig:
    cfg = default(DotConfig, "gemm_dot", device)
    return cfg._replace(block_k=max(cfg.block_k, qw.group_size))


def tc_config(qw: QuantizedWeight, device: torch.device) -> TensorCoreConfig:
    """The default launch, with ``split_k`` resolved (about ``programs`` programs, whole K steps each)."""
    cfg = default(TensorCoreConfig, "gemm_tc", device)
    return _resolve_tc(cfg._replace(block_k=max(cfg.block_k, qw.group_size)), qw)


def _resolve_tc(cfg: TensorCoreConfig, qw: QuantizedWeight) -> TensorCoreConfig:
    steps = triton.cdiv(qw.k, cfg.block_k)
    split = cfg.split_k or round(cfg.programs / triton.cdiv(qw.n, cfg.block_n))
    return cfg._replace(split_k=max(1, min(split, steps)))


def launch_slices(x: torch.Tensor, qw: QuantizedWeight, bias, y: torch.Tensor, cfg: SlicesConfig) -> None:
    if cfg.block_m < x.shape[0]:
        raise ValueError(f"config {tuple(cfg)}: block_m={cfg.block_m} is smaller than M={x.shape[0]}")
    _qgemv_kernel[(triton.cdiv(qw.n, cfg.block_n),)](
        *_operands(x, qw, bias, y), **_format_meta(qw, bias), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        WORDS=cfg.words, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def launch_dot(x: torch.Tensor, qw: QuantizedWeight, bias, y: torch.Tensor, cfg: DotConfig) -> None:
    grid = (triton.cdiv(qw.n, cfg.block_n), triton.cdiv(x.shape[0], cfg.block_m))
    _qmm_kernel[grid](
        *_operands(x, qw, bias, y), **_format_meta(qw, bias), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
        BLOCK_K=cfg.block_k, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def launch_tc(x: torch.Tensor, qw: QuantizedWeight, bias, y: torch.Tensor, cfg: TensorCoreConfig) -> None:
    m = x.shape[0]
    if m > TC_MAX_M or x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"gemv='tc' takes M <= {TC_MAX_M} rows of fp16 or bf16; got M={m} of {x.dtype}")
    if cfg.block_k < qw.group_size or cfg.block_k & (cfg.block_k - 1):
        raise ValueError(f"config {tuple(cfg)}: block_k must be a power of two >= the group size {qw.group_size}")
    cfg = _resolve_tc(cfg, qw)
    blocks = triton.cdiv(qw.n, cfg.block_n)
    if cfg.split_k > 1:
        partials = torch.empty((cfg.split_k, qw.n, TC_MAX_M), device=x.device, dtype=torch.float32)
        counts = split_counts(x.device, blocks)
    else:  # unread
        partials, counts = y, y
    _qmm_tc_kernel[(blocks, cfg.split_k)](
        x, qw.packed, qw.scales, qw.zeros if qw.zeros is not None else qw.scales,
        bias if bias is not None else qw.scales, y, partials, counts, m, qw.n, qw.k,
        x.stride(0), qw.packed.stride(0), qw.packed.stride(1), qw.scales.stride(0), qw.scales.stride(1), y.stride(0),
        **_format_meta(qw, bias), BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, SPLIT_K=cfg.split_k, MP=TC_MAX_M,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
