"""Weight-only low-bit matmul for decode: the M = 1 kernel, the dispatcher :func:`quant_matmul` and
:class:`QuantizedLinear`.

Formats, quantizers and the PyTorch reference are in :mod:`simcim.kernels.quant_formats` (re-exported here);
the small-batch kernels in :mod:`simcim.kernels.quant_gemm`; launch defaults in ``launch_defaults.toml``.

The kernel for M = 1 multiplies codes (not dequantized weights) by the input and applies the scale and the
zero once per word and group: ``y_n = sum_g s_ng (sum_{k in g} q_nk x_k - z_ng sum_{k in g} x_k)``. For
large weights it takes the codes two at a time as fp16x2 (shift, LOP3, HSUB2) into one packed FMA per pair,
on an fp16 copy of x scaled per group; below that, one code at a time into fp32 (see :func:`quant_matmul`).
For M = 2..16 rows of fp16/bf16 it dequantizes weight tiles in registers into the tensor cores' left operand
(:mod:`simcim.kernels.quant_gemm`), so each weight byte is read once for all rows.
"""

from __future__ import annotations

from typing import Literal

import torch

from simcim.kernels._common import HAVE_TRITON, interpreting, use_triton
from simcim.kernels.launch import DotConfig, GemvM1Config, SlicesConfig, TensorCoreConfig, as_config, default
from simcim.kernels.quant_formats import (
    QuantConfig,
    QuantizedWeight,
    Scheme,
    dequantize,
    pack_codes,
    pack_codes_paired,
    quant_matmul_reference,
    quantize,
    quantize_groupwise,
    quantize_ternary,
    unpack_codes,
    unpack_codes_paired,
)
from simcim.kernels.quant_gemm import (
    TC_MAX_M,
    dot_config,
    launch_dot,
    launch_slices,
    launch_tc,
    slices_config,
    split_counts,
    tc_config,
)

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from simcim.kernels._unpack import pair_codes, word_dot_f16
    from simcim.kernels.quant_gemm import splitk_sum

__all__ = [
    "QuantConfig",
    "QuantizedWeight",
    "QuantizedLinear",
    "quantize",
    "pack_codes",
    "unpack_codes",
    "pack_codes_paired",
    "unpack_codes_paired",
    "quantize_groupwise",
    "quantize_ternary",
    "dequantize",
    "quant_matmul",
    "quant_matmul_reference",
    "replace_linear",
]

