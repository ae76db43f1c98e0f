import dataclasses

import pytest
import torch

from simcim.kernels.analog_matmul import (
    AnalogConfig,
    AnalogLinear,
    AnalogWeights,
    analog_matmul,
    analog_matmul_reference,
    dac,
    program_weights,
)
from simcim.kernels.testing import poisoned, randn, rel_err

M, N, K = 37, 29, 100  # K spans 4 tiles of 32, the last one partial


def test_scales_are_simcims_per_column_tile_scales(rng):
    crossbar = pytest.importorskip("simcim.crossbar")
    w = randn(N, K, g=rng)
    aw = program_weights(w, AnalogConfig(tile_rows=32))
    ref = crossbar.tile_scales(w[None], crossbar.CrossbarConfig(tile_rows=32, tile_cols=N, scaling="column"))
    assert torch.equal(aw.scales, ref[0].t())


def test_deterministic_parts_match_the_reference_exactly(device, rng):
    cfg = AnalogConfig(tile_rows=32, dac_bits=8, adc_bits=8, adc_bound=8.0)
    aw = program_weights(randn(N, K, g=rng), cfg)
    aw.unit, aw.scales = aw.unit.to(device), aw.scales.to(device)
    x = randn(M, K, g=rng, device=device)
    x[3] = 0.0  # an all-zero row has no input range
    bias = randn(N, g=rng, device=device)
    out = poisoned((M, N), torch.float32, device)
    y = analog_matmul(x, aw, bias, out=out)
    ref = analog_matmul_reference(x, aw, bias)
    # fp32 summation order may move a value at an ADC step boundary by one step, in rare cases
    step = cfg.adc_bound / cfg.adc_levels * aw.scales.max() * x.abs().amax()
    differ = (y - ref).abs() > 1e-4 * ref.abs().max()
    assert differ.float().mean() < 0.01 and bool(((y - ref).abs() <= step * 1.01).all())
    assert torch.equal(y[3], bias)
    codes, _ = dac(x, cfg)
    assert codes.abs().max() <= cfg.dac_levels


@pytest.mark.parametrize("range_cfg", [dict(range_per_tile=True), dict(input_range="none", input_bound=2.0),
                                       dict(range_per_tile=True, input_bound=0.5)])
def test_input_range_policies_match_the_reference(device, rng, range_cfg):
    cfg = AnalogConfig(tile_rows=32, dac_bits=6, adc_bits=10, adc_bound=8.0, **range_cfg)
    aw = program_weights(randn(N, K, g=rng), cfg)
    aw.unit, aw.scales = aw.unit.to(device), aw.scales.to(device)
    x = randn(M, K, g=rng, device=device)
    x[:, 40:64] *= 20  # one tile with a much larger range than the others
    y, ref = analog_matmul(x, aw), analog_matmul_reference(x, aw)
    step = cfg.adc_bound / cfg.adc_levels * aw.scales.max() * x.abs().amax()
    differ = (y - ref).abs() > 1e-4 * ref.abs().max()
    assert differ.float().mean() < 0.01 and bool(((y - ref).abs() <= step * 1.01).all())
    codes, r = dac(x, cfg)
    assert codes.abs().max() <= cfg.dac_levels and r.shape == (M, aw.tiles)
    if cfg.range_per_tile:
        assert float(r[0, 1]) == pytest.approx(float(x[0, 32:64].abs().max()))


def test_simcim_analog_reference_and_kernel_agree_in_distribution(device, rng):
    """The model-level engines: ``simcim.analog.periphery.analog_mvm`` (fp32 unit weights) and the kernel
    (bf16 unit weights, Philox noise) on the same programmed array: the same mean output and noise std."""
    from simcim.analog.engines import kernel_mvm
    from simcim.analog.periphery import PeripheryConfig, analog_mvm

    w = randn(N, K, g=rng, device=device)
    aw = program_weights(w, AnalogConfig(tile_rows=32))
    unit, scales = aw.unit.float(), aw.scales
    x = randn(64, K, g=rng, device=device)
    quiet = PeripheryConfig(dac_bits=8, adc_bits=12, adc_bound=12.0)
    a = analog_mvm(x, unit, scales, quiet, 32)
    b = kernel_mvm(x, unit, scales, quiet, 32, None, torch.Generator(device=device).manual_seed(0), None)
    step = quiet.adc_bound / quiet.adc_levels * scales.max() * x.abs().amax()
    assert bool(((a - b).abs() <= aw.tiles * step).all())
    noisy = PeripheryConfig(dac_bits=8, adc_bits=12, adc_bound=12.0, read_sigma=0.05, out_noise=0.05)
    g = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**30, (1,), generator=rng)))
    da = torch.stack([analog_mvm(x, unit, scales, noisy, 32, generator=g) - a for _ in range(4)])
    db = torch.stack([kernel_mvm(x, unit, scales, noisy, 32, None, g, None) - b for _ in range(4)])
    n = da.numel()
    assert abs(float(da.std() / db.std()) - 1) < 4.5 * (1 / n) ** 0.5
    assert abs(float(da.mean() - db.mean())) < 4.5 * float(da.std()) * (2 / n) ** 0.5


