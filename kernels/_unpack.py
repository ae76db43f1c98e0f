"""Low-bit codes to fp16/bf16 two at a time: one shift and one LOP3 per pair of codes (Marlin's trick).

A packed int32 word holds ``PW = 32 / bits`` codes, code ``j`` at bit ``bits * j`` (see
:func:`simcim.kernels.quant_formats.pack_codes`). Shifting the word and masking puts code ``j`` and code
``j + PW/2`` into the top mantissa bits of the low and high 16-bit halves; OR-ing in the exponent of
1.0 makes each half exactly the float ``1 + code / 2^bits``; one packed FMA then applies a per-word
scale and offset. A pair thus costs a shift, a LOP3 and an FMA, where plain Triton spends a shift, a
mask, an OR, an FADD, an FMA and a convert on every code. Callers fold the ``1 + c / 2^bits`` form
into their scales (``c = 2^bits (x - 1)``).

Order: the 32-bit result of a pair is one register pair, so the unpacked row of a word is
``[c0, c_{PW/2}, c1, c_{PW/2+1}, ...]``; a caller either stores its codes in that order (the KV
cache does: unpacked rows come out in channel order) or permutes its other operand.
The PTX path (``ASM``) runs on the GPU; the plain-Triton path computes the same values and is the
one the interpreter runs.
"""

from __future__ import annotations

from simcim.kernels._common import HAVE_TRITON

if HAVE_TRITON:
    import triton
    import triton.language as tl