if HAVE_TRITON:

    @triton.jit
    def _code_f32(w, SH: tl.constexpr, FMASK: tl.constexpr):
        """The code that ``w >> SH`` puts under ``FMASK`` (the top mantissa bits) as fp32 ``1 + q / 2^bits``."""
        if SH >= 0:
            u = w >> SH
        else:
            u = w << (-SH)
        return ((u & FMASK) | 0x3F800000).to(tl.float32, bitcast=True)

    @triton.jit
    def _x_f16_pairs_kernel(X, X2, XS, XSUM, GROUP: tl.constexpr, BITS: tl.constexpr):
        # One quantization group of x per program: x / 2^e as fp16 pairs with 2^e >= max |x| (so fp16 products
        # and partial sums of the GEMV stay in range and keep 11 bits relative to the group's largest input),
        # each pair times the gain its unpack expects (simcim.kernels._unpack._dot_asm), the unscale 2^e, and the
        # group's sum in fp32.
        g = tl.program_id(0)
        offs = tl.arange(0, GROUP)
        x = tl.load(X + g * GROUP + offs).to(tl.float32)
        amax = tl.max(tl.abs(x), 0)
        e = tl.minimum((amax.to(tl.int32, bitcast=True) >> 23) & 0xFF, 253)  # amax < 2^(e - 126)
        inv = ((253 - e) << 23).to(tl.float32, bitcast=True)
        xq = x * inv
        if BITS == 4:  # even pairs of a word 64x, odd 4x (after the scaling: inv * 64 may overflow)
            xq = xq * tl.where((offs // 2) % 2 == 0, 64.0, 4.0)
        xh = xq.to(tl.float16).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        lo, hi = tl.split(tl.reshape(xh, [GROUP // 2, 2]))
        tl.store(X2 + g * (GROUP // 2) + tl.arange(0, GROUP // 2), lo | (hi << 16))
        tl.store(XS + g, ((e + 1) << 23).to(tl.float32, bitcast=True))
        tl.store(XSUM + g, tl.sum(x, 0))

    @triton.jit
    def _x_pairs(ptrs, mask, BITS: tl.constexpr):
        """The ``16 / BITS`` fp16x2 input pairs of a word column (``ptrs`` points at its first pair; 0 where masked)."""
        if BITS == 2:
            x2 = (
                tl.load(ptrs, mask=mask, other=0),
                tl.load(ptrs + 1, mask=mask, other=0),
                tl.load(ptrs + 2, mask=mask, other=0),
                tl.load(ptrs + 3, mask=mask, other=0),
                tl.load(ptrs + 4, mask=mask, other=0),
                tl.load(ptrs + 5, mask=mask, other=0),
                tl.load(ptrs + 6, mask=mask, other=0),
                tl.load(ptrs + 7, mask=mask, other=0),
            )
        else:
            x2 = (
                tl.load(ptrs, mask=mask, other=0),
                tl.load(ptrs + 1, mask=mask, other=0),
                tl.load(ptrs + 2, mask=mask, other=0),
                tl.load(ptrs + 3, mask=mask, other=0),
            )
        return x2

    @triton.jit
    def _f16acc_step_loads(
        WP, S, Z, offs_n, s_ptrs, offs_ws, offs_gs, i, i_hi, N, g_hi, stride_wn, stride_wp, stride_sp,
        PLANES: tl.constexpr, GS: tl.constexpr, WPG: tl.constexpr, HAS_ZERO: tl.constexpr,
    ):
        """Words ``[BLOCK_N, GS * WPG]``, scales and zeros ``[BLOCK_N, GS]`` of step ``i`` (plane ``i % PLANES``,
        groups from ``(i // PLANES) * GS``); all masked off once ``i`` reaches ``i_hi``."""
        g0 = (i // PLANES) * GS
        live = offs_n < tl.where(i < i_hi, N, 0)
        w = tl.load(
            WP + offs_n[:, None] * stride_wn + (i % PLANES) * stride_wp + g0 * WPG + offs_ws[None, :],
            mask=live[:, None] & (g0 * WPG + offs_ws < g_hi * WPG)[None, :],
            other=0,
        )
        sz_off = (i % PLANES) * stride_sp + s_ptrs[:, None] + g0 + offs_gs[None, :]
        sz_mask = live[:, None] & (g0 + offs_gs < g_hi)[None, :]
        sc = tl.load(S + sz_off, mask=sz_mask, other=0.0).to(tl.float32)
        if HAS_ZERO:
            z = tl.load(Z + sz_off, mask=sz_mask, other=0.0).to(tl.float32)
        else:
            z = tl.full(sc.shape, 1.0, tl.float32)
        return w, sc, z

    @triton.jit
    def _qgemv1_kernel(
        X,
        WP,
        S,
        Z,
        B,
        Y,
        P,
        CNT,
        N,
        K,
        stride_wp,
        stride_wn,
        stride_sp,
        stride_sn,
        XP,
        XS,
        XSUM,
        BITS: tl.constexpr,
        PLANES: tl.constexpr,
        HAS_ZERO: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        GROUP: tl.constexpr,
        BLOCK_N: tl.constexpr,
        SPLIT_K: tl.constexpr,
        PAIRS: tl.constexpr,
        ASM: tl.constexpr,
        F16ACC: tl.constexpr,
        GS: tl.constexpr,
    ):
        # M = 1, one quantization group per step (GS with F16ACC); every operand has the layout of the word tile
        # [BLOCK_N, WPG] (or a slice of it), so no value crosses threads until the final sum. Words are packed in
        # pair order: code j of a word is weight 2j, code j + PW/2 weight 2j + 1, so pair j multiplies x[2j],
        # x[2j + 1], loaded per word column and shared by the thread's rows. Three ways to unpack:
        # F16ACC: see its branch below (fp16x2 products on x that _x_f16_pairs_kernel prepared).
        # PAIRS: simcim.kernels._unpack turns a pair into two q s values of the scale's 16-bit dtype with one shift,
        #   one LOP3 and one packed FMA ((1 + q / 2^bits) 2^bits s - 2^bits s, rounded once); each is widened
        #   to fp32 and multiplied by x. The zero term z s sum_g x is an FMA per row and word.
        # otherwise: each code lands in the top mantissa bits of fp32 1.0 (one shift, one LOP3: 1 + q / 2^bits
        #   exactly) and is multiplied by x; the scale 2^bits s applies once per word, and the 1 and the zero
        #   come off as (2^bits + z) s sum_g x.
        PER_WORD: tl.constexpr = 32 // BITS
        HALF: tl.constexpr = PER_WORD // 2
        WPG: tl.constexpr = GROUP // PER_WORD
        R: tl.constexpr = 1 << BITS
        POS: tl.constexpr = 23 - BITS  # fp32: top mantissa bits
        FMASK: tl.constexpr = ((1 << BITS) - 1) << POS
        DT: tl.constexpr = tl.float16 if S.dtype.element_ty == tl.float16 else tl.bfloat16
        offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_j = tl.arange(0, WPG)
        n_mask = offs_n < N
        groups_total = K // GROUP
        # split-K: program (n, s) takes a contiguous run of whole groups and writes an fp32 partial sum
        groups_per_split = tl.cdiv(tl.cdiv(groups_total, SPLIT_K), GS) * GS  # whole steps of GS groups
        g_lo = tl.program_id(1) * groups_per_split
        g_hi = tl.minimum(g_lo + groups_per_split, groups_total)
        w_ptrs = WP + offs_n[:, None] * stride_wn + offs_j[None, :]
        s_ptrs = offs_n * stride_sn
        x_ptrs = X + offs_j * PER_WORD
        x2_ptrs = X.to(tl.pointer_type(tl.int32)) + offs_j * HALF  # bf16 x as pairs (x[2i], x[2i + 1])
        acc = tl.zeros([BLOCK_N, WPG], tl.float32)
        z_acc = tl.zeros([BLOCK_N], tl.float32)
        if F16ACC:
            # GS groups of one plane per step; the next step's words, scales and zeros are loaded into registers
            # one step ahead (Triton pipelines them through shared memory only when asked with tl.range's
            # num_stages, which measured 12-25% slower on the H200).
            # Each word's products are accumulated in fp16x2 (simcim.kernels._unpack.word_dot_f16) on x scaled per group
            # by _x_f16_pairs_kernel; the group's scale 2^bits s 2^e applies per word, its zero term
            # (z - 2^bits / 2) s sum_g x once per row.
            WPS: tl.constexpr = GS * WPG
            offs_ws = tl.arange(0, WPS)
            offs_gs = tl.arange(0, GS)
            xps_ptrs = XP + offs_ws * HALF
            acc3 = tl.zeros([BLOCK_N, GS, WPG], tl.float32)
            step_lo = g_lo // GS
            step_hi = tl.cdiv(g_hi, GS)
            i_lo = step_lo * PLANES
            i_hi = step_hi * PLANES
            w, sc, z = _f16acc_step_loads(
                WP, S, Z, offs_n, s_ptrs, offs_ws, offs_gs, i_lo, i_hi, N, g_hi, stride_wn, stride_wp, stride_sp,
                PLANES, GS, WPG, HAS_ZERO,
            )
            for i in tl.range(i_lo, i_hi, loop_unroll_factor=2):
                g0 = (i // PLANES) * GS
                w_n, sc_n, z_n = _f16acc_step_loads(
                    WP, S, Z, offs_n, s_ptrs, offs_ws, offs_gs, i + 1, i_hi, N, g_hi, stride_wn, stride_wp,
                    stride_sp, PLANES, GS, WPG, HAS_ZERO,
                )
                x2 = _x_pairs(xps_ptrs + g0 * (GROUP // 2), g0 * WPG + offs_ws < g_hi * WPG, BITS)
                t = word_dot_f16(w, x2, BITS, ASM)
                g_in = g0 + offs_gs < g_hi
                xs = tl.load(XS + g0 + offs_gs, mask=g_in, other=0.0)
                xsum = tl.load(XSUM + g0 + offs_gs, mask=g_in, other=0.0)
                acc3 += tl.reshape(t, [BLOCK_N, GS, WPG]) * (sc * (R * xs)[None, :])[:, :, None]
                # s (q - z) = 2^bits s (q / 2^bits - 1/2) - s (z - 2^bits / 2)
                z_acc += tl.sum(sc * (z - R / 2) * xsum[None, :], 1)
                w = w_n
                sc = sc_n
                z = z_n
            acc += tl.reshape(tl.sum(acc3, 1), [BLOCK_N, WPG])
        else:
            for g in range(g_lo, g_hi):
                x_sum = tl.zeros([WPG], tl.float32)
                for p in tl.static_range(PLANES):
                    w = tl.load(w_ptrs + p * stride_wp + g * WPG, mask=n_mask[:, None], other=0)
                    sc = tl.load(S + p * stride_sp + s_ptrs + g, mask=n_mask, other=0.0).to(tl.float32)
                    if HAS_ZERO:
                        z = tl.load(Z + p * stride_sp + s_ptrs + g, mask=n_mask, other=0.0).to(tl.float32)
                    else:
                        z = tl.full([BLOCK_N], 1.0, tl.float32)
                    if PAIRS:
                        c = pair_codes(w, sc[:, None] * R, sc[:, None] * -R, BITS, DT, False, ASM)
                    else:
                        t = tl.zeros([BLOCK_N, WPG], tl.float32)
                    for j in tl.static_range(HALF):
                        if X.dtype.element_ty == tl.bfloat16:  # one 4-byte load per pair; bf16 -> fp32 is a shift/mask
                            x2 = tl.load(x2_ptrs + g * (GROUP // 2) + j)
                            x_lo = (x2 << 16).to(tl.float32, bitcast=True)
                            x_hi = (x2 & -65536).to(tl.float32, bitcast=True)
                        else:
                            x_lo = tl.load(x_ptrs + g * GROUP + 2 * j).to(tl.float32)
                            x_hi = tl.load(x_ptrs + g * GROUP + 2 * j + 1).to(tl.float32)
                        if p == 0:
                            x_sum += x_lo + x_hi
                        if PAIRS:
                            q_lo = c[j].to(DT, bitcast=True).to(tl.float32)
                            q_hi = c[j + HALF].to(DT, bitcast=True).to(tl.float32)
                            acc += q_lo * x_lo[None, :] + q_hi * x_hi[None, :]
                        else:
                            t += _code_f32(w, BITS * j - POS, FMASK) * x_lo[None, :]
                            t += _code_f32(w, BITS * (j + HALF) - POS, FMASK) * x_hi[None, :]
                    if PAIRS:
                        acc -= (sc * z)[:, None] * x_sum[None, :]
                    else:
                        acc += (sc * R)[:, None] * t - (sc * (z + R))[:, None] * x_sum[None, :]
        y = tl.sum(acc, 1) - z_acc
        if SPLIT_K > 1:
            last, y = splitk_sum(y, P + offs_n, n_mask, N, CNT + tl.program_id(0), SPLIT_K)
        else:
            last = True
        if last:
            if HAS_BIAS:
                y += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)
            tl.store(Y + offs_n, y.to(Y.dtype.element_ty), mask=n_mask)


GEMV_MAX_M = 8  # the CUDA-core "slices" kernel takes up to this many rows
M1_UNPACK = ("auto", "fp32", "f16acc", "asm", "int")
# "auto" takes f16acc from this many weights up: below, its extra launch (_x_f16_pairs_kernel) costs more than
# the fewer instructions per code save (docs/kernels.md)
F16ACC_MIN_WEIGHTS = 1 << 25
GEMV_KERNELS = ("auto", "m1", "tc", "slices", "dot")
# the f16acc path's default launch per scheme on a GPU without a table of its own (the GPU model reads it)
F16ACC_CONFIG = {s: default(GemvM1Config, f"gemv_m1_f16acc_{s}", table="default") for s in ("int4", "int2", "ternary")}
_split_counts = split_counts


def _m1_unpack(unpack: str, qw: QuantizedWeight) -> str:
    if unpack != "auto":
        return unpack
    return "f16acc" if qw.n * qw.k >= F16ACC_MIN_WEIGHTS else "fp32"


def _kernel(gemv: str, x: torch.Tensor) -> str:
    """The kernel that ``gemv`` names for ``x``: "auto" (and "m1", its old name) take the M = 1 kernel for one row,
    the tensor-core one for 2..16 rows of fp16/bf16, the CUDA-core one for up to 8 fp32 rows, and "dot" above."""
    if gemv not in ("auto", "m1"):
        return gemv
    m = x.shape[0]
    if m == 1:
        return "m1"
    if m <= TC_MAX_M and x.dtype in (torch.float16, torch.bfloat16):
        return "tc"
    return "slices" if m <= GEMV_MAX_M else "dot"


def m1_config(qw: QuantizedWeight, unpack: str, device: torch.device | str | None = None) -> GemvM1Config:
    if unpack == "f16acc":
        return default(GemvM1Config, f"gemv_m1_f16acc_{qw.scheme}", device)
    return default(GemvM1Config, "gemv_m1", device)


def quant_matmul(
    x: torch.Tensor,
    qw: QuantizedWeight,
    bias: torch.Tensor | None = None,
    config: tuple | None = None,
    out: torch.Tensor | None = None,
    gemv: Literal["auto", "m1", "tc", "slices", "dot"] = "auto",
    unpack: Literal["auto", "fp32", "f16acc", "asm", "int"] = "auto",
) -> torch.Tensor:
    """``x [M, K] @ W^T`` with ``W`` the low-bit weight ``qw``; returns ``[M, N]`` in ``x``'s dtype.

    ``gemv`` picks the kernel: ``"auto"`` (or ``"m1"``) the M = 1 kernel for one row, ``"tc"`` for 2..16 rows of
    fp16/bf16, ``"slices"`` for up to 8 fp32 rows and ``"dot"`` above; any of ``"tc"``, ``"slices"`` (M <= 8) and
    ``"dot"`` may be named for any M they take. ``config`` overrides the launch with the kernel's named tuple
    (:mod:`simcim.kernels.launch`: ``GemvM1Config``, ``TensorCoreConfig``, ``SlicesConfig``, ``DotConfig``) or a
    plain tuple in its field order. ``unpack`` is how the M = 1 kernel turns codes into products: ``"fp32"`` one
    code per shift + LOP3 into fp32 and an fp32 FMA; ``"f16acc"`` two codes per shift + LOP3 + HSUB2 and one
    fp16x2 FMA into a per-word accumulator, on x scaled per group to fp16 by a small first launch
    (``simcim.kernels._unpack.word_dot_f16``; rel. error like the fp32 path's, ~2e-3 in bf16); ``"auto"`` takes
    f16acc from ``F16ACC_MIN_WEIGHTS`` weights up and fp32 below; ``"asm"`` two codes per shift + LOP3 +
    packed FMA in inline PTX, widened to fp32 (``simcim.kernels._unpack``); ``"int"`` the same pairs in plain Triton
    (what the interpreter runs for ``"asm"``).
    """
    if x.dim() != 2 or x.shape[1] != qw.k:
        raise ValueError(f"x must be [M, {qw.k}]; got {tuple(x.shape)}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x dtype {x.dtype} is not supported (fp16, bf16, fp32)")
    if bias is not None and bias.shape != (qw.n,):
        raise ValueError(f"bias must be [{qw.n}]; got {tuple(bias.shape)}")
    if unpack not in M1_UNPACK:
        raise ValueError(f"unpack must be one of {', '.join(M1_UNPACK)}; got {unpack!r}")
    if gemv not in GEMV_KERNELS:
        raise ValueError(f"gemv must be one of {', '.join(GEMV_KERNELS)}; got {gemv!r}")
    tensors = [x, qw.packed, qw.scales] + ([qw.zeros] if qw.zeros is not None else [])
    m = x.shape[0]
    if out is not None and (out.shape != (m, qw.n) or out.dtype != x.dtype or out.stride(1) != 1):
        raise ValueError(f"out must be a {x.dtype} tensor of shape ({m}, {qw.n}) with unit column stride")
    if not use_triton("simcim.kernels.quant_gemv", *tensors):
        y = quant_matmul_reference(x, qw, bias)
        return y if out is None else out.copy_(y)
    if x.stride(1) != 1:
        x = x.contiguous()
    y = torch.empty((m, qw.n), device=x.device, dtype=x.dtype) if out is None else out
    kernel = _kernel(gemv, x)
    if kernel == "m1":
        unpack = _m1_unpack(unpack, qw)
        _launch_m1(x, qw, bias, y, as_config(GemvM1Config, config) or m1_config(qw, unpack, x.device), unpack)
    elif kernel == "tc":
        launch_tc(x, qw, bias, y, as_config(TensorCoreConfig, config) or tc_config(qw, x.device))
    elif kernel == "slices":
        if m > GEMV_MAX_M:
            raise ValueError(f"gemv='slices' takes up to {GEMV_MAX_M} rows; got M={m}")
        launch_slices(x, qw, bias, y, as_config(SlicesConfig, config) or slices_config(m, qw, x.device))
    else:
        launch_dot(x, qw, bias, y, as_config(DotConfig, config) or dot_config(qw, x.device))
    return y


def _launch_m1(
    x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None, y: torch.Tensor, cfg: GemvM1Config, unpack: str
) -> None:
    split_k = max(1, min(cfg.split_k, qw.k // qw.group_size))
    blocks = triton.cdiv(qw.n, cfg.block_n)
    if split_k > 1:
        partials = torch.empty((split_k, qw.n), device=x.device, dtype=torch.float32)
        counts = split_counts(x.device, blocks)
    else:  # unread
        partials, counts = y, y
    f16acc = unpack == "f16acc"
    groups = qw.k // qw.group_size
    if f16acc:  # x as fp16 pairs scaled per group, the unscales and the group sums
        xp = torch.empty(qw.k // 2, device=x.device, dtype=torch.int32)
        xs = torch.empty(groups, device=x.device, dtype=torch.float32)
        xsum = torch.empty_like(xs)
        _x_f16_pairs_kernel[(groups,)](x, xp, xs, xsum, GROUP=qw.group_size, BITS=qw.bits)
    else:  # unread by the other paths
        xp, xs, xsum = qw.packed, qw.scales, qw.scales
    _qgemv1_kernel[(blocks, split_k)](
        x,
        qw.packed,
        qw.scales,
        qw.zeros if qw.zeros is not None else qw.scales,
        bias if bias is not None else qw.scales,
        y,
        partials,
        counts,
        qw.n,
        qw.k,
        qw.packed.stride(0),
        qw.packed.stride(1),
        qw.scales.stride(0),
        qw.scales.stride(1),
        xp,
        xs,
        xsum,
        BITS=qw.bits,
        PLANES=qw.planes,
        HAS_ZERO=qw.zeros is not None,
        HAS_BIAS=bias is not None,
        GROUP=qw.group_size,
        BLOCK_N=cfg.block_n,
        SPLIT_K=split_k,
        PAIRS=unpack in ("asm", "int"),
        ASM=unpack in ("asm", "f16acc") and not interpreting(),  # f16acc: the PTX word dot (simcim.kernels._unpack)
        F16ACC=f16acc,
        GS=cfg.groups_per_step if f16acc else 1,
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
    )


class QuantizedLinear(torch.nn.Module):
    """A drop-in ``nn.Linear`` whose weight is packed int4, int2 or ternary trit-planes."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features = qw.k
        self.out_features = qw.n
        self.scheme = qw.scheme
        self.bits = qw.bits
        self.group_size = qw.group_size
        self.register_buffer("packed", qw.packed)
        self.register_buffer("scales", qw.scales)
        self.register_buffer("zeros", qw.zeros)
        self.register_buffer("bias", bias)

    @classmethod
    def from_linear(
        cls,
        linear: torch.nn.Linear,
        scheme: Scheme | QuantConfig = "int4",
        group_size: int = 128,
        planes: int = 2,
    ) -> QuantizedLinear:
        """Quantize ``linear`` with a :class:`QuantConfig` (or a scheme name with ``group_size`` and ``planes``)."""
        config = scheme if isinstance(scheme, QuantConfig) else QuantConfig(scheme, group_size, planes)
        qw = quantize(linear.weight.detach(), config)
        bias = linear.bias.detach().to(qw.scales.dtype) if linear.bias is not None else None
        return cls(qw, bias)

    @property
    def weight(self) -> QuantizedWeight:
        return QuantizedWeight(
            self.packed,
            self.scales,
            self.zeros,
            self.bits,
            self.group_size,
            self.out_features,
            self.in_features,
            self.scheme,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        y = quant_matmul(x.reshape(-1, self.in_features).to(self.scales.dtype), self.weight, self.bias)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}, "
            f"group_size={self.group_size}"
        )


def replace_linear(
    model: torch.nn.Module,
    scheme: Scheme | QuantConfig = "int4",
    group_size: int = 128,
    planes: int = 2,
    skip: tuple[str, ...] = ("lm_head",),
) -> int:
    """Swap every ``nn.Linear`` in ``model`` (names ending in ``skip`` excepted) for a ``QuantizedLinear``.

    ``scheme`` is a :class:`QuantConfig` or a scheme name with ``group_size`` and ``planes``. Layers whose
    in_features are not a multiple of the group size stay as they are. Returns the count.
    """
    config = scheme if isinstance(scheme, QuantConfig) else QuantConfig(scheme, group_size, planes)
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is not torch.nn.Linear or full.endswith(skip):
                continue
            if child.in_features % config.group_size == 0:
                setattr(module, child_name, QuantizedLinear.from_linear(child, config))
                swapped += 1
    return swapped