def test_ideal_converters_recover_the_matmul(device, rng):
    cfg = AnalogConfig(tile_rows=64, dac_bits=9, adc_bits=24, adc_bound=64.0)
    w = randn(N, K, g=rng, device=device)
    x = randn(M, K, g=rng, dtype=torch.bfloat16, device=device)
    y = analog_matmul(x, program_weights(w, cfg))
    assert rel_err(y, x.double() @ w.double().t()) < 1.5e-2  # 9-bit DAC, bf16 unit weights


def test_read_noise_has_the_documented_distribution(device, rng):
    cfg = AnalogConfig(tile_rows=32, dac_bits=8, adc_bits=20, adc_bound=64.0, read_noise=0.05, out_noise=0.1)
    clean_cfg = AnalogConfig(tile_rows=32, dac_bits=8, adc_bits=20, adc_bound=64.0)
    w = randn(N, K, g=rng, device=device)
    x = randn(96, K, g=rng, device=device)
    aw = program_weights(w, cfg)
    clean = analog_matmul(x, program_weights(w, clean_cfg))
    codes, r = dac(x, cfg)
    pad = aw.tiles * 32 - K
    sq = (torch.nn.functional.pad(codes / cfg.dac_levels, (0, pad)).reshape(96, aw.tiles, 32) ** 2).sum(-1)
    var_t = cfg.read_noise**2 * sq + cfg.out_noise**2  # [M, T]
    std = ((var_t[..., None] * (aw.scales[None] * r[..., None]) ** 2).sum(1)).sqrt()
    seed = int(torch.randint(0, 2**20, (1,), generator=rng))
    z = (analog_matmul(x, aw, seed=seed) - clean) / std
    z_ref = (analog_matmul_reference(x, aw, generator=rng) - clean) / std
    for sample in (z, z_ref):  # 2784 draws: mean and std within 4.5 standard errors
        assert abs(float(sample.mean())) < 4.5 / 2784**0.5
        assert abs(float(sample.std()) - 1.0) < 4.5 / (2 * 2784) ** 0.5
    assert torch.equal(analog_matmul(x, aw, seed=seed), analog_matmul(x, aw, seed=seed))
    assert not torch.equal(analog_matmul(x, aw, seed=seed), analog_matmul(x, aw, seed=seed + 1))


def test_per_weight_read_variance_has_the_documented_distribution(device, rng):
    """The kernel's second product (codes^2 x per-weight variance) against the closed form, and the
    model-level reference (``simcim.analog``) against the kernel with the same variances."""
    from simcim.analog.engines import kernel_mvm
    from simcim.analog.periphery import PeripheryConfig, analog_mvm

    cfg = AnalogConfig(tile_rows=32, dac_bits=8, adc_bits=16, adc_bound=64.0, out_noise=0.05)
    w = randn(N, K, g=rng, device=device)
    x = randn(128, K, g=rng, device=device)
    var = (torch.rand(N, K, generator=rng) * 4e-3).to(device=device, dtype=torch.bfloat16)
    aw = program_weights(w, cfg)
    noisy = AnalogWeights(aw.unit, aw.scales, cfg, var)
    quiet = AnalogWeights(aw.unit, aw.scales, AnalogConfig(tile_rows=32, dac_bits=8, adc_bits=16, adc_bound=64.0))
    clean = analog_matmul(x, quiet)
    codes, r = dac(x, cfg)
    pad = aw.tiles * 32 - K
    c2 = (torch.nn.functional.pad(codes / cfg.dac_levels, (0, pad)).reshape(128, aw.tiles, 32)) ** 2
    v = torch.nn.functional.pad(var.float(), (0, pad)).reshape(N, aw.tiles, 32)
    var_t = torch.einsum("mtk,ntk->mtn", c2, v) + cfg.out_noise**2
    std = (var_t * (aw.scales[None] * r[..., None]) ** 2).sum(1).sqrt()
    seed = int(torch.randint(0, 2**20, (1,), generator=rng))
    for z in ((analog_matmul(x, noisy, seed=seed) - clean) / std,
              (analog_matmul_reference(x, noisy, generator=rng) - clean) / std):
        n = z.numel()
        assert abs(float(z.mean())) < 4.5 / n**0.5
        assert abs(float(z.std()) - 1.0) < 4.5 / (2 * n) ** 0.5
    periph = PeripheryConfig(dac_bits=8, adc_bits=16, adc_bound=64.0, out_noise=0.05, input_range="abs_max")
    g = torch.Generator(device=device).manual_seed(seed)
    unit = aw.unit.float()
    ref0 = analog_mvm(x, unit, aw.scales, dataclasses.replace(periph, out_noise=0.0), 32)
    da = torch.stack([analog_mvm(x, unit, aw.scales, periph, 32, read_var=var.float(), generator=g) - ref0
                      for _ in range(3)])
    db = torch.stack([kernel_mvm(x, unit, aw.scales, periph, 32, None, g, None, var.float()) - ref0
                      for _ in range(3)])
    assert abs(float(da.std() / db.std()) - 1) < 4.5 * (1 / da.numel()) ** 0.5 + 0.01


