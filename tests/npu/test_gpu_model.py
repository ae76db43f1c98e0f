"""Byte, FLOP and op counting of the GPU performance model against hand-computed values."""

from __future__ import annotations

import dataclasses

import pytest

from npu import gpu_model as gm

SPEC = gm.GPUSpec(name="unit", copy_gbps=1000.0, mem_latency_us=1.0, l2_gbps=4000.0, mma_tflops=100.0,
                  fma_tops=10.0, unpack_tops=5.0, exp_tops=2.0, load_tops=1.0, launch_us=2.0, l2_mib=50.0, sms=132)


def test_linear_bf16_counts():
    w = gm.linear_bf16(1, 4, 8)
    assert w.hbm_bytes == 2 * (4 * 8 + 8 + 4)  # weight, x, y in bf16
    assert w.mma_flops == 2 * 4 * 8 and w.launches == 1


def test_quant_gemv_int4_counts():
    # n=4, k=256, g=128: 2 groups -> split-K 2 ways; 8 codes per word
    w = gm.quant_gemv(4, 256, "int4")
    packed = 4 * 256 * 4 / 8
    scales_zeros = 4 * 2 * 2 * 2
    x = 3 * 256 * 2
    out = 2 * 4 * 4 * 2 + 4 * 4 + 4 * 4 + 4 * 2
    assert w.hbm_bytes == packed + scales_zeros + x + out
    assert w.unpack == 4 * 256
    assert w.fma == 2 * 4 * (256 // 8) + 1 * 256  # scale and zero per word; x group sums per 64-row block
    assert w.launches == 4


def test_quant_gemv_ternary_has_two_planes_and_no_zeros():
    w = gm.quant_gemv(4, 128, "ternary")
    assert w.unpack == 2 * 4 * 128
    assert w.hbm_bytes == 2 * 4 * 128 * 2 / 8 + 2 * 4 * 1 * 2 + 3 * 128 * 2 + 4 * 2
    assert w.launches == 2  # one group: no split-K


def test_kv_decode_counts():
    # 1 batch, 2 heads over 1 kv head, 100 tokens: 4 sinks, 64 quantized (one key group), 32 in bf16
    w = gm.kv_decode(1, 2, 1, 100, 32, bits=2, k_group=64, v_group=64)
    cache = 2 * 64 * 32 * 2 / 8 + 1 * 32 * 2 * 2 + 64 * 1 * 2 * 2 + 36 * 32 * 2 * 2
    partials = 2 * (1 + 1) * 16 * 34 * 4  # written and read; splits = min(2048, 1 group) = 1, +1 for bf16 tokens
    q = 2 * 32 * 2 * 3 + 2 * 32 * 2
    assert w.hbm_bytes == cache + partials + q
    assert w.unpack == 2 * 64 * 32 and w.exp == 16 * 100 and w.mma_flops == 4 * 16 * 100 * 32


def test_attention_counts():
    full = gm.unfused_attention(1, 2, 256, 64)
    assert full.hbm_bytes == 16 * 2 * 256 * 256 + 2 * 4 * 2 * 256 * 64
    assert full.mma_flops == 4 * 2 * 256 * 256 * 64 and full.launches == 3
    causal = gm.fused_attention(1, 2, 256, 64, causal=True)
    assert causal.exp == 2 * 3 * 128 * 128  # 2 query blocks visit 1 and 2 key blocks
    assert causal.hbm_bytes == 2 * 4 * 2 * 256 * 64


def test_spmm_counts_padded_lanes():
    w = gm.spmm(2, 32, 1, 20)  # 10 nonzeros a row: one 16-wide step per row; 128 lanes issued per step
    assert w.loads == 3 * 2 * 128 and w.fma == 2 * 128
    assert w.hbm_bytes == 3 * 8 + 20 * 10 + 32 * 2 + 2 * 2 and w.l2_bytes == 20 * 32


def test_predict_terms_and_bounds():
    p = gm.predict(gm.Work("x", hbm_bytes=1e6), SPEC)  # 1 us of bytes + 1 us latency + 2 us launch
    assert p.time_s == pytest.approx(4e-6) and p.bound == "launch"
    p = gm.predict(gm.Work("x", hbm_bytes=1e9, launches=1), SPEC)
    assert p.time_s == pytest.approx(2e-6 + 1e-3 + 1e-6) and p.bound == "hbm"
    p = gm.predict(gm.Work("x", unpack=5e9, fma=1e10), SPEC)  # compute terms add: 1 ms + 1 ms
    assert p.time_s == pytest.approx(2e-6 + 2e-3) and p.bound in ("unpack", "fma")
    assert gm.predict(gm.Work("x", hbm_bytes=4e9), SPEC, l2_resident=True).time_s == pytest.approx(2e-6 + 1e-3 + 1e-6)


def test_spec_files_and_errors(tmp_path):
    spec = gm.load_spec("h100")
    assert spec.copy_gbps > 1000 and spec.sms == 132
    path = tmp_path / "mine.toml"
    gm.write_spec(SPEC, path)
    assert gm.load_spec(path) == SPEC
    with pytest.raises(ValueError, match="no bundled spec"):
        gm.load_spec("a100")
    path.write_text(path.read_text() + "bogus = 1\n")
    with pytest.raises(ValueError, match="unknown key 'bogus'"):
        gm.load_spec(path)
    with pytest.raises(ValueError, match="copy_gbps must be > 0"):
        dataclasses.replace(SPEC, copy_gbps=0.0)
    with pytest.raises(ValueError, match="scheme"):
        gm.quant_gemv(4, 128, "int3")
    with pytest.raises(ValueError, match="unknown kernel"):
        gm.count("gemm", m=1)
