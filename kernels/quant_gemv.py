"""Weight-only low-bit matmul for decode (GEMV, M=1) and small batches: int4, int2 and ternary trit-planes.

Formats (a weight is ``[N, K]``, out x in, as in ``nn.Linear``):

- **int4 / int2**, asymmetric, group-wise along K: group ``g`` of row ``n`` stores a scale ``s`` and a
  zero point ``z`` (both in the activation dtype; ``z`` in quantized units, so it may be fractional
  after rounding to that dtype). A code ``q`` in ``[0, 2^bits)`` means ``(q - z) * s``.
- **ternary trit-planes** (PTQTP's 2 x 1.58-bit form): ``W ~ sum_p alpha_p * T_p`` with each
  ``T_p`` in ``{-1, 0, 1}`` and one ``alpha_p`` per row and group; a trit ``t`` is stored as the
  2-bit code ``t + 1``. Planes are found greedily on the residual (TWN threshold ``0.7 mean|r|``).

Packing: codes of ``bits`` bits, ``PW = 32 / bits`` per int32 word (:func:`pack_codes` puts code ``j``
at bit ``j * bits``), each word holding ``PW`` consecutive weights along K in the order the kernels
unpack them two at a time (:mod:`simcim.kernels._unpack`): weight ``2i`` of a word is code ``i`` and weight
``2i + 1`` is code ``i + PW/2`` (:func:`pack_codes_paired`). Packed weights are ``[P, N, K*bits/32]``
int32 (``P`` planes; 1 for int4/int2), scales and zeros ``[P, N, K/G]``.

The kernel for M=1 multiplies codes (not dequantized weights) by the input and applies the scale and the
zero once per word and group: ``y_n = sum_g s_ng (sum_{k in g} q_nk x_k - z_ng sum_{k in g} x_k)``. For
large weights it takes the codes two at a time as fp16x2 (shift, LOP3, HSUB2) into one packed FMA per pair,
on an fp16 copy of x scaled per group; below that, one code at a time into fp32 (see :func:`quant_matmul`).
For M>1 it dequantizes a weight tile to the activation dtype and uses the tensor cores, so each weight byte
is read once for up to BLOCK_M rows.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from simcim.kernels._common import HAVE_TRITON, interpreting, next_pow2, use_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from simcim.kernels._common import codes_to_float, mma
    from simcim.kernels._unpack import pair_codes, word_dot_f16

__all__ = [
    "QuantizedWeight",
    "QuantizedLinear",
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

Scheme = Literal["int4", "int2", "ternary"]


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``[..., K]`` integer codes in ``[0, 2^bits)`` -> ``[..., K*bits/32]`` int32 words."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8; got {bits}")
    per_word = 32 // bits
    if codes.shape[-1] % per_word:
        raise ValueError(f"last dim {codes.shape[-1]} must be a multiple of {per_word} for {bits}-bit packing")
    c = codes.to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= (1 << bits)):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit packing")
    c = c.reshape(*codes.shape[:-1], codes.shape[-1] // per_word, per_word)
    shifts = torch.arange(per_word, device=codes.device, dtype=torch.int64) * bits
    words = (c << shifts).sum(-1)
    # two's complement view of the unsigned 32-bit word
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_codes(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: ``[..., W]`` int32 -> ``[..., W*32/bits]`` uint8 codes."""
    per_word = 32 // bits
    shifts = torch.arange(per_word, device=words.device, dtype=torch.int64) * bits
    codes = (words.to(torch.int64)[..., None] >> shifts) & ((1 << bits) - 1)
    return codes.reshape(*words.shape[:-1], words.shape[-1] * per_word).to(torch.uint8)