def test_grouped_launch_computes_each_groups_rows_on_its_own_matrix(device, rng):
    """One launch for several matrices (experts), rows sorted by group, some groups empty: the same as one
    launch per group, and the noise of every group has the documented std."""
    from simcim.kernels.analog_matmul import grouped_reference

    cfg = AnalogConfig(tile_rows=32, dac_bits=8, adc_bits=10, adc_bound=8.0, range_per_tile=True)
    counts = [5, 0, 40, 1, 0, 17]
    w = [randn(N, K, g=rng, device=device) * (1 + g) for g in range(len(counts))]  # different scales per group
    groups = [program_weights(wg, cfg) for wg in w]
    grouped = AnalogWeights(torch.stack([a.unit for a in groups]), torch.stack([a.scales for a in groups]), cfg)
    offsets = torch.tensor([0] + counts, device=device).cumsum(0).to(torch.int32)
    x = randn(sum(counts), K, g=rng, device=device)
    y = analog_matmul(x, grouped, offsets=offsets)
    step = cfg.adc_bound / cfg.adc_levels * grouped.scales.max() * x.abs().amax()
    bounds = offsets.tolist()
    for g, a in enumerate(groups):
        lo, hi = bounds[g], bounds[g + 1]
        if hi > lo:
            alone = analog_matmul(x[lo:hi], a)
            assert bool(((y[lo:hi] - alone).abs() <= step * 1.01).all()), g
            assert (y[lo:hi] - alone).abs().gt(1e-4 * alone.abs().max()).float().mean() < 0.02
    ref = grouped_reference(x, grouped, offsets)
    assert bool(((y - ref).abs() <= step * 1.01).all())
    noisy_cfg = dataclasses.replace(cfg, read_noise=0.05, out_noise=0.05)
    noisy = AnalogWeights(grouped.unit, grouped.scales, noisy_cfg)
    seed = int(torch.randint(0, 2**20, (1,), generator=rng))
    d = torch.cat([analog_matmul(x, noisy, seed=seed + i, offsets=offsets) - y for i in range(3)])
    d_ref = torch.cat([grouped_reference(x, noisy, offsets, rng) - ref for _ in range(3)])
    assert abs(float(d.std() / d_ref.std()) - 1) < 4.5 / d.numel() ** 0.5 * 2 ** 0.5 + 0.02
    with pytest.raises(ValueError, match="offsets"):
        analog_matmul(x, grouped)


def test_module_draws_fresh_noise_each_call(device, rng):
    lin = torch.nn.Linear(K, N).to(device)
    mod = AnalogLinear.from_linear(lin, AnalogConfig(tile_rows=32, read_noise=0.02), seed=5)
    x = randn(2, 3, K, g=rng, device=device)
    a, b = mod(x), mod(x)
    assert a.shape == (2, 3, N) and not torch.equal(a, b)
    assert rel_err(a, lin(x).detach()) < 0.1


