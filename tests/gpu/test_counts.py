"""Each kernel's work counts (bytes, flops, lane-ops, launches, programs) against hand-computed values."""

from __future__ import annotations

import dataclasses

import pytest

from simcim.gpu import counts as gc
from simcim.gpu import model as gm
from tests.gpu.spec import SPEC


def test_linear_bf16_counts():
    w = gc.linear_bf16(1, 4, 8)
    assert w.hbm_bytes == 2 * (4 * 8 + 8 + 4)  # weight, x, y in bf16
    assert w.mma_flops == 2 * 4 * 8 and w.launches == 1


def test_quant_gemv_int4_counts():
    # n=4, k=256, g=128: 2 groups -> split-K 2 ways; 8 codes per word
    w = gc.quant_gemv(4, 256, "int4")
    packed = 4 * 256 * 4 / 8
    scales_zeros = 4 * 2 * 2 * 2
    x = 256 * 2
    partials = 2 * 4 * 4  # written by every program, re-read from L2 by the last of the row block
    assert w.hbm_bytes == packed + scales_zeros + x + partials + 4 * 2
    assert w.l2_bytes == partials  # one block of 64 rows reads x once
    assert w.unpack == 4 * 256
    assert w.fma == 2 * 4 * (256 // 8) + 1 * 256 + 2 * 4  # scale and zero per word; x group sums; split-K sum
    # one launch on cdiv(4, 64) x 2 splits (2 warps) that ends with the split-K fixup: measured, or 3 L2 round trips
    assert w.launches == 1 and w.programs == 2 and w.parts[0].warps == 2 and w.parts[0].splitk_fixup
    plain = gm.predict(dataclasses.replace(w.parts[0], splitk_fixup=False), SPEC).terms["launch"]
    assert gm.predict(w, SPEC).terms["launch"] == pytest.approx(plain + 3 * SPEC.l2_hop_us * 1e-6)
    measured = dataclasses.replace(SPEC, splitk_fixup_us=1.25)
    assert gm.predict(w, measured).terms["launch"] == pytest.approx(plain + 1.25e-6)
    assert not gc.quant_gemv(4, 128, "int4").parts[0].splitk_fixup  # one group: no split, the kernel writes y
    big = gc.quant_gemv(2048, 2048, "int4")  # 16 groups: 8-way split
    assert big.programs == 32 * 8 and big.l2_bytes == 31 * 2048 * 2 + 8 * 2048 * 4 and big.launches == 1
    assert w.parts[0].iters == 0 and big.parts[0].iters == 1  # a program's groups after its first wait for loads


def test_cublas_programs_stream_at_their_measured_rate():
    # 64 x 2048 runs one 12-warp cuBLAS program: capped at 3 x sm_gbps, or at cublas_program_gbps where measured
    w = gc.linear_bf16(1, 64, 2048)
    assert w.programs == 1 and w.warps == 12
    assert gm.predict(w, SPEC).terms["hbm"] == pytest.approx(w.hbm_bytes / (SPEC.sm_gbps * 3e9))
    fast = dataclasses.replace(SPEC, cublas_program_gbps=90.0)
    assert gm.predict(w, fast).terms["hbm"] == pytest.approx(w.hbm_bytes / 90e9)
    triton = gc.quant_gemv(128, 128, "int4").parts[0]  # a Triton launch keeps the Little's-law cap
    assert gm.predict(triton, fast).terms["hbm"] == pytest.approx(gm.predict(triton, SPEC).terms["hbm"])


def test_quant_gemv_ternary_has_two_planes_and_no_zeros():
    w = gc.quant_gemv(4, 128, "ternary")
    assert w.unpack == 2 * 4 * 128
    assert w.hbm_bytes == 2 * 4 * 128 * 2 / 8 + 2 * 4 * 1 * 2 + 128 * 2 + 4 * 2  # x read once, y written
    assert w.launches == 1  # one group: no split-K, the kernel writes y


def test_kv_decode_counts():
    # 1 batch, 2 heads over 1 kv head, 100 tokens: 4 sinks, 64 quantized (one key group), 32 in bf16
    w = gc.kv_decode(1, 2, 1, 100, 32, bits=2, k_group=64, v_group=64)
    cache = 2 * 64 * 32 * 2 / 8 + 1 * 32 * 2 * 2 + 64 * 1 * 2 * 2 + 36 * 32 * 2 * 2
    partials = 2 * (1 + 1) * 2 * 34 * 4  # written and read; 1 split + the bf16 part, 2 real query rows
    q = 2 * 32 * 2 * 3 + 2 * 32 * 2
    assert w.hbm_bytes == cache + partials + q
    assert w.unpack == 2 * 64 * 32 and w.exp == 16 * 100 and w.attn_flops == 4 * 16 * 100 * 32
    # chain: fwht (2 rows in one program), split kernel on (1 + 1) x 1 programs with one waited key group,
    # combine on 2
    assert [p.programs for p in w.parts] == [1, 2, 2] and w.parts[1].iters == 1 and w.launches == 3
    olmoe = gc.kv_decode(1, 16, 16, 4096, 128, bits=4)  # 63 groups -> 63 splits of one group, +1
    assert olmoe.parts[1].programs == 64 * 16 and olmoe.parts[1].iters == 1
    # 255 registers x 128 threads: 2 programs an SM (not 16 by warps)
    assert olmoe.parts[1].regs == 255 and gm.programs_per_sm(olmoe.parts[1], SPEC) == 2
    long = gc.kv_decode(1, 16, 16, 32768, 128, bits=4)  # 511 groups over 128 splits: 4 each, 2 per step
    assert long.parts[1].iters == 2 and gc.kv_decode(1, 16, 16, 32768, 128, bits=2).parts[1].iters == 4
    # the full-precision program walks its tokens 16 a step: 36 tokens -> 3 waited steps, 64 -> 4
    assert w.parts[1].tail_iters == 3 and olmoe.parts[1].tail_iters == 4 and long.parts[1].tail_iters == 4


def test_attention_counts():
    full = gc.unfused_attention(1, 2, 256, 64, l2_mib=0.0)  # scores do not fit: all 16 bytes from HBM
    assert full.hbm_bytes == 16 * 2 * 256 * 256 + 2 * 4 * 2 * 256 * 64
    assert full.attn_flops == 4 * 2 * 256 * 256 * 64 and full.launches == 3
    fits = gc.unfused_attention(1, 2, 256, 64)  # 512 KB of fp32 scores stay in L2: 10 bytes a score read there
    assert fits.l2_bytes == 10 * 2 * 256 * 256 and fits.hbm_bytes == 6 * 2 * 256 * 256 + 2 * 4 * 2 * 256 * 64
    assert [p.programs for p in fits.parts] == [2 * 2 * 2, 2 * 256, 2 * 2]
    causal = gc.fused_attention(1, 2, 256, 64, causal=True)
    assert causal.exp == 2 * 3 * 128 * 128  # 2 query blocks visit 1 and 2 key blocks
    assert causal.hbm_bytes == 2 * 4 * 2 * 256 * 64
    assert causal.programs == 2 * 2 and causal.program_work == (1.0, 2.0) * 2 and causal.warps == 8


def test_sdpa_and_cublas_programs():
    w = gc.sdpa_decode(1, 4, 4, 1024, 32)  # cuDNN: 8 splits of 128 keys, then the reduction
    assert w.launches == 2 and [p.programs for p in w.parts] == [32, 4]
    assert gc.sdpa_decode(1, 16, 16, 4096, 128).parts[0].programs == 16 * 16
    assert gc.linear_bf16(1, 64, 2048).programs == 1 and gc.linear_bf16(1, 3, 5).programs == 0


def test_spmm_counts_padded_lanes():
    w = gc.spmm(2, 32, 1, 20)  # 10 nonzeros a row: one 16-wide step per row; 128 lanes issued per step
    assert w.loads == 3 * 2 * 128 and w.fma == 2 * 128 and w.programs == 2 and w.iters == 0 and w.depth == 3
    assert w.hops == 0  # one step: its two dependent loads are on the first result's path (depth)
    long = gc.spmm(2, 128, 1, 128)  # 64 nonzeros a row: 4 steps, the 3 after the first load indices, then rows
    assert long.hops == 2 * 3
    # the loop's round trips: one wave of 2 programs, 6 hops from L2 after the launch's 2
    p = gm.predict(long, SPEC, l2_resident=True)
    assert p.terms["chain"] == pytest.approx(6 * SPEC.l2_hop_us * 1e-6)
    assert p.terms["launch"] == pytest.approx((SPEC.kernel_min_us + 2 * SPEC.l2_hop_us) * 1e-6)
    assert w.hbm_bytes == 3 * 8 + 20 * 10 + 32 * 2 + 2 * 2 and w.l2_bytes == 20 * 32


def test_gather_rows_embedding_bag_and_fwht_counts():
    # embedding bag: 4 bags of 8 int64 indices into a 100 x 32 fp32 table (fits in L2), block_n 32, 2 warps
    w = gc.embedding_bag(4, 8, 32, 100, block_n=64)
    cat, g = w.parts
    assert w.launches == 2 and cat.hbm_bytes == 2 * 5 * 8
    assert g.programs == 4 and g.warps == 2 and g.depth == 3
    assert g.hbm_bytes == 5 * 8 + 32 * 8 + 4 * 32 * 4 + 100 * 32 * 4 and g.l2_bytes == 32 * 32 * 4
    # a step per bag (8 <= 16 nonzeros): 64 threads load an index each, and the 16 x 32 tile in 4-wide vectors
    assert g.loads == 4 * (64 + max(64, 16 * 32 // 4)) and g.fma == 4 * 16 * 32
    big = gc.embedding_bag(4, 8, 32, 10**7)  # a 1.2 GB table: every gathered row from HBM
    assert big.parts[1].l2_bytes == 0 and big.parts[1].hbm_bytes == 5 * 8 + 32 * 8 + 4 * 32 * 4 + 32 * 32 * 4
    # SpMM with fp32 B of 256 columns: two 128-column blocks a row, values loaded too
    s = gc.spmm(2, 64, 256, 10, val_bytes=4, b_bytes=4)
    assert s.programs == 4 and s.loads == 4 * (2 * 128 + 16 * 128 // 4) and s.l2_bytes == 10 * 2 * 128 * 4
    f = gc.fwht(1000, 128)
    # 16 programs of 64 rows (the last partly masked) x 128 threads x the compiled kernel's instructions
    assert f.hbm_bytes == 2 * 1000 * 128 * 2 and f.programs == 16 and f.fma == 16 * 128 * gc.FWHT_INSTR[(2, 128)]
    assert gc.fwht(1000, 128, elem_bytes=4).fma == 16 * 128 * gc.FWHT_INSTR[(4, 128)]
    assert gc.fwht(10, 8).fma == 10 * 8 * (3 + 1)  # not compiled: log2(d) adds and the scale a channel
    with pytest.raises(ValueError, match="power of two"):
        gc.fwht(4, 96)


def test_quant_gemv_path_can_be_named():
    assert len(gc.quant_gemv(8192, 8192, "int4", unpack="fp32").parts) == 1  # the kernel, split-K sum inside
    assert len(gc.quant_gemv(2048, 2048, "int4", unpack="f16acc").parts) == 2  # x pairs + the kernel
    with pytest.raises(ValueError, match="unpack"):
        gc.quant_gemv(64, 128, "int4", unpack="asm")


def test_predict_floors_depth_and_resources():
    # a library launch pays its own floor: cuBLAS 3 us + first 1 us
    assert gm.predict(gc.linear_bf16(1, 4, 8), SPEC).terms["launch"] == pytest.approx(4e-6)
    # SDPA's chain together pays sdpa_min: (7 - 2) + 2, plus two first loads
    assert gm.predict(gc.sdpa_decode(1, 1, 1, 64, 64), SPEC).terms["launch"] == pytest.approx(9e-6)
    # two further dependent loads from HBM (0.75 us each), or from L2 (0.25 us)
    deep = gm.Work("x", depth=3)
    assert gm.predict(deep, SPEC).terms["launch"] == pytest.approx(3e-6 + 1.5e-6)
    assert gm.predict(deep, SPEC, l2_resident=True).terms["launch"] == pytest.approx(2e-6 + 0.5e-6)
    # registers and shared memory cap the programs an SM holds, hence the waves
    assert gm.programs_per_sm(gm.Work("x", warps=4), SPEC) == 16
    assert gm.programs_per_sm(gm.Work("x", warps=4, regs=128), SPEC) == 4
    assert gm.programs_per_sm(gm.Work("x", warps=4, smem=100 * 1024), SPEC) == 2
    w = gm.Work("x", programs=1056, iters=1, regs=255)  # 2 an SM: 4 waves of one waited iteration
    assert gm.predict(w, SPEC).terms["chain"] == pytest.approx(4 * 1.5e-6)
    with pytest.raises(ValueError, match="floor"):
        gm.predict(gm.Work("x", floor="cudnn"), SPEC)


def test_spec_files_and_errors(tmp_path):
    spec = gm.load_spec("h100")
    assert spec.copy_gbps > 1000 and spec.sms == 132
    path = tmp_path / "mine.toml"
    gm.write_spec(SPEC, path)
    assert gm.load_spec(path) == SPEC
    with pytest.raises(ValueError, match="no bundled spec"):
        gm.load_spec("a100")
    old = path.read_text()
    path.write_text("\n".join(line for line in old.splitlines() if not line.startswith("splitk_fixup_us")))
    assert gm.load_spec(path).splitk_fixup_us == 0.0  # optional: a spec measured before the field loads
    path.write_text(old + "bogus = 1\n")
    with pytest.raises(ValueError, match="unknown key 'bogus'"):
        gm.load_spec(path)
    with pytest.raises(ValueError, match="copy_gbps must be > 0"):
        dataclasses.replace(SPEC, copy_gbps=0.0)
    with pytest.raises(ValueError, match="scheme"):
        gc.quant_gemv(4, 128, "int3")
    with pytest.raises(ValueError, match="unknown kernel"):
        gc.count("gemm", m=1)


def test_quant_gemv_f16acc_chain_hand_counted():
    from simcim.kernels import quant_gemv as kq

    assert gc.F16ACC_MIN_WEIGHTS == kq.F16ACC_MIN_WEIGHTS  # the model follows the kernel's "auto" choice
    assert {s: c[:4] for s, c in kq.F16ACC_CONFIG.items()} == gc.F16ACC_CONFIG  # and its default launch
    w = gc.quant_gemv(8192, 4096, "int4")  # 2^25 weights: x to fp16 pairs, then the GEMV with its split-K sum
    prep, main = w.parts
    groups = 4096 // 128
    assert prep.hbm_bytes == 4096 * 2 + 4096 * 2 + groups * 8 and prep.programs == groups
    packed = 8192 * 4096 // 2 + 8192 * groups * 2 * 2  # int4 codes, bf16 scale and zero per group
    # int4 at (2 groups a step, 64 rows, 4 splits, 2 warps): 4 splits of 8 groups, 4 steps a program
    assert main.hbm_bytes == packed + 4096 * 2 + groups * 8 + 4 * 8192 * 4 + 8192 * 2
    assert main.l2_bytes == 127 * (4096 * 2 + groups * 8) + 4 * 8192 * 4  # x re-read; partials re-read
    # a word: 4 pairs x (LOP3, HSUB2, HFMA2), one shift, two widenings, an add and the scale's FMA; the 4-way sum
    assert main.fma == (4 * 3 + 1 + 4) * 8192 * (4096 // 8) + 4 * 8192 and main.unpack == 0
    assert main.programs == 128 * 4 and main.iters == 4 and main.regs == 251 and main.splitk_fixup
    two = gc.quant_gemv(8192, 4096, "int2").parts[1]  # (2, 32, 8, 1): 8 splits of 4 groups, 2 steps
    assert two.programs == 256 * 8 and two.iters == 2 and two.warps == 1
    assert two.fma == (8 * 4 + 4) * 8192 * (4096 // 16) + 8 * 8192
    assert len(gc.quant_gemv(4096, 4096, "int4").parts) == 1  # below the threshold: the fp32 path
    assert len(gc.quant_gemv(2048, 2048, "int4").parts) == 1  # below the threshold: the fp32 path


def test_a_program_issues_its_code_once_at_the_lone_program_rate():
    # 1000 static instructions at 1.5 ns: a 1.5 us floor on the longest program, above its lane-op time here
    w = gm.Work("x", fma=1e3, programs=2, warps=2, instr=1000)
    assert gm.predict(w, SPEC).terms["compute"] < 1e-7  # a spec without the field: no such bound
    timed = dataclasses.replace(SPEC, lone_instr_ns=1.5)
    p = gm.predict(w, timed)
    first = (SPEC.dram_iter_us - SPEC.l2_iter_us) * 1e-6
    assert p.terms["compute"] == pytest.approx(1.5e-6) and p.time_s == pytest.approx(2e-6 + first + 1.5e-6)
    assert gm.predict(w, dataclasses.replace(timed, kernel_min_us=0.1)).bound == "code/sm"
    # the lane-op time wins when it is longer: 1e8 FMAs on one SM at 2 warps
    heavy = gm.predict(dataclasses.replace(w, fma=1e8), timed)
    assert heavy.terms["compute"] == pytest.approx(1e8 / (SPEC.fma_tops * 1e12) * SPEC.sms / 2 * 2)
    # a waited loop adds the pass's share after its last wait, like the lane-op work
    looped = gm.predict(dataclasses.replace(w, iters=2), timed)
    assert looped.terms["chain"] == pytest.approx(2 * SPEC.dram_iter_us * 1e-6 + 1.5e-6 / 2)
    # the counters carry the compiled counts: fp32 GEMV with and without the fixup, KV split and combine kernels
    assert gc.quant_gemv(128, 128, "int4").parts[0].instr == gc.QGEMV1_INSTR[("int4", False)]
    assert gc.quant_gemv(2048, 1024, "ternary").parts[0].instr == gc.QGEMV1_INSTR[("ternary", True)]
    kv = gc.kv_decode(1, 16, 16, 4096, 128, bits=2)
    assert [p.instr for p in kv.parts[1:]] == [gc.KV_SPLIT_INSTR[(2, 128)], gc.KV_COMBINE_INSTR[128]]
