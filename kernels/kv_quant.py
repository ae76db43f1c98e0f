"""Decode attention over a KV cache quantized to 4 or 2 bits (:mod:`simcim.kernels.kv_cache`: the format, the
quantizer and the reference, re-exported here).

Decode (:func:`kv_decode`) splits the quantized tokens over ``num_splits`` programs per kv head
(FlashDecoding); one more program takes the full-precision tokens; a second kernel merges the
partial softmax states. Per kv head, all its query heads (GQA) are processed together. Two operand orders
(``tiles``): ``"left"`` computes scores^T = K q^T and out^T = V^T p^T, the query heads as the dots' N: key
codes are made from the words in the left operand's registers (one shift and one LOP3 a code position, the
step folded into the query columns), values dequantized by the packed FMA (:mod:`simcim.kernels._unpack`).
``"right"`` computes q K^T and p V, the query heads as the dots' M: for keys the step is folded into the
query (``q . k = (q s R) . (c / R) + q . lo``, ``c / R`` exact) and ``q . lo`` reaches every token of a
group through a product with a ones matrix rather than a cross-warp sum; values are dequantized by the
packed FMA; row sums are kept per score position and reduced once at the end; the next key group's words
and scales are loaded before the current group's arithmetic.
"""

from __future__ import annotations

import math

import torch

from simcim.kernels._common import HAVE_TRITON, interpreting, next_pow2, use_triton
from simcim.kernels.fwht import fwht
from simcim.kernels.kv_cache import (
    QuantizedKVCache,
    _check_q,
    decode_reference_dense,
    dequantize_kv,
    detect_sink_tokens,
    kv_decode_reference,
    quantize_kv,
)
from simcim.kernels.launch import KVDecodeConfig, default

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from simcim.kernels._common import mma
    from simcim.kernels._unpack import unpack_pairs

__all__ = [
    "QuantizedKVCache",
    "quantize_kv",
    "dequantize_kv",
    "detect_sink_tokens",
    "kv_decode",
    "kv_decode_reference",
    "decode_reference_dense",
]

_LOG2E = 1.4426950408889634


