import pytest
import torch

from simcim.kernels import launch, quant_gemv
from simcim.kernels.launch import GemvM1Config, TensorCoreConfig
from simcim.kernels.quant_gemv import (
    QuantConfig,
    QuantizedLinear,
    dequantize,
    pack_codes,
    quant_matmul,
    quant_matmul_reference,
    quantize,
    quantize_groupwise,
    quantize_ternary,
    replace_linear,
    unpack_codes,
)
from simcim.kernels.testing import poisoned, randn, rel_err


def _quantize(w, scheme, group):
    return quantize(w, QuantConfig(scheme, group, dtype=torch.bfloat16))


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
    if m == 1:  # the paired unpacking (plain Triton, and inline PTX on a GPU): each q * s is rounded to 16 bits
        # before the zero term comes off, so a weight near its zero point keeps less precision (worst 1.5% over
        # 60 seeds at this shape, against 0.5% for the fp32 path)
        for unpack in ("int", "asm"):
            y = quant_matmul(x, qw, bias, unpack=unpack, out=poisoned((m, n), x.dtype, device))
            assert rel_err(y, exact) < 3e-2
    if m == 1:  # fp16x2 accumulation per word, one group and two groups per step (3 groups: a half step)
        for cfg in (None, (2, 16, 2, 4, 1), (2, 32, 1, 4, 1)):
            y = quant_matmul(x, qw, bias, config=cfg, unpack="f16acc", out=poisoned((m, n), x.dtype, device))
            assert rel_err(y, exact) < 1e-2
    if m == 1:  # split-K partial sums (3 groups over 2 splits: one split gets a single group)
        y = quant_matmul(x, qw, bias, config=(1, 16, 2, 4, 1), out=poisoned((m, n), x.dtype, device))
        assert rel_err(y, exact) < 1e-2
    if m == 3:  # the tensor-core kernel serves small batches too
        y = quant_matmul(x, qw, bias, gemv="dot", out=poisoned((m, n), x.dtype, device))
        assert rel_err(y, exact) < 1e-2


def test_split_k_in_one_launch_is_deterministic_and_leaves_its_counts_zero(device, rng):
    # 13 row blocks of 16; 8 groups over 4 and 3 splits: the last program of each block sums the partials in split
    # order, so a repeated call is bit-identical, and it resets the block's arrival count for the next call
    n, k, group = 200, 256, 32
    qw = _quantize(randn(n, k, g=rng), "int4", group).to(device)
    x = randn(1, k, g=rng, dtype=torch.bfloat16, device=device)
    bias = randn(n, g=rng, dtype=torch.bfloat16, device=device)
    exact = x.double() @ dequantize(qw, torch.float64).t() + bias.double()
    for cfg, unpack in (((1, 16, 4, 4, 1), "fp32"), ((1, 16, 3, 4, 1), "fp32"), ((2, 16, 4, 4, 1), "f16acc")):
        first = quant_matmul(x, qw, bias, config=cfg, unpack=unpack, out=poisoned((1, n), x.dtype, device))
        again = quant_matmul(x, qw, bias, config=cfg, unpack=unpack, out=poisoned((1, n), x.dtype, device))
        assert rel_err(first, exact) < 1e-2 and torch.equal(first, again)
    assert int(quant_gemv._split_counts(x.device, 1).abs().sum()) == 0


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


@pytest.mark.parametrize("scheme", ["int4", "int2", "ternary"])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 3e4, 1e30])
def test_f16acc_keeps_range_and_precision(scheme, scale, device, rng):
    # x is scaled to fp16 per group by a power of two: inputs far outside fp16's range (and fp32 activations)
    # give the fp32 path's accuracy, with one large input per group and one group of zeros
    n, k, group = 24, 256, 64
    qw = _quantize(randn(n, k, g=rng), scheme, group).to(device)
    x = randn(1, k, g=rng, device=device) * scale
    x[0, 3] *= 50.0
    x[0, group : 2 * group] = 0.0
    exact = x.double() @ dequantize(qw, torch.float64).t()
    for cfg in (None, (2, 8, 2, 4, 1)):
        y = quant_matmul(x, qw, config=cfg, unpack="f16acc", out=poisoned((1, n), x.dtype, device))
        assert rel_err(y, exact) < 5e-3  # worst 1.9e-3 over 120 seeds; the fp32 path gives ~1e-6 here
    y16 = quant_matmul(x.to(torch.bfloat16), qw, unpack="f16acc", out=poisoned((1, n), torch.bfloat16, device))
    assert rel_err(y16, x.to(torch.bfloat16).double() @ dequantize(qw, torch.float64).t()) < 1e-2


def test_auto_unpack_switches_at_the_threshold(monkeypatch, device, rng):
    qw = _quantize(randn(32, 128, g=rng), "int4", 32).to(device)
    assert quant_gemv._m1_unpack("auto", qw) == "fp32"
    assert quant_gemv._m1_unpack("asm", qw) == "asm"
    monkeypatch.setattr(quant_gemv, "F16ACC_MIN_WEIGHTS", 32 * 128)
    assert quant_gemv._m1_unpack("auto", qw) == "f16acc"
    x = randn(1, 128, g=rng, dtype=torch.bfloat16, device=device)
    exact = x.double() @ dequantize(qw, torch.float64).t()
    assert rel_err(quant_matmul(x, qw, out=poisoned((1, 32), x.dtype, device)), exact) < 1e-2


def test_bench_sizes_times_both_m1_paths_beside_bf16():
    from simcim.kernels import bench

    rows = [r for r in bench.run(["quant_gemv_sizes"], tiny=True) if r.kernel == "quant_gemv"]
    assert {r.impl for r in rows} == {"bf16 F.linear", "triton int4 m1:fp32", "triton int4 m1:f16acc"}
    for r in rows:
        assert r.baseline == "bf16 F.linear" and r.ratio_to_baseline > 0
        if r.impl != "bf16 F.linear":
            assert r.rel_err < 1e-2


