"""Named device models, each citing where its numbers come from.

``device_model(name, level)`` builds one. ``level`` is a scale each preset documents (for the
measured-chip presets, a multiplier on the measured noise, 1.0 being the chip). A name ending in
``.json`` loads a model written by ``simcim.noise_models.calibrate(...).save(path)``, with ``level``
multiplying its noise the same way as for the ``pcm`` preset.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from simcim.noise_models.base import DeviceModel
from simcim.noise_models.drift import PowerLawDrift
from simcim.noise_models.faults import StuckAtFaults
from simcim.noise_models.gaussian import AdditiveGaussianNoise, MultiplicativeGaussianNoise
from simcim.noise_models.programming import ProgrammingNoise
from simcim.noise_models.read import ReadNoise
from simcim.noise_models.relaxation import ConductanceRelaxation
from simcim.noise_models.variation import DeviceVariation

# ---- IBM PCM statistical model -------------------------------------------------------------------
# Nandakumar et al., "Phase-change memory models for deep learning training and inference",
# ICECS 2019 (statistics of a 1M-device PCM array), used for inference by Joshi et al., "Accurate deep
# neural network inference using computational phase-change memory", Nat. Commun. 11, 2473 (2020),
# and implemented with these same coefficients by aihwkit's PCMLikeNoiseModel.
PCM_G_MAX_US = 25.0
# programming noise: sigma [uS] = 0.26348 + 1.9650 x - 1.1731 x^2, x = G_T / 25 uS
PCM_PROG_COEFFS = (0.26348, 1.9650, -1.1731)
# drift exponent: mu_nu = clip(-0.0155 ln x + 0.0244, 0.049, 0.1); sigma_nu = clip(-0.0125 ln x - 0.0059,
# 0.008, 0.045); first read t0 = 20 s
PCM_DRIFT = dict(mu_slope=-0.0155, mu_offset=0.0244, mu_min=0.049, mu_max=0.1,
                 sigma_slope=-0.0125, sigma_offset=-0.0059, sigma_min=0.008, sigma_max=0.045, t0=20.0)
# 1/f read noise: Q = min(0.0088 / max(x^0.65, 1e-3), 0.2), t_read = 250 ns
PCM_READ = dict(q_coeff=0.0088, q_exp=0.65, q_max=0.2, q_floor=1e-3, t_read=250e-9, t0=20.0)

# ---- RRAM: Wan et al., "A compute-in-memory chip based on resistive random-access memory",
# Nature 608, 504-512 (2022) (the NeuRRAM chip). The spread of conductance around its target after
# write-verify, measured at 1 s, 1 day and 2 days, as 4th-order polynomials in x = G_T / 40 uS (uS),
# fitted to the paper's relaxation figures by aihwkit's ReRamWan2022NoiseModel (coefficients from
# aihwkit; the paper gives the data as figures, not as coefficients).
RRAM_G_MAX_US = 40.0
RRAM_TIMES_S = (1.0, 86400.0, 172800.0)
RRAM_SIGMA_COEFFS = (
    (0.348, 16.030, -43.853, 45.393, -16.815),   # 1 s
    (0.701, 22.086, -50.773, 47.095, -16.458),   # 1 day
    (0.782, 20.274, -43.507, 37.062, -11.934),   # 2 days
)


def ideal() -> DeviceModel:
    """A perfect device: every conductance reads exactly as programmed."""
    return DeviceModel(name="ideal", g_max=PCM_G_MAX_US, components=(),
                       description="no noise, no drift, no faults")


def gaussian(level: float, devices_per_weight: int = 2) -> DeviceModel:
    """Additive Gaussian weight noise with sigma = ``level`` x the column's max |w|.

    Each of the ``devices_per_weight`` devices gets sigma level / sqrt(n) relative to
    g_max, so the weight they encode together has sigma ``level`` x max |w|.
    """
    per_device = level / devices_per_weight ** 0.5
    return DeviceModel(name="gaussian", g_max=PCM_G_MAX_US,
                       components=(AdditiveGaussianNoise(per_device),),
                       description=f"additive Gaussian, weight sigma {level:g} x max|w| per column")


def pcm_programming(scale: float = 1.0) -> DeviceModel:
    """PCM programming noise only (Nandakumar et al. ICECS 2019, Fig. 3a; aihwkit PCMLikeNoiseModel).

    sigma(G_T) [uS] = 0.26348 + 1.9650 (G_T/g_max) - 1.1731 (G_T/g_max)^2 at g_max = 25 uS,
    multiplied by ``scale`` (1.0 is the measured chip).
    """
    return DeviceModel(name="pcm_programming", g_max=PCM_G_MAX_US,
                       components=(ProgrammingNoise(PCM_PROG_COEFFS, g_ref=PCM_G_MAX_US, scale=scale),),
                       description=f"PCM programming noise x{scale:g} (Nandakumar 2019)")


def pcm(level: float = 1.0) -> DeviceModel:
    """The full IBM PCM inference model: programming noise, drift, 1/f read noise.

    Source: Nandakumar et al., ICECS 2019 (PCM statistics measured on a 1M-device array), as used by
    Joshi et al., Nat. Commun. 11, 2473 (2020) and aihwkit's PCMLikeNoiseModel, g_max = 25 uS,
    x = G_T / g_max:

    - programming noise sigma_P = 0.26348 + 1.9650 x - 1.1731 x^2 uS (clipped at 0); G >= 0 after;
    - drift G(t) = G_P ((t + t0) / t0)^(-nu), t0 = 20 s, nu ~ |N(mu_nu, sigma_nu^2)| with
      mu_nu = clip(-0.0155 ln x + 0.0244, 0.049, 0.1) and
      sigma_nu = clip(-0.0125 ln x - 0.0059, 0.008, 0.045);
    - read noise sigma_R / |G| = Q sqrt(ln((t + t0 + t_read) / (2 t_read))), t_read = 250 ns,
      Q = min(0.0088 / max(x^0.65, 1e-3), 0.2).

    ``level`` multiplies the programming and read noise (aihwkit's prog_noise_scale and
    read_noise_scale); drift stays at its measured strength, since the time sweep and drift
    compensation are what explore it. level = 0 leaves pure drift.
    """
    return DeviceModel(
        name="pcm", g_max=PCM_G_MAX_US,
        components=(ProgrammingNoise(PCM_PROG_COEFFS, g_ref=PCM_G_MAX_US, scale=level),
                    PowerLawDrift(**PCM_DRIFT),
                    ReadNoise(**PCM_READ, scale=level)),
        description=f"IBM PCM (Nandakumar 2019 / Joshi 2020): programming x{level:g}, drift, "
                    f"1/f read x{level:g}")


def rram_wan2022(level: float = 1.0) -> DeviceModel:
    """RRAM of the NeuRRAM chip: Wan et al., Nature 608, 504-512 (2022).

    g_max = 40 uS, x = G_T / g_max. The spread around the target after write-verify is a 4th-order
    polynomial in x (uS), measured at three times after programming (fits by aihwkit's
    ReRamWan2022NoiseModel to the paper's conductance-relaxation figures):

    - 1 s:    0.348 + 16.030 x - 43.853 x^2 + 45.393 x^3 - 16.815 x^4   (the programming noise)
    - 1 day:  0.701 + 22.086 x - 50.773 x^2 + 47.095 x^3 - 16.458 x^4
    - 2 days: 0.782 + 20.274 x - 43.507 x^2 + 37.062 x^3 - 11.934 x^4

    Relaxation adds the growth of the spread beyond 1 s, interpolated in ln t and held after 2 days
    (``ConductanceRelaxation``). The 1 s data are the paper's Extended Data Fig. 3 (as Sandia's
    CrossSim identifies them; its own cubic fit to that figure, 1.053 + 0.2374 G - 1.167e-2 G^2 +
    1.536e-4 G^3 uS, gives 2.36 uS at G = 20 uS where these coefficients give 2.02: the two
    digitizations differ by up to ~20%, and by more near G = 0). RRAM shows no power-law drift, so
    drift compensation has nothing systematic to correct. ``level`` multiplies both spreads (1.0 is the chip).
    """
    return DeviceModel(
        name="rram_wan2022", g_max=RRAM_G_MAX_US,
        components=(ProgrammingNoise(RRAM_SIGMA_COEFFS[0], g_ref=RRAM_G_MAX_US, scale=level),
                    ConductanceRelaxation(RRAM_TIMES_S, RRAM_SIGMA_COEFFS, g_ref=RRAM_G_MAX_US, scale=level)),
        description=f"RRAM, NeuRRAM chip (Wan 2022): write-verify spread and relaxation x{level:g}")


def multiplicative(level: float) -> DeviceModel:
    """Gaussian noise proportional to each conductance: sigma = ``level`` x |G| per device."""
    return DeviceModel(name="multiplicative", g_max=PCM_G_MAX_US,
                       components=(MultiplicativeGaussianNoise(level),),
                       description=f"multiplicative Gaussian, sigma {level:g} x |G| per device")


def lognormal(level: float) -> DeviceModel:
    """Device-to-device variation: G x exp(``level`` x N(0, 1)), i.e. ``level`` is the sigma of ln G."""
    return DeviceModel(name="lognormal", g_max=PCM_G_MAX_US, components=(DeviceVariation(level),),
                       description=f"lognormal device-to-device variation, sigma(ln G) = {level:g}")


def stuck_at(level: float) -> DeviceModel:
    """Stuck-at faults: a fraction ``level`` of devices ignores programming, half stuck ON (at g_max),
    half stuck OFF (at 0 uS); the rest are ideal. For other splits compose ``StuckAtFaults`` directly."""
    if level > 1:
        raise ValueError(f"stuck_at: level is a fraction of devices and must be <= 1, got {level}")
    return DeviceModel(name="stuck_at", g_max=PCM_G_MAX_US,
                       components=(StuckAtFaults(p_on=level / 2, p_off=level / 2),),
                       description=f"stuck-at faults, {level:g} of devices (half ON, half OFF)")


# name -> factory taking the experiment's noise level
PRESETS: dict[str, Callable[[float], DeviceModel]] = {
    "ideal": lambda level: ideal(),
    "gaussian": gaussian,
    "pcm_programming": pcm_programming,
    "pcm": pcm,
    "rram_wan2022": rram_wan2022,
    "multiplicative": multiplicative,
    "lognormal": lognormal,
    "stuck_at": stuck_at,
}


def device_model(name: str, level: float) -> DeviceModel:
    """Build preset ``name`` at noise ``level`` (the meaning of level is the preset's), or load a
    calibrated model from a ``.json`` file written by ``CalibrationResult.save``."""
    if not (level >= 0):
        raise ValueError(f"noise level must be >= 0, got {level}")
    if name.endswith(".json"):
        from simcim.noise_models.calibrate import load_calibrated

        return load_calibrated(Path(name), level)
    if name not in PRESETS:
        raise ValueError(f"unknown noise model {name!r} (known: {', '.join(sorted(PRESETS))}, "
                         f"or a calibrated model's .json file)")
    return PRESETS[name](level)