def test_bad_config_and_inputs(device):
    with pytest.raises(ValueError, match="tile_rows"):
        AnalogConfig(tile_rows=48)
    with pytest.raises(ValueError, match="dac_bits"):
        AnalogConfig(dac_bits=12)
    with pytest.raises(ValueError, match="read_noise"):
        AnalogConfig(read_noise=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        program_weights(torch.full((4, 32), float("nan")), AnalogConfig(tile_rows=32))
    aw = program_weights(torch.randn(4, 32), AnalogConfig(tile_rows=32))
    with pytest.raises(ValueError, match="x must be"):
        analog_matmul(torch.randn(3, 16), aw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the PTX noise path runs on the GPU only")
def test_gpu_noise_is_box_muller_of_tritons_philox_words(rng):
    """The PTX path's four normals a call are Box-Muller of the words ``tl.randint4x`` gives for the same key and
    counter (so a wrong Philox round or constant changes every value), at MUFU precision."""
    triton = pytest.importorskip("triton")
    tl = triton.language
    from simcim.kernels.analog_matmul import add_normal_noise4

    @triton.jit
    def _draw(Out, W, key, counter, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        cnt = tl.full([BLOCK], 0, tl.int32) + counter  # every group of four takes the same counter
        # z varies, so the compiler cannot fold the call on uniform operands into one scalar call
        tl.store(Out + offs, add_normal_noise4(offs.to(tl.float32) * 0.25, 2.0, cnt, key))
        a, b, c, d = tl.randint4x(key, cnt)
        tl.store(W + offs * 4, a.to(tl.int32, bitcast=True))
        tl.store(W + offs * 4 + 1, b.to(tl.int32, bitcast=True))
        tl.store(W + offs * 4 + 2, c.to(tl.int32, bitcast=True))
        tl.store(W + offs * 4 + 3, d.to(tl.int32, bitcast=True))

    key, counter = (int(v) for v in torch.randint(0, 2**30, (2,), generator=rng))
    out = torch.empty(512, device="cuda")
    words = torch.empty(512 * 4, device="cuda", dtype=torch.int32)
    _draw[(1,)](out, words, key, counter, BLOCK=512, num_warps=4)
    u = words[:4].cpu().double()
    u = torch.where(u < 0, u + 2**32, u)
    top = torch.floor(u / 512)  # the top 23 bits, as the PTX takes them
    u1, u2 = 1.0 - top[[0, 2]] / 2**23, top[[1, 3]] / 2**23 * 2.0 - 1.0  # (0, 1] and [-1, 1)
    r = torch.sqrt(-2.0 * torch.log(u1))
    normals = torch.stack([r[0] * torch.cos(torch.pi * u2[0]), r[0] * torch.sin(torch.pi * u2[0]),
                           r[1] * torch.cos(torch.pi * u2[1]), r[1] * torch.sin(torch.pi * u2[1])])
    got = (out.cpu().double() - torch.arange(512, dtype=torch.float64) * 0.25) / 2.0
    err = (got[:, None] - normals[None, :]).abs()
    assert float(err.min(1).values.max()) < 2e-5  # every output is one of the four
    assert sorted(torch.bincount(err.argmin(1), minlength=4).tolist()) == [128] * 4  # each of the four a quarter


def test_stacked_experts_run_in_grouped_launches_and_match_the_per_expert_reference(tiny_models, monkeypatch):
    """On the kernel engine the analog forward computes each expert projection of a layer in one grouped launch
    (no per-expert F.linear), and the model's logits agree with the PyTorch engine's per-expert loop."""
    from simcim.analog import AnalogForward, PeripheryConfig
    from simcim.analog.model import AnalogForward as AF
    from simcim.crossbar import CrossbarConfig
    from simcim.models import load_model
    from simcim.noise_injection import restored
    from simcim.noise_models.presets import ideal
    from simcim.targets import find_targets

    model = load_model(str(tiny_models["olmoe"]), "cpu")
    targets = [t for t in find_targets(model) if t.role == "experts"]
    ids = torch.randint(0, 2048, (2, 12), generator=torch.Generator().manual_seed(3))
    periph = PeripheryConfig(dac_bits=8, adc_bits=10, adc_bound=8.0, read_sigma=0.0)
    grouped_calls = []
    real = AF.grouped_mvm
    monkeypatch.setattr(AF, "grouped_mvm", lambda self, *a: grouped_calls.append(1) or real(self, *a))
    out = {}
    for engine in ("torch", "triton"):
        with torch.no_grad(), restored(targets), AnalogForward(model, targets, ideal(), CrossbarConfig(tile_rows=16),
                                                                periph, seed=0, engine=engine):
            out[engine] = model(input_ids=ids).logits
    assert len(grouped_calls) == 2 * model.config.num_hidden_layers  # gate_up and down, once per layer
    assert rel_err(out["triton"], out["torch"]) < 2e-2  # bf16 unit weights on the kernel