def _pair_asm(bits: int, half: str, exact: bool) -> str:
    """PTX for one word (``$PW``; scale and offset pairs ``$PW+1``, ``$PW+2``) -> ``PW`` 16-bit values.

    ``exact`` first subtracts 1 (exact), so the FMA rounds once: ``(c / 2^bits) * scale + offset``.
    """
    pw = 32 // bits
    pos = (10 if half == "f16" else 7) - bits  # top mantissa bits of the half
    mask = ((1 << bits) - 1) << pos
    magic = 0x3C00 if half == "f16" else 0x3F80  # 1.0
    lines = ["{", ".reg .b32 t, one, mone;"]
    if exact:
        lines += [f"mov.b32 one, {magic | magic << 16};", f"mov.b32 mone, {(magic | magic << 16) | 0x80008000};"]
    for j in range(pw // 2):
        sh = bits * j - pos
        op = f"shr.u32 t, ${pw}, {sh};" if sh > 0 else f"shl.b32 t, ${pw}, {-sh};" if sh < 0 else f"mov.b32 t, ${pw};"
        lines += [op, f"and.b32 t, t, {mask | mask << 16};", f"or.b32 t, t, {magic | magic << 16};"]
        if exact:
            lines.append(f"fma.rn.{half}x2 t, t, one, mone;")  # c / 2^bits, exact
        lines.append(f"fma.rn.{half}x2 t, t, ${pw + 1}, ${pw + 2};")
        lines.append(f"mov.b32 {{${j}, ${j + pw // 2}}}, t;")
    lines.append("}")
    return "\n".join(lines)


def _constraints(bits: int) -> str:
    return ",".join(["=h"] * (32 // bits) + ["r"] * 3)


def _dot_asm(bits: int) -> str:
    """PTX: one word (``$1``) times ``PW / 2`` fp16x2 input pairs (``$2`` ...) -> fp32 ``$0``.

    Each pair of codes becomes a centred fp16x2 value and is multiplied into one fp16x2 accumulator (HFMA2); the two
    halves are widened and added once per word. 2-bit: shift, LOP3 and HSUB2 give ``1 + code / 4 - 1.5`` (exact).
    4-bit, with no shift for half the pairs (the nibbles at bits 0-3 and 4-7 of each half are masked in place, then
    those at 8-15 after one shift of the word): LOP3 gives ``1 + code / 1024`` or ``1 + code / 64`` and HSUB2 takes
    ``1 + 8 / 1024`` or ``1 + 8 / 64`` off, so the value is ``(code - 8) / 1024`` or ``(code - 8) / 64`` exactly;
    the caller stores the inputs of the first kind 64x and of the second 4x (``_x_f16_pairs_kernel``), so every
    product is ``(code - 8) / 16 * x`` either way. ``PW / 2`` products per half in fp16 cost ``2^-11`` of a
    partial sum of at most ``PW / 4`` when the inputs are scaled to magnitude <= 1 (callers do)."""
    pw = 32 // bits
    lines = ["{", ".reg .b32 t, a, c, d, u;", ".reg .f16 l, h;", ".reg .f32 fl, fh;"]
    # constants go through registers: ptxas rejects an f16x2 immediate operand in some contexts
    if bits == 4:  # the centres 1 + 8 / 1024 and 1 + 8 / 64
        lines += [f"mov.b32 c, {0x3C08 | 0x3C08 << 16};", f"mov.b32 d, {0x3C80 | 0x3C80 << 16};", "shr.u32 u, $1, 8;"]
        for j in range(4):
            src = "$1" if j < 2 else "u"
            mask = 0x000F000F if j % 2 == 0 else 0x00F000F0
            lines.append(f"lop3.b32 t, {src}, {mask}, {0x3C00 | 0x3C00 << 16}, 0xEA;")
            lines.append(f"sub.rn.f16x2 t, t, {'c' if j % 2 == 0 else 'd'};")
            lines.append(f"mul.rn.f16x2 a, t, ${2 + j};" if j == 0 else f"fma.rn.f16x2 a, t, ${2 + j}, a;")
    else:
        pos = 10 - bits
        mask = ((1 << bits) - 1) << pos
        lines.append(f"mov.b32 c, {0x3E00 | 0x3E00 << 16};")
        for j in range(pw // 2):
            sh = bits * j - pos
            op = f"shr.u32 t, $1, {sh};" if sh > 0 else f"shl.b32 t, $1, {-sh};" if sh < 0 else "mov.b32 t, $1;"
            lines += [op, f"lop3.b32 t, t, {mask | mask << 16}, {0x3C00 | 0x3C00 << 16}, 0xEA;"]
            lines.append("sub.rn.f16x2 t, t, c;")  # - 1.5, exact: |v - 1.5| <= 0.5
            lines.append(f"mul.rn.f16x2 a, t, ${2 + j};" if j == 0 else f"fma.rn.f16x2 a, t, ${2 + j}, a;")
    lines += ["mov.b32 {l, h}, a;", "cvt.f32.f16 fl, l;", "cvt.f32.f16 fh, h;", "add.f32 $0, fl, fh;", "}"]
    return "\n".join(lines)


if HAVE_TRITON:
    _ASM_2H = tl.constexpr(_pair_asm(2, "f16", False))
    _ASM_4H = tl.constexpr(_pair_asm(4, "f16", False))
    _ASM_2B = tl.constexpr(_pair_asm(2, "bf16", False))
    _ASM_4B = tl.constexpr(_pair_asm(4, "bf16", False))
    _ASM_2H_X = tl.constexpr(_pair_asm(2, "f16", True))
    _ASM_4H_X = tl.constexpr(_pair_asm(4, "f16", True))
    _ASM_2B_X = tl.constexpr(_pair_asm(2, "bf16", True))
    _ASM_4B_X = tl.constexpr(_pair_asm(4, "bf16", True))
    _CONS_2 = tl.constexpr(_constraints(2))
    _CONS_4 = tl.constexpr(_constraints(4))
    _DOT_2 = tl.constexpr(_dot_asm(2))
    _DOT_4 = tl.constexpr(_dot_asm(4))

    @triton.jit
    def _splat2(x, DT: tl.constexpr):
        """fp32 -> the 16-bit float ``DT`` twice in one int32 (the operand of a packed FMA)."""
        b = x.to(DT).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        return b | (b << 16)

    @triton.jit
    def _magic_pair(words, J: tl.constexpr, BITS: tl.constexpr, DT: tl.constexpr):
        """Codes ``J`` and ``J + PW/2`` of each word as the 16-bit patterns of ``DT`` ``1 + code / 2^BITS`` (exact)."""
        POS: tl.constexpr = (10 if DT == tl.float16 else 7) - BITS
        SH: tl.constexpr = BITS * J - POS
        MASK: tl.constexpr = ((1 << BITS) - 1) << POS
        MAGIC: tl.constexpr = 0x3C00 if DT == tl.float16 else 0x3F80
        if SH >= 0:
            t = words >> SH
        else:
            t = words << (-SH)
        t = (t & (MASK | MASK << 16)) | (MAGIC | MAGIC << 16)
        return (t & 0xFFFF).to(tl.int16), (t >> 16).to(tl.int16)

    @triton.jit
    def _pair(words, scale, offset, J: tl.constexpr, BITS: tl.constexpr, DT: tl.constexpr, EXACT: tl.constexpr):
        """Plain-Triton version of one pair: codes ``J`` and ``J + PW/2`` as 16-bit patterns."""
        lo, hi = _magic_pair(words, J, BITS, DT)
        one: tl.constexpr = 1.0 if EXACT else 0.0
        lo = ((lo.to(DT, bitcast=True).to(tl.float32) - one) * scale + offset).to(DT).to(tl.int16, bitcast=True)
        hi = ((hi.to(DT, bitcast=True).to(tl.float32) - one) * scale + offset).to(DT).to(tl.int16, bitcast=True)
        return lo, hi

    @triton.jit
    def _asm_pairs(words, scale, offset, BITS: tl.constexpr, DT: tl.constexpr, EXACT: tl.constexpr):
        """The PTX path: a tuple of the ``32 / BITS`` values of each word, low halves then high halves."""
        args = [words, _splat2(scale, DT), _splat2(offset, DT)]
        if BITS == 2:
            if DT == tl.float16:
                if EXACT:
                    c = tl.inline_asm_elementwise(_ASM_2H_X, _CONS_2, args, (tl.int16,) * 16, True, 1)
                else:
                    c = tl.inline_asm_elementwise(_ASM_2H, _CONS_2, args, (tl.int16,) * 16, True, 1)
            else:
                if EXACT:
                    c = tl.inline_asm_elementwise(_ASM_2B_X, _CONS_2, args, (tl.int16,) * 16, True, 1)
                else:
                    c = tl.inline_asm_elementwise(_ASM_2B, _CONS_2, args, (tl.int16,) * 16, True, 1)
        else:
            if DT == tl.float16:
                if EXACT:
                    c = tl.inline_asm_elementwise(_ASM_4H_X, _CONS_4, args, (tl.int16,) * 8, True, 1)
                else:
                    c = tl.inline_asm_elementwise(_ASM_4H, _CONS_4, args, (tl.int16,) * 8, True, 1)
            else:
                if EXACT:
                    c = tl.inline_asm_elementwise(_ASM_4B_X, _CONS_4, args, (tl.int16,) * 8, True, 1)
                else:
                    c = tl.inline_asm_elementwise(_ASM_4B, _CONS_4, args, (tl.int16,) * 8, True, 1)
        return c

    @triton.jit
    def pair_codes(words, scale, offset, BITS: tl.constexpr, DT: tl.constexpr, EXACT: tl.constexpr, ASM: tl.constexpr):
        """The ``PW = 32 / BITS`` values of each word as a tuple of int16 tensors shaped like ``words`` (the
        16-bit patterns of ``DT``), codes ``0 .. PW/2 - 1`` (low halves) then ``PW/2 .. PW - 1`` (high
        halves): for callers that use each code position as its own tensor instead of the unpacked row."""
        if ASM:
            c = _asm_pairs(words, scale, offset, BITS, DT, EXACT)
        elif BITS == 2:
            l0, h0 = _pair(words, scale, offset, 0, 2, DT, EXACT)
            l1, h1 = _pair(words, scale, offset, 1, 2, DT, EXACT)
            l2, h2 = _pair(words, scale, offset, 2, 2, DT, EXACT)
            l3, h3 = _pair(words, scale, offset, 3, 2, DT, EXACT)
            l4, h4 = _pair(words, scale, offset, 4, 2, DT, EXACT)
            l5, h5 = _pair(words, scale, offset, 5, 2, DT, EXACT)
            l6, h6 = _pair(words, scale, offset, 6, 2, DT, EXACT)
            l7, h7 = _pair(words, scale, offset, 7, 2, DT, EXACT)
            c = (l0, l1, l2, l3, l4, l5, l6, l7, h0, h1, h2, h3, h4, h5, h6, h7)
        else:
            l0, h0 = _pair(words, scale, offset, 0, 4, DT, EXACT)
            l1, h1 = _pair(words, scale, offset, 1, 4, DT, EXACT)
            l2, h2 = _pair(words, scale, offset, 2, 4, DT, EXACT)
            l3, h3 = _pair(words, scale, offset, 3, 4, DT, EXACT)
            c = (l0, l1, l2, l3, h0, h1, h2, h3)
        return c

    @triton.jit
    def _codes2(words, scale, offset, DT: tl.constexpr, EXACT: tl.constexpr, ASM: tl.constexpr):
        """2-bit: the 16 values of each word as 16-bit patterns, low halves then high halves."""
        c = pair_codes(words, scale, offset, 2, DT, EXACT, ASM)
        l0, l1, l2, l3, l4, l5, l6, l7, h0, h1, h2, h3, h4, h5, h6, h7 = c
        lo = tl.interleave(
            tl.interleave(tl.interleave(l0, l4), tl.interleave(l2, l6)),
            tl.interleave(tl.interleave(l1, l5), tl.interleave(l3, l7)),
        )
        hi = tl.interleave(
            tl.interleave(tl.interleave(h0, h4), tl.interleave(h2, h6)),
            tl.interleave(tl.interleave(h1, h5), tl.interleave(h3, h7)),
        )
        return tl.interleave(lo, hi)

    @triton.jit
    def _codes4(words, scale, offset, DT: tl.constexpr, EXACT: tl.constexpr, ASM: tl.constexpr):
        """4-bit: the 8 values of each word as 16-bit patterns, low halves then high halves."""
        l0, l1, l2, l3, h0, h1, h2, h3 = pair_codes(words, scale, offset, 4, DT, EXACT, ASM)
        lo = tl.interleave(tl.interleave(l0, l2), tl.interleave(l1, l3))
        hi = tl.interleave(tl.interleave(h0, h2), tl.interleave(h1, h3))
        return tl.interleave(lo, hi)

    @triton.jit
    def unpack_pairs(
        words, scale, offset, BITS: tl.constexpr, DT: tl.constexpr, EXACT: tl.constexpr, ASM: tl.constexpr
    ):
        """``words [N, W]`` int32 -> ``[N, W * 32 / BITS]`` of ``DT`` (fp16 or bf16), in pair order.

        Each value is ``(1 + code / 2^BITS) * scale + offset``, or with ``EXACT`` ``(code / 2^BITS) *
        scale + offset`` (one more packed FMA, but a single rounding when the offset is large), with one
        fp32 ``scale`` and ``offset`` per word (``[N, W]`` or broadcastable; rounded to ``DT`` on the
        PTX path). ``scale = 1, offset = -1`` without ``EXACT`` gives ``code / 2^BITS`` exactly.
        """
        if BITS == 2:
            c = _codes2(words, scale, offset, DT, EXACT, ASM)
        else:
            c = _codes4(words, scale, offset, DT, EXACT, ASM)
        return c.to(DT, bitcast=True)


    @triton.jit
    def _half(bits):
        return bits.to(tl.int16).to(tl.float16, bitcast=True)

    @triton.jit
    def word_dot_f16(words, x2, BITS: tl.constexpr, ASM: tl.constexpr):
        """Per int32 word: ``sum_i (code_i / 2^BITS - 1/2) x_i`` in fp32, the products accumulated in fp16x2.

        ``x2`` is a tuple of ``32 / BITS / 2`` int32 tensors shaped like ``words``, each the fp16x2 pair of
        inputs that pair ``j`` of the word multiplies (pair order: codes ``j`` and ``j + PW/2``); 4-bit words take
        even pairs 64x and odd ones 4x (see ``_dot_asm``)."""
        if ASM:
            if BITS == 2:
                args = [words, x2[0], x2[1], x2[2], x2[3], x2[4], x2[5], x2[6], x2[7]]
                r = tl.inline_asm_elementwise(_DOT_2, "=f,r,r,r,r,r,r,r,r,r", args, tl.float32, True, 1)
            else:
                args = [words, x2[0], x2[1], x2[2], x2[3]]
                r = tl.inline_asm_elementwise(_DOT_4, "=f,r,r,r,r,r", args, tl.float32, True, 1)
        else:
            HALF: tl.constexpr = 16 // BITS
            a_lo = tl.zeros(words.shape, tl.float16)
            a_hi = tl.zeros(words.shape, tl.float16)
            for j in tl.static_range(HALF):
                if BITS == 4:  # the PTX path's values: (code - 8) / 1024 or (code - 8) / 64, exactly
                    if j % 2 == 0:
                        t = ((words >> (8 * (j // 2))) & 0x000F000F) | 0x3C003C00
                        c_lo = (t & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True) - (1.0 + 8.0 / 1024.0)
                        c_hi = (t >> 16).to(tl.int16).to(tl.float16, bitcast=True) - (1.0 + 8.0 / 1024.0)
                    else:
                        t = ((words >> (8 * (j // 2))) & 0x00F000F0) | 0x3C003C00
                        c_lo = (t & 0xFFFF).to(tl.int16).to(tl.float16, bitcast=True) - (1.0 + 8.0 / 64.0)
                        c_hi = (t >> 16).to(tl.int16).to(tl.float16, bitcast=True) - (1.0 + 8.0 / 64.0)
                else:
                    v_lo, v_hi = _magic_pair(words, j, BITS, tl.float16)
                    c_lo = v_lo.to(tl.float16, bitcast=True) - 1.5
                    c_hi = v_hi.to(tl.float16, bitcast=True) - 1.5
                a_lo = (c_lo * _half(x2[j] & 0xFFFF) + a_lo).to(tl.float16)
                a_hi = (c_hi * _half((x2[j] >> 16) & 0xFFFF) + a_hi).to(tl.float16)
            r = a_lo.to(tl.float32) + a_hi.to(tl.float32)
        return r
