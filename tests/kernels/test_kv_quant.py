import pytest
import torch

from simcim.kernels.kv_quant import (
    decode_reference_dense,
    dequantize_kv,
    detect_sink_tokens,
    kv_decode,
    kv_decode_reference,
    quantize_kv,
)
from simcim.kernels.testing import poisoned, randn, rel_err


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize(
    "b,h,hkv,t,d,n_sink,rotate",
    [(2, 4, 2, 90, 64, 4, True), (1, 3, 1, 77, 128, 0, False), (1, 2, 2, 10, 64, 2, True)],
)
def test_decode_matches_dequantized_reference(bits, b, h, hkv, t, d, n_sink, rotate, device, rng):
    k = randn(b, hkv, t, d, g=rng, dtype=torch.bfloat16, device=device)
    v = randn(b, hkv, t, d, g=rng, dtype=torch.bfloat16, device=device)
    q = randn(b, h, d, g=rng, dtype=torch.bfloat16, device=device)
    cache = quantize_kv(
        k, v, bits, k_group=16, v_group=32, n_sink=n_sink, sink_tokens=[20] if t > 20 else None, rotate=rotate
    )
    assert cache.n_tokens == t
    out = poisoned(q.shape, q.dtype, device)
    y = kv_decode(q, cache, num_splits=3, out=out)
    ref = kv_decode_reference(q, cache)
    assert rel_err(y, ref) < 2e-2
    if t == 90:  # plain-Triton unpacking, two key groups per step and odd group counts agree too
        assert rel_err(kv_decode(q, cache, num_splits=2, unpack="int"), ref) < 2e-2
        for tiles in ("left", "right"):
            assert rel_err(kv_decode(q, cache, num_splits=2, groups_per_step=2, tiles=tiles), ref) < 2e-2
            assert rel_err(kv_decode(q, cache, num_splits=1, groups_per_step=2, tiles=tiles), ref) < 2e-2


@pytest.mark.parametrize("bits", [2, 4])
def test_left_operand_decode_groups_gqa_heads_and_splits(bits, device, rng):
    # GQA 8/2 at d = 128 (4 query heads of a kv head as the dot's N, padded to 16); 5 key groups over 1, 2 and 5
    # splits (one split empty at 4 groups of 2 steps); both operand orders give the reference
    b, h, hkv, t, d = 2, 8, 2, 86, 128
    k = randn(b, hkv, t, d, g=rng, dtype=torch.bfloat16, device=device)
    v = randn(b, hkv, t, d, g=rng, dtype=torch.bfloat16, device=device)
    q = randn(b, h, d, g=rng, dtype=torch.bfloat16, device=device)
    cache = quantize_kv(k, v, bits, k_group=16, v_group=64, n_sink=4)
    ref = kv_decode_reference(q, cache)
    for splits in (1, 2, 5):
        y = kv_decode(q, cache, num_splits=splits, tiles="left", out=poisoned(q.shape, q.dtype, device))
        assert rel_err(y, ref) < 2e-2
    assert rel_err(kv_decode(q, cache, tiles="right"), ref) < 2e-2
    with pytest.raises(ValueError, match="tiles must be"):
        kv_decode(q, cache, tiles="middle")


def test_full_precision_tokens_are_exact_and_quantization_error_shrinks_with_bits(device, rng):
    # a cache made only of sink tokens is unquantized: decode equals dense attention
    k = randn(1, 2, 40, 64, g=rng, dtype=torch.bfloat16, device=device)
    v = randn(1, 2, 40, 64, g=rng, dtype=torch.bfloat16, device=device)
    q = randn(1, 4, 64, g=rng, dtype=torch.bfloat16, device=device)
    dense = decode_reference_dense(q, k, v)
    assert rel_err(kv_decode(q, quantize_kv(k, v, 2, n_sink=40)), dense) < 2e-2
    err = {bits: rel_err(kv_decode_reference(q, quantize_kv(k, v, bits, 16, 32, 0)), dense) for bits in (2, 4)}
    assert err[4] < err[2] / 2


def test_rotation_preserves_scores_and_append_matches_bulk_quantization(device, rng):
    k = randn(1, 1, 64, 64, g=rng, dtype=torch.bfloat16, device=device)
    v = randn(1, 1, 64, 64, g=rng, dtype=torch.bfloat16, device=device)
    bulk = quantize_kv(k, v, 4, 16, 32, n_sink=4)
    grown = quantize_kv(k[:, :, :30], v[:, :, :30], 4, 16, 32, n_sink=4)
    grown.append(k[:, :, 30:], v[:, :, 30:])
    assert grown.n_tokens == bulk.n_tokens == 64 and grown.n_quantized == bulk.n_quantized
    kb, vb = dequantize_kv(bulk)
    kg, vg = dequantize_kv(grown)
    assert torch.equal(kb, kg) and torch.equal(vb, vg)


def test_detect_sink_tokens_finds_the_token_that_draws_attention(device, rng):
    k = randn(1, 2, 50, 64, g=rng, dtype=torch.float32, device=device)
    q = randn(1, 4, 8, 64, g=rng, dtype=torch.float32, device=device)
    k[:, :, 17] = q.mean(dim=(1, 2))[:, None] * 8  # token 17 aligns with every query
    assert 17 in detect_sink_tokens(q, k, count=2, exclude_first=1)


def test_bad_inputs(device):
    k = torch.zeros(1, 2, 32, 64, dtype=torch.bfloat16, device=device)
    with pytest.raises(ValueError, match="bits"):
        quantize_kv(k, k, bits=3)
    with pytest.raises(ValueError, match="k_group"):
        quantize_kv(k, k, k_group=24)
    with pytest.raises(ValueError, match="fp16 or bf16"):
        quantize_kv(k.float(), k.float())
    cache = quantize_kv(k, k, 2, 16, 32)
    with pytest.raises(ValueError, match="multiple of kv heads"):
        kv_decode(torch.zeros(1, 3, 64, dtype=torch.bfloat16, device=device), cache)
    q = torch.zeros(1, 2, 64, dtype=torch.bfloat16, device=device)
    with pytest.raises(ValueError, match="unpack"):
        kv_decode(q, cache, unpack="lut")
    with pytest.raises(ValueError, match="groups_per_step"):
        kv_decode(q, cache, groups_per_step=3)