def pair_positions(d: int, bits: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Code index (within the row) that holds channel ``c``: :mod:`simcim.kernels._unpack` unpacks the codes of a
    word as ``[c0, c_{PW/2}, c1, c_{PW/2+1}, ...]``, so channel ``c`` is stored there."""
    pw = 32 // bits
    c = torch.arange(d, device=device)
    return (c // pw) * pw + (c % pw) // 2 + (c % 2) * (pw // 2)


def pack_codes_paired(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`pack_codes` with each word's codes in pair order, so :mod:`._unpack` yields channel order."""
    stored = torch.empty_like(codes)
    stored[..., pair_positions(codes.shape[-1], bits, codes.device)] = codes
    return pack_codes(stored, bits)


def unpack_codes_paired(words: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes_paired`: ``[..., W]`` int32 -> ``[..., W*32/bits]`` uint8 codes in channel order."""
    codes = unpack_codes(words, bits)
    return codes[..., pair_positions(codes.shape[-1], bits, codes.device)]


@dataclasses.dataclass
class QuantizedWeight:
    """A packed ``[N, K]`` weight: ``packed [P, N, K*bits/32]`` int32, scales and zeros ``[P, N, K/G]``."""

    packed: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    bits: int
    group_size: int
    n: int
    k: int
    scheme: Scheme

    @property
    def planes(self) -> int:
        return self.packed.shape[0]

    def nbytes(self) -> int:
        extra = self.zeros.numel() * self.zeros.element_size() if self.zeros is not None else 0
        return self.packed.numel() * 4 + self.scales.numel() * self.scales.element_size() + extra

    def to(self, device: torch.device | str) -> QuantizedWeight:
        return dataclasses.replace(
            self,
            packed=self.packed.to(device),
            scales=self.scales.to(device),
            zeros=None if self.zeros is None else self.zeros.to(device),
        )


def _check_weight(w: torch.Tensor, group_size: int, per_word: int) -> None:
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-d [N, K]; got shape {tuple(w.shape)}")
    if group_size < per_word or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of two >= {per_word}; got {group_size}")
    if w.shape[1] % group_size:
        raise ValueError(f"in_features {w.shape[1]} must be a multiple of group_size {group_size}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or Inf")


def quantize_groupwise(
    w: torch.Tensor, bits: int = 4, group_size: int = 128, dtype: torch.dtype | None = None
) -> QuantizedWeight:
    """Asymmetric min/max quantization of ``w [N, K]`` to int4 or int2, one scale and zero per group."""
    if bits not in (2, 4):
        raise ValueError(f"bits must be 4 or 2; got {bits}")
    _check_weight(w, group_size, 32 // bits)
    dtype = dtype or (w.dtype if w.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16)
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    lo = g.amin(-1).clamp(max=0.0)
    hi = g.amax(-1).clamp(min=0.0)
    qmax = (1 << bits) - 1
    scale = ((hi - lo) / qmax).clamp(min=1e-8)
    zero = (-lo / scale).round().clamp(0, qmax)
    codes = (g / scale[..., None] + zero[..., None]).round().clamp(0, qmax).to(torch.uint8).reshape(n, k)
    return QuantizedWeight(
        pack_codes_paired(codes, bits)[None],
        scale.to(dtype)[None],
        zero.to(dtype)[None],
        bits,
        group_size,
        n,
        k,
        "int4" if bits == 4 else "int2",
    )


def quantize_ternary(
    w: torch.Tensor, planes: int = 2, group_size: int = 128, dtype: torch.dtype | None = None
) -> QuantizedWeight:
    """Greedy trit-plane decomposition ``W ~ sum_p alpha_p T_p`` with one alpha per row, group and plane."""
    if planes < 1 or planes > 4:
        raise ValueError(f"planes must be between 1 and 4; got {planes}")
    _check_weight(w, group_size, 16)
    dtype = dtype or (w.dtype if w.dtype in (torch.float16, torch.bfloat16) else torch.bfloat16)
    n, k = w.shape
    r = w.float().reshape(n, k // group_size, group_size).clone()
    packed, alphas = [], []
    for _ in range(planes):
        delta = 0.7 * r.abs().mean(-1, keepdim=True)
        t = torch.sign(r) * (r.abs() > delta)
        count = t.abs().sum(-1).clamp(min=1)
        alpha = ((r * t).sum(-1) / count).to(dtype)
        r = r - alpha.float()[..., None] * t
        packed.append(pack_codes_paired((t + 1).to(torch.uint8).reshape(n, k), 2))
        alphas.append(alpha)
    return QuantizedWeight(torch.stack(packed), torch.stack(alphas), None, 2, group_size, n, k, "ternary")


def dequantize(qw: QuantizedWeight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``[N, K]`` weight that ``qw`` stands for."""
    codes = unpack_codes_paired(qw.packed, qw.bits).float()
    codes = codes.reshape(qw.planes, qw.n, qw.k // qw.group_size, qw.group_size)
    zero = qw.zeros.float()[..., None] if qw.zeros is not None else 1.0
    w = ((codes - zero) * qw.scales.float()[..., None]).sum(0)
    return w.reshape(qw.n, qw.k).to(dtype)


def quant_matmul_reference(x: torch.Tensor, qw: QuantizedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    y = x.float() @ dequantize(qw, torch.float32).t()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


if HAVE_TRITON:

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
            # split-K in the one launch: each program stores its fp32 partial row and counts itself in (an atomic
            # per row block); the last to arrive sums the partials, writes y and resets the count for the next
            # call. The barrier orders every thread's partial before the count's release; .cg reads skip L1.
            tl.store(P + tl.program_id(1) * N + offs_n, y, mask=n_mask)
            tl.debug_barrier()
            arrived = tl.atomic_add(CNT + tl.program_id(0), 1, sem="acq_rel", scope="gpu")
            if arrived == SPLIT_K - 1:
                y = tl.zeros([BLOCK_N], tl.float32)
                for s in tl.static_range(SPLIT_K):
                    y += tl.load(P + s * N + offs_n, mask=n_mask, other=0.0, cache_modifier=".cg")
                if HAS_BIAS:
                    y += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)
                tl.store(Y + offs_n, y.to(Y.dtype.element_ty), mask=n_mask)
                tl.atomic_xchg(CNT + tl.program_id(0), 0, sem="relaxed", scope="gpu")
        else:
            if HAS_BIAS:
                y += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)
            tl.store(Y + offs_n, y.to(Y.dtype.element_ty), mask=n_mask)

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


GEMV_MAX_M = 8
# the f16acc path's default (groups per step, BLOCK_N, split-K ways, num_warps, num_stages) per scheme
F16ACC_CONFIG = {"int4": (2, 64, 4, 2, 1), "int2": (2, 32, 8, 1, 1), "ternary": (2, 32, 8, 1, 1)}
M1_UNPACK = ("auto", "fp32", "f16acc", "asm", "int")
# "auto" takes f16acc from this many weights up: below, its extra launch (_x_f16_pairs_kernel) costs more than
# the fewer instructions per code save (H200 measurements in docs/benchmarks.md)
F16ACC_MIN_WEIGHTS = 1 << 25
GEMV_KERNELS = ("m1", "slices", "dot")


_SPLIT_COUNTS: dict[torch.device, torch.Tensor] = {}
_RETIRED_COUNTS: list[torch.Tensor] = []  # outgrown buffers stay allocated: a captured CUDA graph may still use one


def _split_counts(device: torch.device, blocks: int) -> torch.Tensor:
    """Zeroed int32 arrival counts, one per row block, for the M=1 kernel's split-K (each call leaves them zero).

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


def _m1_unpack(unpack: str, qw: QuantizedWeight) -> str:
    if unpack != "auto":
        return unpack
    return "f16acc" if qw.n * qw.k >= F16ACC_MIN_WEIGHTS else "fp32"


def _launch_config(m: int, qw: QuantizedWeight, gemv: str, unpack: str = "fp32") -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_N, WORDS or BLOCK_K, num_warps, num_stages): WORDS for M <= 8, BLOCK_K above."""
    g = qw.group_size
    per_word = 32 // qw.bits
    if m == 1 and gemv == "m1" and unpack == "f16acc":
        if interpreting():
            return (1, 16, 1, 4, 1)
        # fastest on the H200 at 8192^2, 28672 x 8192 and 8192 x 28672 (2026-12-02, PTX word dot), or within 1%
        return F16ACC_CONFIG[qw.scheme]
    if m == 1 and gemv == "m1":
        return (1, 16, 1, 4, 1) if interpreting() else (1, 64, 8, 2, 3)  # fastest on the H100 (2026-11-23)
    if m <= GEMV_MAX_M and gemv != "dot":
        block_m = next_pow2(m)
        if interpreting():
            return block_m, 16, 8, 4, 1
        return block_m, 16 if m <= 2 else 8, max(64, g // per_word), 4, 3
    if interpreting():
        return 16, 16, max(g, 32), 4, 1
    return 16, 64, max(g, 128), 4, 3


def quant_matmul(
    x: torch.Tensor,
    qw: QuantizedWeight,
    bias: torch.Tensor | None = None,
    config: tuple[int, int, int, int, int] | None = None,
    out: torch.Tensor | None = None,
    gemv: Literal["m1", "slices", "dot"] = "m1",
    unpack: Literal["auto", "fp32", "f16acc", "asm", "int"] = "auto",
) -> torch.Tensor:
    """``x [M, K] @ W^T`` with ``W`` the low-bit weight ``qw``; returns ``[M, N]`` in ``x``'s dtype.

    ``config`` overrides the launch: (BLOCK_M, BLOCK_N, WORDS per step, num_warps, num_stages) for
    M <= 8, (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) above. For M = 1, ``gemv="m1"``
    runs the single-row kernel (``config`` = (groups per step, BLOCK_N, split-K ways, num_warps, num_stages); the
    first field counts for ``f16acc`` only); ``"slices"`` the CUDA-core kernel for up to 8 rows; ``"dot"`` the
    tensor-core kernel for any M. ``unpack`` is how the m=1 kernel turns codes into products: ``"fp32"`` one
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
    tensors = [x, qw.packed, qw.scales] + ([qw.zeros] if qw.zeros is not None else [])
    m = x.shape[0]
    if out is not None and (out.shape != (m, qw.n) or out.dtype != x.dtype or out.stride(1) != 1):
        raise ValueError(f"out must be a {x.dtype} tensor of shape ({m}, {qw.n}) with unit column stride")
    if not use_triton("simcim.kernels.quant_gemv", *tensors):
        y = quant_matmul_reference(x, qw, bias)
        return y if out is None else out.copy_(y)
    if x.stride(1) != 1:
        x = x.contiguous()
    unpack = _m1_unpack(unpack, qw)
    block_m, block_n, block_k, warps, stages = config or _launch_config(m, qw, gemv, unpack)
    y = torch.empty((m, qw.n), device=x.device, dtype=x.dtype) if out is None else out
    z = qw.zeros if qw.zeros is not None else qw.scales
    args = (
        x,
        qw.packed,
        qw.scales,
        z,
        bias if bias is not None else qw.scales,
        y,
        m,
        qw.n,
        qw.k,
        x.stride(0),
        qw.packed.stride(0),
        qw.packed.stride(1),
        qw.scales.stride(0),
        qw.scales.stride(1),
        y.stride(0),
    )
    meta = dict(
        BITS=qw.bits,
        PLANES=qw.planes,
        HAS_ZERO=qw.zeros is not None,
        HAS_BIAS=bias is not None,
        GROUP=qw.group_size,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        num_warps=warps,
        num_stages=stages,
    )
    if gemv not in GEMV_KERNELS:
        raise ValueError(f"gemv must be one of {', '.join(GEMV_KERNELS)}; got {gemv!r}")
    if m == 1 and gemv == "m1":
        split_k = max(1, min(block_k, qw.k // qw.group_size))  # config's third field: split-K ways
        blocks = triton.cdiv(qw.n, block_n)
        if split_k > 1:
            partials = torch.empty((split_k, qw.n), device=x.device, dtype=torch.float32)
            counts = _split_counts(x.device, blocks)
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
            z,
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
            BLOCK_N=block_n,
            SPLIT_K=split_k,
            PAIRS=unpack in ("asm", "int"),
            ASM=unpack in ("asm", "f16acc") and not interpreting(),  # f16acc: the PTX word dot (simcim.kernels._unpack)
            F16ACC=f16acc,
            GS=block_m if f16acc else 1,  # config's first field: groups per step of the f16acc loop
            num_warps=warps,
            num_stages=stages,
        )
        return y
    elif m <= GEMV_MAX_M and gemv != "dot":
        if block_m < m:
            raise ValueError(f"config {config}: BLOCK_M={block_m} is smaller than M={m}")
        _qgemv_kernel[(triton.cdiv(qw.n, block_n),)](*args, WORDS=block_k, **meta)
    else:
        _qmm_kernel[(triton.cdiv(qw.n, block_n), triton.cdiv(m, block_m))](*args, BLOCK_K=block_k, **meta)
    return y


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
        cls, linear: torch.nn.Linear, scheme: Scheme = "int4", group_size: int = 128, planes: int = 2
    ) -> QuantizedLinear:
        w = linear.weight.detach()
        if scheme == "int4":
            qw = quantize_groupwise(w, 4, group_size)
        elif scheme == "int2":
            qw = quantize_groupwise(w, 2, group_size)
        elif scheme == "ternary":
            qw = quantize_ternary(w, planes, group_size)
        else:
            raise ValueError(f"unknown scheme {scheme!r} (int4, int2, ternary)")
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
    scheme: Scheme = "int4",
    group_size: int = 128,
    planes: int = 2,
    skip: tuple[str, ...] = ("lm_head",),
) -> int:
    """Swap every ``nn.Linear`` in ``model`` (names ending in ``skip`` excepted) for a ``QuantizedLinear``.

    Layers whose in_features are not a multiple of ``group_size`` stay as they are. Returns the count.
    """
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is torch.nn.Linear and not full.endswith(skip) and child.in_features % group_size == 0:
                setattr(module, child_name, QuantizedLinear.from_linear(child, scheme, group_size, planes))
                swapped += 1
    return swapped
