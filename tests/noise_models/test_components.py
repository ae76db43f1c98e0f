"""Each component draws from the distribution its formula says.

Tolerances are derived from the sample size: a sample mean is within Z standard errors
(sigma / sqrt(n)) of the truth and a sample standard deviation within Z * sigma / sqrt(2 n),
with Z = 5 (a false failure about once in 3.5 million runs); counts are within Z binomial sigmas.
"""

from __future__ import annotations

import math

import pytest
import torch

from simcim.noise_models.base import DeviceModel
from simcim.noise_models.drift import PowerLawDrift
from simcim.noise_models.faults import StuckAtFaults
from simcim.noise_models.gaussian import AdditiveGaussianNoise, MultiplicativeGaussianNoise
from simcim.noise_models.levels import FiniteLevels
from simcim.noise_models.presets import PCM_DRIFT, PCM_G_MAX_US, PCM_PROG_COEFFS, PCM_READ
from simcim.noise_models.programming import ProgrammingNoise
from simcim.noise_models.read import ReadNoise
from simcim.noise_models.relaxation import ConductanceRelaxation
from simcim.noise_models.variation import DeviceVariation

Z = 5.0
N = 200_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _model(*components, g_max: float = PCM_G_MAX_US) -> DeviceModel:
    return DeviceModel("test", g_max, tuple(components))


def assert_mean(sample: torch.Tensor, mean: float, sigma: float) -> None:
    tol = Z * sigma / math.sqrt(sample.numel())
    assert abs(float(sample.mean()) - mean) <= tol, (float(sample.mean()), mean, tol)


def assert_std(sample: torch.Tensor, sigma: float) -> None:
    tol = Z * sigma / math.sqrt(2 * sample.numel())
    assert abs(float(sample.std()) - sigma) <= tol, (float(sample.std()), sigma, tol)


@pytest.mark.parametrize("g_t", [2.0, 6.25, 12.5, 20.0, 25.0])
def test_programming_noise_mean_and_sigma_follow_polynomial(g_t: float) -> None:
    comp = ProgrammingNoise(PCM_PROG_COEFFS, g_ref=PCM_G_MAX_US)
    x = g_t / PCM_G_MAX_US
    sigma = sum(c * x ** i for i, c in enumerate(PCM_PROG_COEFFS))
    g = _model(comp).apply(torch.full((N,), g_t), _gen())
    assert_mean(g - g_t, 0.0, sigma)
    assert_std(g - g_t, sigma)


def test_programming_noise_rescales_to_another_g_max() -> None:
    comp = ProgrammingNoise(PCM_PROG_COEFFS, g_ref=25.0, scale=2.0)
    sigma = 2.0 * (50.0 / 25.0) * sum(PCM_PROG_COEFFS)  # x = 1 at g_max = 50
    g = _model(comp, g_max=50.0).apply(torch.full((N,), 50.0), _gen())
    assert_std(g - 50.0, sigma)


def test_drift_exponent_recovered_by_log_log_fit() -> None:
    drift = PowerLawDrift(**PCM_DRIFT)
    model = _model(drift)
    g_t = 12.5  # x = 0.5: mu_nu = clip(0.0351, 0.049, .) = 0.049, sigma_nu = clip(0.0028, 0.008, .) = 0.008
    mu, sigma = 0.049, 0.008
    target = torch.full((N,), g_t)
    times = [0.0, 60.0, 3600.0, 86400.0, 3.15e7]
    log_g = []
    for t in times:  # one chip followed through time: the same device generator for every read
        g = model.read(target, target, t, _gen(1), device_generator=_gen(7))
        log_g.append(torch.log(g / g_t))
    big_l = torch.tensor([math.log1p(t / drift.t0) for t in times])
    y = torch.stack(log_g)  # (times, devices)
    # least-squares slope through the origin per device: nu_i = -sum(L y_i) / sum(L^2)
    nu = -(big_l[:, None] * y).sum(0) / (big_l ** 2).sum()
    assert_mean(nu, mu, sigma)
    assert_std(nu, sigma)
    # and the population's mean log conductance falls on a line of slope -mu in log-log
    mean_y = y.mean(1)
    slope = float((big_l * mean_y).sum() / (big_l ** 2).sum())
    assert abs(slope + mu) <= Z * sigma / math.sqrt(N)


@pytest.mark.parametrize("g_t", [0.5, 5.0, 25.0])
def test_drift_statistics_follow_log_linear_clipped_formula(g_t: float) -> None:
    drift = PowerLawDrift(**PCM_DRIFT)
    x = g_t / PCM_G_MAX_US
    mu = min(max(-0.0155 * math.log(x) + 0.0244, 0.049), 0.1)
    sigma = min(max(-0.0125 * math.log(x) - 0.0059, 0.008), 0.045)
    nu = drift.sample_nu(torch.full((N,), g_t), PCM_G_MAX_US, _gen(3))
    # nu ~ |N(mu, sigma)|: the folded normal's mean and standard deviation
    phi = math.exp(-mu ** 2 / (2 * sigma ** 2)) / math.sqrt(2 * math.pi)
    mean = 2 * sigma * phi + mu * math.erf(mu / (sigma * math.sqrt(2)))
    sd = math.sqrt(mu ** 2 + sigma ** 2 - mean ** 2)
    assert_mean(nu, mean, sd)
    assert_std(nu, sd)


