"""Each periphery effect of the analog product against a case whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from simcim.analog.periphery import Counters, PeripheryConfig, analog_mvm, ir_drop_weights

IDEAL = dict(dac_bits=16, adc_bits=16, adc_bound=32.0)  # a 32-row tile cannot exceed 32 unit products


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def unit_and_scales(w: torch.Tensor, tile_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tile-column scale (max |w|) and unit weights, as the crossbar mapping makes them."""
    n, k = w.shape
    t = -(-k // tile_rows)
    wt = torch.nn.functional.pad(w, (0, t * tile_rows - k)).reshape(n, t, tile_rows)
    s = wt.abs().amax(-1)
    u = (wt / s[..., None]).reshape(n, -1)[:, :k]
    return u, s.t().contiguous()


def test_ideal_converters_and_no_noise_reproduce_the_digital_product():
    torch.manual_seed(0)
    w, x, b = torch.randn(24, 100), torch.randn(17, 100) * 3, torch.randn(24)
    u, s = unit_and_scales(w, 32)
    cfg = PeripheryConfig(**IDEAL)
    y = analog_mvm(x, u, s, cfg, 32, bias=b)
    ref = x.double() @ w.double().t() + b.double()
    # what 16-bit converters cannot resolve: half a DAC step on every input, half an ADC step per tile output
    r = torch.nn.functional.pad(x, (0, 28)).reshape(17, 4, 32).abs().amax(-1).double()
    per_tile = cfg.adc_bound / cfg.adc_levels / 2 + 32 * cfg.input_bound / cfg.dac_levels / 2
    bound = (r[..., None] * s.double()[None] * per_tile).sum(1)
    assert bool(((y - ref).abs() <= bound + 1e-5 * ref.abs()).all())
    assert float((y - ref).abs().max() / ref.abs().max()) < 5e-4  # 16 bits: float32 is not the limit


def test_adc_saturation_clips_exactly_at_the_bound_per_tile():
    # 64 inputs on two tiles of 32; every weight and input 1: each tile's column current is 32 > bound 10,
    # so each tile reads exactly 10 and the digital sum is 20 (not 64, and not 10: partial sums per tile)
    u, s = torch.ones(3, 64), torch.ones(2, 3)
    counters = Counters()
    y = analog_mvm(torch.ones(2, 64), u, s, PeripheryConfig(adc_bits=8, adc_bound=10.0), 32, counters=counters)
    assert torch.equal(y, torch.full((2, 3), 20.0))
    assert counters.saturation_rate == 1.0 and counters.conversions == 2 * 2 * 3
    one_tile = analog_mvm(torch.ones(2, 64), torch.ones(3, 64), torch.ones(1, 3),
                          PeripheryConfig(adc_bits=8, adc_bound=10.0), 64)
    assert torch.equal(one_tile, torch.full((2, 3), 10.0))


def test_adc_rounds_to_its_levels():
    # 3-bit ADC: 3 levels per sign over [-6, 6], step 2; column current 2.9 reads 2, 3.1 reads 4
    cfg = PeripheryConfig(dac_bits=16, adc_bits=3, adc_bound=6.0, input_range="none", input_bound=8.0)
    u, s = torch.ones(1, 1), torch.ones(1, 1)
    got = analog_mvm(torch.tensor([[2.9], [3.1], [-7.5]]), u, s, cfg, 16)
    assert torch.allclose(got[:, 0], torch.tensor([2.0, 4.0, -6.0]), atol=1e-3)


def test_dac_levels_input_bound_and_abs_max_range_per_tile():
    u, s = torch.eye(4), torch.ones(2, 4)  # tiles of 2 inputs; output n reads input n
    x = torch.tensor([[1.0, 0.4, 10.0, -6.0]])
    # 2-bit DAC: one level per sign; abs-max per tile: tile 0 range 1 -> [1, 0], tile 1 range 10 -> [10, -10]
    y = analog_mvm(x, u, s, PeripheryConfig(dac_bits=2, adc_bits=16, adc_bound=4.0), 2)
    assert torch.allclose(y, torch.tensor([[1.0, 0.0, 10.0, -10.0]]), atol=1e-3)
    # no input range: inputs clip at input_bound = 2 and round to steps of 2/3 (3-bit DAC)
    cfg = PeripheryConfig(dac_bits=3, input_range="none", input_bound=2.0, adc_bits=16, adc_bound=4.0)
    y = analog_mvm(x, u, s, cfg, 2)
    assert torch.allclose(y, torch.tensor([[4 / 3, 2 / 3, 2.0, -2.0]]), atol=1e-3)


def test_one_bit_converters_are_sign_converters():
    cfg = PeripheryConfig(dac_bits=1, adc_bits=1, adc_bound=3.0, input_range="none")
    y = analog_mvm(torch.tensor([[0.2, -0.7], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                   torch.ones(1, 2), cfg, 2)
    assert torch.equal(y, torch.tensor([[3.0, -3.0], [0.0, 0.0]]))


def test_ir_drop_matches_aihwkits_first_order_formula_and_grows_with_input():
    k = 4
    cfg = PeripheryConfig(input_range="none", input_bound=8.0, ir_drop=1.0, wire_resistance=1000.0, g_max=25.0,
                          **IDEAL)
    g_ratio = 1 / (1000.0 * 25e-6)  # 40
    u, s = torch.ones(1, k), torch.ones(1, 1)
    half_step = cfg.adc_bound / cfg.adc_levels / 2 + 1e-6  # the 16-bit ADC's rounding
    for v in (0.5, 1.0, 2.0):
        y = float(analog_mvm(torch.full((1, k), v), u, s, cfg, k)[0, 0])
        a = k * v * k / g_ratio  # total current sum |u||v| = 4 v, times n / g_ratio
        c = a * (a * (0.05 * a - 0.2) + 0.5)
        share = sum(1 - (1 - j / k) ** 2 for j in range(k))  # 2.125
        assert math.isclose(y, k * v - c * v * share, abs_tol=half_step)
    rel = [1 - float(analog_mvm(torch.full((1, k), v), u, s, cfg, k)[0, 0]) / (k * v) for v in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in zip(rel, rel[1:])) and rel[0] > 0  # the relative drop grows with input current


def test_ir_drop_row_weights_on_a_partial_tile():
    w = ir_drop_weights(6, 4, torch.device("cpu"))  # tiles of 4 rows: one full, one with 2 used rows
    assert torch.allclose(w[0], torch.tensor([0.0, 1 - 0.75**2, 0.75, 1 - 0.25**2]))
    assert torch.allclose(w[1], torch.tensor([0.0, 0.75, 0.0, 0.0]))


@pytest.mark.parametrize("device_var", [False, True])
def test_read_noise_is_redrawn_every_product_with_the_documented_std(device_var):
    torch.manual_seed(1)
    n, k, m = 16, 64, 400
    w, x = torch.randn(n, k), torch.randn(m, k)
    u, s = unit_and_scales(w, 32)
    var = torch.rand(n, k) * 1e-3 if device_var else None
    sigma = None if device_var else 0.02
    cfg = PeripheryConfig(**IDEAL, read_sigma=sigma, out_noise=0.01)
    clean = analog_mvm(x, u, s, PeripheryConfig(**IDEAL), 32)
    a = analog_mvm(x, u, s, cfg, 32, read_var=var, generator=gen(1))
    b = analog_mvm(x, u, s, cfg, 32, read_var=var, generator=gen(2))
    r = x.reshape(m, 2, 32).abs().amax(-1)  # [M, T]
    v2 = (x.reshape(m, 2, 32) / r[..., None]) ** 2
    per_weight = var.reshape(n, 2, 32) if device_var else torch.full((n, 2, 32), sigma**2)
    var_t = torch.einsum("mtk,ntk->mtn", v2, per_weight) + 0.01**2
    std = (var_t * (r[..., None] * s[None]) ** 2).sum(1).sqrt()
    z = ((a - clean) / std).flatten()
    assert abs(float(z.mean())) < 4.5 / z.numel() ** 0.5
    assert abs(float(z.std()) - 1) < 4.5 / (2 * z.numel()) ** 0.5
    assert not torch.equal(a, b)


def test_iterative_bound_management_rescales_until_the_adc_fits():
    u, s = torch.ones(1, 32), torch.ones(1, 1)
    x = torch.ones(1, 32)
    base = dict(adc_bits=16, adc_bound=10.0, dac_bits=16)
    clipped = analog_mvm(x, u, s, PeripheryConfig(**base), 32)
    counters = Counters()
    managed = analog_mvm(x, u, s, PeripheryConfig(**base, bound_management="iterative"), 32, counters=counters)
    assert float(clipped) == pytest.approx(10.0, abs=1e-3)
    # inputs / 2 -> 16 still saturates, / 4 -> 8 fits: 8 x 4 = 32, the ideal value, after two extra rounds
    assert float(managed) == pytest.approx(32.0, abs=1e-2) and counters.bm_rounds == 2
    assert counters.saturated == 0


@pytest.mark.parametrize("field,value,match", [
    ("dac_bits", 0, "dac_bits must be an integer from 1 to 16"),
    ("adc_bits", 17, "adc_bits must be an integer from 1 to 16"),
    ("adc_bound", 0.0, "adc_bound must be a finite number > 0"),
    ("input_bound", -1.0, "input_bound must be a finite number > 0"),
    ("ir_drop", -0.5, "ir_drop must be a finite number >= 0"),
    ("input_range", "max", "input_range 'max'"),
])
def test_bad_settings_name_the_parameter(field, value, match):
    with pytest.raises(ValueError, match=match):
        PeripheryConfig(**{field: value})