if HAVE_TRITON:

    @triton.jit
    def _load_group(KW, KS, KL, VW, VS, VL, start, end, w_off, offs_d, v_off,
                    PW: tl.constexpr, KG: tl.constexpr, VG: tl.constexpr, D: tl.constexpr):
        """Packed words and scales of the key group at token ``start`` (nothing at or past ``end``).

        Base pointers are this head's scalars and offsets loop-invariant int32 tensors, so a prefetch
        costs one address per element rather than a 64-bit index computation.
        """
        ok = tl.full([KG, 1], 0, tl.int32) + start < end
        kw = tl.load(KW + start * (D // PW) + w_off, mask=ok, other=0)
        vw = tl.load(VW + start * (D // PW) + w_off, mask=ok, other=0)
        ok_d = tl.full([D], 0, tl.int32) + start < end
        ks = tl.load(KS + (start // KG) * D + offs_d, mask=ok_d, other=0.0)
        kl = tl.load(KL + (start // KG) * D + offs_d, mask=ok_d, other=0.0)
        # one value scale and offset per word (a word never straddles a value group)
        vs = tl.load(VS + start * (D // VG) + v_off, mask=ok, other=0.0)
        vl = tl.load(VL + start * (D // VG) + v_off, mask=ok, other=0.0)
        return kw, ks, kl, vw, vs, vl

    @triton.jit
    def _group_scores(q, kw, ks, kl, ones, one, BITS: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
        """log2-domain scores of one key group: q . (s c + lo) = (q s R) . (c / R) + q . lo.

        c / R is exact in DT; the per-row offset q . lo comes from a product with a ones matrix, which
        lands it on every token without a cross-warp reduction.
        """
        R: tl.constexpr = 1 << BITS
        qn = (q * (ks.to(tl.float32) * R)[None, :]).to(DT)
        qlo = (q * kl.to(tl.float32)[None, :]).to(DT)
        xk = unpack_pairs(kw, one, -one, BITS, DT, False, ASM)
        return mma(qn, tl.trans(xk)) + mma(qlo, ones)

    @triton.jit
    def _group_values(vw, vs, vl, BITS: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
        """One group's values: s c + lo = (c / R) (s R) + lo; both operands exact in DT, one rounding."""
        R: tl.constexpr = 1 << BITS
        return unpack_pairs(vw, vs.to(tl.float32) * R, vl.to(tl.float32), BITS, DT, True, ASM)

    @triton.jit
    def _split_left(q, q_rows, g_mask, qk_scale, KW, KS, KL, VW, VS, VL, lo, hi, w_off, v_off, offs_d, m_i,
                    BITS: tl.constexpr, PW: tl.constexpr, KG: tl.constexpr, VG: tl.constexpr, D: tl.constexpr,
                    GP: tl.constexpr, DT: tl.constexpr, ASM: tl.constexpr):
        """One split's tokens with the key codes and the value tiles as the left operand of their dots, the query
        group (GQA heads of one kv head, padded to GP) as the right one: scores^T [KG, GP] and out^T [D, GP].

        Keys: q . k = sum_j c_j . (q s)_j + q . lo, with c_j [KG, D/PW] code position j of every word (channels
        w PW + ch(j)) in the mantissa of the 16-bit float C (C + c exactly) by one shift and one LOP3 from the
        words, a chain of constant operands that Triton loads straight into the left-operand registers (no key
        tile in shared memory); the step s is folded into the query columns of position j, the right operand, and
        the C offset comes off with the sum of those columns. A dot is at least 16 deep:
        heads of fewer words pad with zero queries. Values are dequantized by the packed FMA and transposed
        (Triton stages that tile through shared memory). Returns the output, row sums and maxima in the other
        formulation's shapes ([GP, D], [GP, KG], [GP])."""
        KWD: tl.constexpr = D // PW
        KWP: tl.constexpr = 16 if KWD < 16 else KWD
        MASK: tl.constexpr = (1 << BITS) - 1
        MAGIC: tl.constexpr = 0x4300 if DT == tl.bfloat16 else 0x6400
        C: tl.constexpr = 128.0 if DT == tl.bfloat16 else 1024.0
        R: tl.constexpr = 1 << BITS
        offs_t = tl.arange(0, KG)
        offs_c = tl.arange(0, KWP)
        c_in = offs_c < KWD
        acc_t = tl.zeros([D, GP], tl.float32)
        l_t = tl.zeros([KG, GP], tl.float32)
        for start in range(lo, hi, KG):
            kw = tl.load(KW + start * KWD + offs_t[:, None] * KWD + offs_c[None, :], mask=c_in[None, :], other=0)
            k_base = (start // KG) * D
            s_t = tl.zeros([KG, GP], tl.float32)
            b_sum = tl.zeros([GP], tl.float32)
            for j in tl.static_range(PW):
                cols = offs_c * PW + 2 * (j % (PW // 2)) + j // (PW // 2)
                qj = tl.load(q_rows + cols[None, :], mask=g_mask[:, None] & c_in[None, :], other=0.0).to(tl.float32)
                ksj = tl.load(KS + k_base + cols, mask=c_in, other=0.0).to(tl.float32)
                bj = (qj * (ksj * qk_scale)[None, :]).to(DT)
                b_sum += tl.sum(bj.to(tl.float32), 1)
                c = (((kw >> (j * BITS)) & MASK) | MAGIC).to(tl.int16).to(DT, bitcast=True)
                s_t += mma(c, tl.trans(bj))
            kl = tl.load(KL + k_base + offs_d).to(tl.float32)
            s_t += (tl.sum(q * kl[None, :], 1) - C * b_sum)[None, :]
            m_new = tl.maximum(m_i, tl.max(s_t, 0))
            p_t = tl.math.exp2(s_t - m_new[None, :])
            alpha = tl.math.exp2(m_i - m_new)
            l_t = l_t * alpha[None, :] + p_t
            m_i = m_new
            vw = tl.load(VW + start * KWD + w_off)
            vs = tl.load(VS + start * (D // VG) + v_off).to(tl.float32)
            vl = tl.load(VL + start * (D // VG) + v_off).to(tl.float32)
            v = unpack_pairs(vw, vs * R, vl, BITS, DT, True, ASM)
            acc_t = acc_t * alpha[None, :] + mma(tl.trans(v), p_t.to(DT))
        return tl.trans(acc_t), tl.trans(l_t), m_i

    @triton.jit
    def _kv_split_kernel(
        Q,
        KW,
        KS,
        KL,
        VW,
        VS,
        VL,
        FK,
        FV,
        PO,
        PM,
        PL,
        qk_scale,
        HKV,
        T_Q,
        T_F,
        TOK_PER_SPLIT,
        NUM_SPLITS,
        s_qb,
        s_qh,
        s_kw,
        s_ks,
        s_vw,
        s_vs,
        s_f,
        GROUP: tl.constexpr,
        GP: tl.constexpr,
        BITS: tl.constexpr,
        KG: tl.constexpr,
        VG: tl.constexpr,
        D: tl.constexpr,
        ASM: tl.constexpr,
        KF: tl.constexpr,
        PAIR: tl.constexpr,
        LEFT: tl.constexpr,
    ):
        PW: tl.constexpr = 32 // BITS
        DT: tl.constexpr = FV.dtype.element_ty
        pid_s = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // HKV
        hk = bh % HKV
        bh64 = bh.to(tl.int64)
        offs_g = tl.arange(0, GP)
        offs_d = tl.arange(0, D)
        offs_n = tl.arange(0, KG)
        offs_w = tl.arange(0, D // PW)
        g_mask = offs_g < GROUP
        q_rows = Q + b.to(tl.int64) * s_qb + (hk * GROUP + offs_g)[:, None] * s_qh
        q = tl.load(q_rows + offs_d[None, :], mask=g_mask[:, None], other=0.0).to(tl.float32) * qk_scale
        m_i = tl.full([GP], float("-inf"), tl.float32)
        # row sums are kept per score position and reduced once at the end: no cross-warp sum per group
        l_acc = tl.zeros([GP, KG], tl.float32)
        l_fp = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, D], tl.float32)
        if pid_s < NUM_SPLITS:
            lo = pid_s * TOK_PER_SPLIT
            hi = tl.minimum(lo + TOK_PER_SPLIT, T_Q)
            ones = tl.full([D, KG], 1.0, DT)
            one = tl.full([1, 1], 1.0, tl.float32)
            # this head's rows; offsets within a group are int32 and loop-invariant
            KW += bh64 * s_kw
            VW += bh64 * s_vw
            KS += bh64 * s_ks
            KL += bh64 * s_ks
            VS += bh64 * s_vs
            VL += bh64 * s_vs
            w_off = offs_n[:, None] * (D // PW) + offs_w[None, :]
            v_off = offs_n[:, None] * (D // VG) + (offs_w * PW // VG)[None, :]
            if LEFT:
                acc, l_acc, m_i = _split_left(q, q_rows, g_mask, qk_scale, KW, KS, KL, VW, VS, VL, lo, hi, w_off,
                                              v_off, offs_d, m_i, BITS, PW, KG, VG, D, GP, DT, ASM)
            elif PAIR:
                kw, ks, kl, vw, vs, vl = _load_group(
                    KW, KS, KL, VW, VS, VL, lo, hi, w_off, offs_d, v_off, PW, KG, VG, D
                )
                # two key groups per step: twice the independent work between the step's barriers
                kw1, ks1, kl1, vw1, vs1, vl1 = _load_group(
                    KW, KS, KL, VW, VS, VL, lo + KG, hi, w_off, offs_d, v_off, PW, KG, VG, D
                )
                for start in range(lo, hi, 2 * KG):
                    nkw, nks, nkl, nvw, nvs, nvl = _load_group(
                        KW, KS, KL, VW, VS, VL, start + 2 * KG, hi, w_off, offs_d, v_off, PW, KG, VG, D
                    )
                    nkw1, nks1, nkl1, nvw1, nvs1, nvl1 = _load_group(
                        KW, KS, KL, VW, VS, VL, start + 3 * KG, hi, w_off, offs_d, v_off, PW, KG, VG, D
                    )
                    qk = _group_scores(q, kw, ks, kl, ones, one, BITS, DT, ASM)
                    qk1 = _group_scores(q, kw1, ks1, kl1, ones, one, BITS, DT, ASM)
                    qk1 = tl.where(tl.full([1, KG], 0, tl.int32) + start + KG < hi, qk1, float("-inf"))
                    m_new = tl.maximum(m_i, tl.max(tl.maximum(qk, qk1), 1))
                    p = tl.math.exp2(qk - m_new[:, None])
                    p1 = tl.math.exp2(qk1 - m_new[:, None])
                    alpha = tl.math.exp2(m_i - m_new)
                    l_acc = l_acc * alpha[:, None] + (p + p1)
                    m_i = m_new
                    acc = acc * alpha[:, None] + mma(p.to(DT), _group_values(vw, vs, vl, BITS, DT, ASM))
                    acc += mma(p1.to(DT), _group_values(vw1, vs1, vl1, BITS, DT, ASM))
                    kw, ks, kl, vw, vs, vl = nkw, nks, nkl, nvw, nvs, nvl
                    kw1, ks1, kl1, vw1, vs1, vl1 = nkw1, nks1, nkl1, nvw1, nvs1, nvl1
            else:
                kw, ks, kl, vw, vs, vl = _load_group(
                    KW, KS, KL, VW, VS, VL, lo, hi, w_off, offs_d, v_off, PW, KG, VG, D
                )
                for start in range(lo, hi, KG):
                    # the next group's loads go out before this group's arithmetic (register double buffer)
                    nkw, nks, nkl, nvw, nvs, nvl = _load_group(
                        KW, KS, KL, VW, VS, VL, start + KG, hi, w_off, offs_d, v_off, PW, KG, VG, D
                    )
                    qk = _group_scores(q, kw, ks, kl, ones, one, BITS, DT, ASM)
                    m_new = tl.maximum(m_i, tl.max(qk, 1))
                    p = tl.math.exp2(qk - m_new[:, None])
                    alpha = tl.math.exp2(m_i - m_new)
                    l_acc = l_acc * alpha[:, None] + p
                    m_i = m_new
                    acc = acc * alpha[:, None] + mma(p.to(DT), _group_values(vw, vs, vl, BITS, DT, ASM))
                    kw, ks, kl, vw, vs, vl = nkw, nks, nkl, nvw, nvs, nvl
        else:
            # full-precision tokens (a few per head): small tiles keep this branch's registers low
            offs_f = tl.arange(0, KF)
            for start in range(0, T_F, KF):
                tok = start + offs_f
                t_mask = tok < T_F
                fidx = bh64 * s_f + tok[:, None] * D + offs_d[None, :]
                k = tl.load(FK + fidx, mask=t_mask[:, None], other=0.0)
                v = tl.load(FV + fidx, mask=t_mask[:, None], other=0.0)
                qk = mma(q.to(DT), tl.trans(k))
                qk = tl.where(t_mask[None, :], qk, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(qk, 1))
                p = tl.math.exp2(qk - m_new[:, None])
                alpha = tl.where(m_i == float("-inf"), 0.0, tl.math.exp2(m_i - m_new))
                l_fp = l_fp * alpha + tl.sum(p, 1)
                m_i = m_new
                acc = acc * alpha[:, None] + mma(p.to(v.dtype), v)
        l_i = tl.sum(l_acc, 1) + l_fp
        part = (bh64 * (NUM_SPLITS + 1) + pid_s) * GP + offs_g
        tl.store(PM + part, m_i, mask=g_mask)
        tl.store(PL + part, l_i, mask=g_mask)
        tl.store(PO + part[:, None] * D + offs_d[None, :], acc, mask=g_mask[:, None])

    @triton.jit
    def _kv_combine_kernel(
        PO, PM, PL, Out, NUM_PARTS, GROUP: tl.constexpr, GP: tl.constexpr, SP: tl.constexpr, D: tl.constexpr
    ):
        row = tl.program_id(0)  # = (b * HKV + hk) * GROUP + g = b * H + h
        bh = (row // GROUP).to(tl.int64)
        g = row % GROUP
        offs_s = tl.arange(0, SP)
        offs_d = tl.arange(0, D)
        s_mask = offs_s < NUM_PARTS
        part = (bh * NUM_PARTS + offs_s) * GP + g
        m = tl.load(PM + part, mask=s_mask, other=float("-inf"))
        l_s = tl.load(PL + part, mask=s_mask, other=0.0)
        o = tl.load(PO + part[:, None] * D + offs_d[None, :], mask=s_mask[:, None], other=0.0)
        m_all = tl.max(m, 0)
        w = tl.where(m == float("-inf"), 0.0, tl.math.exp2(m - m_all))
        out = tl.sum(o * w[:, None], 0) / tl.sum(l_s * w, 0)
        tl.store(Out + row.to(tl.int64) * D + offs_d, out.to(Out.dtype.element_ty))


def kv_decode(
    q: torch.Tensor,
    cache: QuantizedKVCache,
    sm_scale: float | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
    repeat_unpack: bool = True,
    num_warps: int | None = None,
    num_stages: int | None = None,
    unpack: str = "asm",
    max_registers: int | None = None,
    groups_per_step: int | None = None,
    tiles: str | None = None,
) -> torch.Tensor:
    """One decode step: ``q [B, H, D]`` (unrotated) against the quantized cache; returns ``[B, H, D]``.

    ``unpack`` picks how codes become floats: ``"asm"`` (two codes per shift and LOP3 in inline PTX,
    on the GPU) or ``"int"`` (the same arithmetic in plain Triton; what the interpreter always runs).
    ``repeat_unpack`` is accepted for compatibility and ignored; ``max_registers`` caps the registers
    per thread of the main kernel (more programs per SM, at the risk of spills); ``groups_per_step`` (1 or 2) is
    how many key groups a program works on between its barriers. ``tiles`` is which operand of the tensor-core
    dots the K and V tiles are: ``"left"`` (the transposed products, GQA query heads of a kv head as the dots' N;
    the key codes are made in the dot's registers, the value tile goes through shared memory; one key group a
    step) or ``"right"`` (query heads as the dots' M; both dequantized tiles go through shared memory).
    ``num_splits``, ``num_warps``, ``num_stages``, ``groups_per_step`` and ``tiles``
    left at None take the device's measured defaults (``KVDecodeConfig`` in ``launch_defaults.toml``).
    """
    if unpack not in ("asm", "int"):
        raise ValueError(f"unpack must be 'asm' or 'int'; got {unpack!r}")
    cfg = default(KVDecodeConfig, f"kv_decode_{cache.bits}bit", q.device)
    groups_per_step = groups_per_step or cfg.groups_per_step
    num_warps = num_warps or cfg.num_warps
    num_stages = num_stages or cfg.num_stages
    tiles = tiles or cfg.tiles
    if tiles not in ("left", "right"):
        raise ValueError(f"tiles must be 'left' or 'right'; got {tiles!r}")
    if groups_per_step not in (1, 2):
        raise ValueError(f"groups_per_step must be 1 or 2; got {groups_per_step}")
    _check_q(q, cache)
    if q.dtype != cache.fp_k.dtype:
        raise ValueError(f"q dtype {q.dtype} differs from the cache dtype {cache.fp_k.dtype}")
    if out is not None and (out.shape != q.shape or out.dtype != q.dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {q.dtype} tensor of shape {tuple(q.shape)}")
    tensors = (q, cache.k_words, cache.v_words, cache.fp_k)
    if not use_triton("simcim.kernels.kv_quant", *tensors):
        y = kv_decode_reference(q, cache, sm_scale)
        return y if out is None else out.copy_(y)
    b, h, d = q.shape
    hkv = cache.kv_heads
    group = h // hkv
    gp = max(16, next_pow2(group))
    scale = 1.0 / math.sqrt(d) if sm_scale is None else sm_scale
    qr = fwht(q) if cache.rotated else q.contiguous()
    t_q = cache.n_quantized
    groups_q = t_q // cache.k_group
    if num_splits is None:  # about cfg.programs programs in all, whole key groups each
        num_splits = max(1, min(max(1, (cfg.num_splits or cfg.programs // max(1, b * hkv))), groups_q))
    if num_splits < 1:
        raise ValueError(f"num_splits must be >= 1; got {num_splits}")
    # whole steps per split; a split may end early (or be empty) where the groups run out
    tok_per_split = triton.cdiv(triton.cdiv(max(groups_q, 1), num_splits), groups_per_step) * groups_per_step
    tok_per_split *= cache.k_group
    parts = num_splits + 1
    pm = torch.empty((b * hkv, parts, gp), device=q.device, dtype=torch.float32)
    pl = torch.empty_like(pm)
    po = torch.empty((b * hkv, parts, gp, d), device=q.device, dtype=torch.float32)
    y = torch.empty_like(q) if out is None else out
    quant = (cache.k_words, cache.k_step, cache.k_lo, cache.v_words, cache.v_step, cache.v_lo)
    fp = (cache.fp_k, cache.fp_v)
    # an empty tensor may have no storage; hand the kernel a real (never read) pointer instead
    quant = tuple(t if t.numel() else torch.zeros(1, dtype=t.dtype, device=t.device) for t in quant)
    fp = tuple(t if t.numel() else torch.zeros(1, dtype=t.dtype, device=t.device) for t in fp)
    _kv_split_kernel[(parts, b * hkv)](
        qr,
        *quant,
        *fp,
        po,
        pm,
        pl,
        scale * _LOG2E,
        hkv,
        t_q,
        cache.fp_k.shape[2],
        tok_per_split,
        num_splits,
        qr.stride(0),
        qr.stride(1),
        cache.k_words.shape[2] * cache.k_words.shape[3],
        cache.k_step.shape[2] * d,
        cache.v_words.shape[2] * cache.v_words.shape[3],
        cache.v_step.shape[2] * cache.v_step.shape[3],
        cache.fp_k.shape[2] * d,
        GROUP=group,
        GP=gp,
        BITS=cache.bits,
        KG=cache.k_group,
        VG=cache.v_group,
        D=d,
        ASM=unpack == "asm" and not interpreting(),
        KF=16,
        PAIR=groups_per_step == 2,
        LEFT=tiles == "left",
        num_warps=num_warps,
        num_stages=1 if interpreting() else num_stages,
        **({"maxnreg": max_registers} if max_registers and not interpreting() else {}),
    )
    _kv_combine_kernel[(b * h,)](po, pm, pl, y, parts, GROUP=group, GP=gp, SP=next_pow2(parts), D=d, num_warps=4)
    return y