@pytest.mark.parametrize("t", [0.0, 3600.0, 3.15e7])
@pytest.mark.parametrize("g_t", [2.5, 25.0])
def test_read_noise_relative_sigma_grows_as_sqrt_log_time(t: float, g_t: float) -> None:
    read = ReadNoise(**PCM_READ)
    x = g_t / PCM_G_MAX_US
    q = min(0.0088 / max(x ** 0.65, 1e-3), 0.2)
    rel = q * math.sqrt(math.log((t + 20.0 + 250e-9) / (2 * 250e-9)))
    target = torch.full((N,), g_t)
    g = _model(read).read(target, target, t, _gen(4))
    assert_mean(g / g_t - 1, 0.0, rel)
    assert_std(g / g_t - 1, rel)


@pytest.mark.parametrize("p_on,p_off", [(0.01, 0.05), (0.0, 0.2), (0.3, 0.0)])
def test_stuck_at_fault_rates_within_binomial_bounds(p_on: float, p_off: float) -> None:
    g = _model(StuckAtFaults(p_on=p_on, p_off=p_off)).apply(torch.full((N,), 10.0), _gen(5))
    for value, p in ((PCM_G_MAX_US, p_on), (0.0, p_off)):
        k = int((g == value).sum())
        assert abs(k - N * p) <= Z * math.sqrt(N * p * (1 - p)) + 1e-9, (value, k, N * p)
    assert int((g == 10.0).sum()) + int((g == PCM_G_MAX_US).sum()) + int((g == 0.0).sum()) == N


def test_finite_levels_round_to_nearest_of_two_to_the_bits() -> None:
    bits, g_min = 3, 1.0
    target = torch.linspace(0.0, PCM_G_MAX_US, 1001)
    g = _model(FiniteLevels(bits, g_min=g_min)).apply(target, _gen())
    step = (PCM_G_MAX_US - g_min) / (2 ** bits - 1)
    levels = torch.tensor([g_min + i * step for i in range(2 ** bits)])
    assert torch.isin(g, levels.to(g.dtype)).all() or torch.allclose(
        g, levels[torch.argmin((g[:, None] - levels[None]).abs(), 1)], atol=1e-5)
    assert int(torch.unique(g).numel()) == 2 ** bits
    inside = target >= g_min
    assert float((g[inside] - target[inside]).abs().max()) <= step / 2 + 1e-5


def test_device_variation_is_lognormal_with_median_one() -> None:
    g = _model(DeviceVariation(0.1)).apply(torch.full((N,), 10.0), _gen(6))
    log_ratio = torch.log(g / 10.0)
    assert_mean(log_ratio, 0.0, 0.1)
    assert_std(log_ratio, 0.1)


def test_additive_and_multiplicative_gaussian() -> None:
    g = _model(AdditiveGaussianNoise(0.02)).apply(torch.full((N,), 3.0), _gen(8))
    assert_mean(g - 3.0, 0.0, 0.02 * PCM_G_MAX_US)
    assert_std(g - 3.0, 0.02 * PCM_G_MAX_US)
    g = _model(MultiplicativeGaussianNoise(0.05)).apply(torch.full((N,), 3.0), _gen(9))
    assert_mean(g / 3.0 - 1, 0.0, 0.05)
    assert_std(g / 3.0 - 1, 0.05)


def test_relaxation_total_spread_matches_each_measured_time() -> None:
    coeffs = ((0.5, 1.0), (0.8, 2.0), (1.0, 2.5))
    times = (1.0, 100.0, 10000.0)
    model = _model(ProgrammingNoise(coeffs[0], g_ref=PCM_G_MAX_US),
                   ConductanceRelaxation(times, coeffs, g_ref=PCM_G_MAX_US))
    g_t, x = 20.0, 20.0 / PCM_G_MAX_US
    for t, c in [(100.0, coeffs[1]), (1e6, coeffs[2])]:
        g = model.apply(torch.full((N,), g_t), _gen(10), t)
        assert_std(g - g_t, c[0] + c[1] * x)
    # halfway in ln t between 1 s and 100 s the spread is the average of the two
    g = model.apply(torch.full((N,), g_t), _gen(11), 10.0)
    assert_std(g - g_t, 0.5 * (0.5 + 1.0 * x) + 0.5 * (0.8 + 2.0 * x))


def test_chunking_and_in_place_give_identical_results() -> None:
    from simcim.noise_models.presets import device_model

    model = device_model("pcm", 1.0)
    target = torch.rand(10_001, generator=_gen(12)) * PCM_G_MAX_US
    a = model.apply(target, _gen(13), 3600.0, chunk_elems=1000)
    b = target.clone()
    model.apply(b, _gen(13), 3600.0, out=b, chunk_elems=1000)
    assert torch.equal(a, b)
    c = model.apply(target, _gen(13), 3600.0, chunk_elems=1000)
    assert torch.equal(a, c)
    d = model.apply(target, _gen(14), 3600.0, chunk_elems=1000)
    assert not torch.equal(a, d)


def test_bfloat16_storage_is_computed_in_float32() -> None:
    from simcim.noise_models.presets import device_model

    target = torch.full((N,), 12.5, dtype=torch.bfloat16)
    g = device_model("pcm_programming", 1.0).apply(target, _gen(15))
    assert g.dtype == torch.bfloat16
    sigma = sum(c * 0.5 ** i for i, c in enumerate(PCM_PROG_COEFFS))
    # bf16 rounding (step 0.0625 at 12.5) adds variance step^2 / 12
    assert_std(g.float() - 12.5, math.sqrt(sigma ** 2 + 0.0625 ** 2 / 12))