@pytest.mark.parametrize("scheme", ["int4", "int2", "ternary"])
@pytest.mark.parametrize("m", [3, 16])
def test_tensor_core_kernel_for_small_batches(scheme, m, device, rng):
    # K = 384: three groups of 128, so a two-group step ends half outside K; N = 40 leaves a partial row block;
    # split-K 1, 2 and 3 ways, the sum made in the same launch
    n, k, group = 40, 384, 128
    qw = _quantize(randn(n, k, g=rng), scheme, group).to(device)
    x = randn(m, k, g=rng, dtype=torch.bfloat16, device=device)
    bias = randn(n, g=rng, dtype=torch.bfloat16, device=device)
    exact = x.double() @ dequantize(qw, torch.float64).t() + bias.double()
    for cfg in (None, TensorCoreConfig(16, 256, 1, 4, 1), (32, 256, 2, 4, 1), (16, 128, 3, 4, 1)):
        y = quant_matmul(x, qw, bias, config=cfg, gemv="tc", out=poisoned((m, n), x.dtype, device))
        assert rel_err(y, exact) < 1e-2
    assert int(quant_gemv._split_counts(x.device, 1).abs().sum()) == 0
    # fp16 activations, no bias, through the default dispatch
    xh = x.to(torch.float16)
    y = quant_matmul(xh, qw, out=poisoned((m, n), xh.dtype, device))
    assert rel_err(y, xh.double() @ dequantize(qw, torch.float64).t()) < 1e-2


def test_dispatcher_picks_the_tensor_core_kernel_for_2_to_16_rows(monkeypatch, device, rng):
    qw = _quantize(randn(16, 128, g=rng), "int4", 64).to(device)
    picked = []
    monkeypatch.setattr(quant_gemv, "launch_tc", lambda *a: picked.append("tc"))
    monkeypatch.setattr(quant_gemv, "launch_slices", lambda *a: picked.append("slices"))
    monkeypatch.setattr(quant_gemv, "launch_dot", lambda *a: picked.append("dot"))
    monkeypatch.setattr(quant_gemv, "_launch_m1", lambda *a: picked.append("m1"))
    for m, dtype in ((1, torch.bfloat16), (2, torch.bfloat16), (16, torch.float16), (17, torch.bfloat16),
                     (4, torch.float32), (9, torch.float32)):
        quant_matmul(torch.zeros(m, 128, dtype=dtype, device=device), qw)
    assert picked == ["m1", "tc", "tc", "dot", "slices", "dot"]


def test_every_launch_default_is_a_config_of_its_kind():
    kinds = {"gemv_m1": GemvM1Config, "gemv_slices": launch.SlicesConfig, "gemm_dot": launch.DotConfig,
             "gemm_tc": TensorCoreConfig, "attention": launch.AttentionConfig, "kv_decode": launch.KVDecodeConfig,
             "gather": launch.GatherConfig}
    tables = launch._tables()
    assert {"default", "interpreter"} <= set(tables)
    for name, table in tables.items():
        for entry in table:
            kind = next(k for prefix, k in kinds.items() if entry.startswith(prefix))
            assert isinstance(launch.default(kind, entry, table=name), kind)


def test_launch_configs_are_named_and_read_from_the_device_table(device):
    cfg = launch.default(GemvM1Config, "gemv_m1_f16acc_int4", table="default")
    assert isinstance(cfg, GemvM1Config) and cfg == quant_gemv.F16ACC_CONFIG["int4"] == (2, 64, 4, 2, 1)
    small = quant_gemv.m1_config(_quantize(torch.randn(64, 128), "int4", 32), "f16acc", device)
    assert small == (launch.default(GemvM1Config, "gemv_m1_f16acc_int4", table="interpreter") if device == "cpu"
                     else launch.default(GemvM1Config, "gemv_m1_f16acc_int4", device))
    assert launch.device_table("cpu") == ("interpreter" if launch.interpreting() else "default")
    assert launch.as_config(TensorCoreConfig, (16, 64, 2, 4, 1)).split_k == 2
    with pytest.raises(ValueError, match="config must be a TensorCoreConfig"):
        launch.as_config(TensorCoreConfig, (16, 64))
    qw = _quantize(torch.randn(16, 128), "int4", 64).to(device)
    with pytest.raises(ValueError, match="block_k must be a power of two"):
        quant_matmul(torch.zeros(2, 128, dtype=torch.bfloat16, device=device), qw, config=(16, 32, 1, 4, 1), gemv="tc")
    with pytest.raises(ValueError, match="M <= 16"):
        quant_matmul(torch.zeros(17, 128, dtype=torch.bfloat16, device=device), qw, gemv="tc")


def test_one_scheme_registry_serves_quantize_and_from_linear(rng):
    lin = torch.nn.Linear(64, 8)
    for scheme in ("int4", "int2", "ternary"):
        cfg = QuantConfig(scheme, 32, planes=3)
        ql = QuantizedLinear.from_linear(lin, cfg)
        qw = quantize(lin.weight.detach(), cfg)
        assert ql.scheme == qw.scheme == scheme and torch.equal(ql.packed, qw.packed)
    assert quantize(lin.weight.detach(), QuantConfig("ternary", 32, planes=3)).planes == 3
    with pytest.raises(ValueError, match="scheme must be one of"):
        QuantConfig("int3")
    with pytest.raises(ValueError, match="planes must be"):
        QuantConfig("ternary", planes=5)
    with pytest.raises(ValueError, match="group_size must be a power of two"):
        QuantConfig("int4", 48)
