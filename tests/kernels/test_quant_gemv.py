import pytest
import torch

from kernels.quant_gemv import (
    QuantizedLinear,
    dequantize,
    pack_codes,
    quant_matmul,
    quant_matmul_reference,
    quantize_groupwise,
    quantize_ternary,
    replace_linear,
    unpack_codes,
)
from kernels.testing import poisoned, randn, rel_err


def _quantize(w, scheme, group):
    if scheme == "ternary":
        return quantize_ternary(w, 2, group, torch.bfloat16)
    return quantize_groupwise(w, 4 if scheme == "int4" else 2, group, torch.bfloat16)


@pytest.mark.parametrize("bits", [2, 4])
def test_pack_roundtrip(bits, rng):
    codes = torch.randint(0, 1 << bits, (5, 96), generator=rng, dtype=torch.int64).to(torch.uint8)
    assert torch.equal(unpack_codes(pack_codes(codes, bits), bits), codes)


@pytest.mark.parametrize(
    "scheme,m", [("int4", 1), ("int4", 3), ("int4", 17), ("int2", 1), ("int2", 5), ("ternary", 1), ("ternary", 3)]
)
def test_quant_matmul_matches_dequantized_product(scheme, m, device, rng):
    n, k, group = 37, 96, 32
    qw = _quantize(randn(n, k, g=rng), scheme, group).to(device)
    x = randn(m, k, g=rng, dtype=torch.bfloat16, device=device)
    bias = randn(n, g=rng, dtype=torch.bfloat16, device=device)
    out = poisoned((m, n), torch.bfloat16, device)
    y = quant_matmul(x, qw, bias, out=out)
    exact = x.double() @ dequantize(qw, torch.float64).t() + bias.double()
    assert rel_err(y, exact) < 1e-2
    assert rel_err(quant_matmul_reference(x, qw, bias), exact) < 1e-2
    if m == 1:  # the batched decode kernel computes the same product for one row
        y = quant_matmul(x, qw, bias, config=(1, 16, 8, 4, 1), gemv="slices", out=poisoned((m, n), x.dtype, device))
        assert rel_err(y, exact) < 1e-2
    if m == 1:  # the paired unpacking (plain Triton, and inline PTX on a GPU) computes the same product
        for unpack in ("int", "asm"):
            y = quant_matmul(x, qw, bias, unpack=unpack, out=poisoned((m, n), x.dtype, device))
            assert rel_err(y, exact) < 1e-2
    if m == 1:  # split-K partial sums (3 groups over 2 splits: one split gets a single group)
        y = quant_matmul(x, qw, bias, config=(1, 16, 2, 4, 1), out=poisoned((m, n), x.dtype, device))
        assert rel_err(y, exact) < 1e-2
    if m == 3:  # the tensor-core kernel serves small batches too
        y = quant_matmul(x, qw, bias, gemv="dot", out=poisoned((m, n), x.dtype, device))
        assert rel_err(y, exact) < 1e-2


def test_quantization_error_is_what_the_format_allows(rng):
    w = randn(64, 256, g=rng)
    err = {s: rel_err(dequantize(_quantize(w, s, 64)), w) for s in ("int4", "int2", "ternary")}
    # gaussian weights: int4 ~8%, two trit-planes ~20%, int2 ~40% relative error
    assert err["int4"] < 0.12 < err["ternary"] < 0.3 < err["int2"] < 0.5


def test_quantized_linear_replaces_linear_in_a_model(device, rng):
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=rng)))
    model = torch.nn.Sequential(torch.nn.Linear(128, 48), torch.nn.GELU(), torch.nn.Linear(48, 16)).to(device)
    x = randn(2, 3, 128, g=rng, device=device)
    before = model(x)
    assert replace_linear(model, "int4", group_size=16) == 2
    assert isinstance(model[0], QuantizedLinear) and isinstance(model[2], QuantizedLinear)
    after = model(x)
    assert after.shape == before.shape and after.dtype == before.dtype
    assert rel_err(after, before) < 0.15


def test_bad_inputs(device, rng):
    with pytest.raises(ValueError, match="multiple of group_size"):
        quantize_groupwise(torch.randn(4, 40), 4, 32)
    with pytest.raises(ValueError, match="group_size"):
        quantize_groupwise(torch.randn(4, 48), 4, 24)
    with pytest.raises(ValueError, match="NaN"):
        quantize_ternary(torch.full((4, 32), float("nan")), 2, 16)
    qw = quantize_groupwise(torch.randn(8, 64), 4, 32).to(device)
    with pytest.raises(ValueError, match="x must be"):
        quant_matmul(torch.randn(2, 32, device=device), qw)
    with pytest.raises(ValueError, match="unpack must be one of"):
        quant_matmul(torch.randn(1, 64, device=device), qw, unpack="half2")
