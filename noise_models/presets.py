"""Named device models, each citing where its numbers come from."""

from __future__ import annotations

from collections.abc import Callable

from noise_models.base import DeviceModel
from noise_models.gaussian import AdditiveGaussianNoise
from noise_models.programming import ProgrammingNoise

# Programming-noise polynomial of the IBM PCM statistical model, in microsiemens for
# g_max = 25 uS: sigma = 0.26348 + 1.9650 x - 1.1731 x^2, x = G_T / g_max.
# Nandakumar et al., "Phase-change memory models for deep learning training and inference",
# ICECS 2019, Fig. 3(a) (fit to 1M-device array measurements); the same coefficients as
# aihwkit's PCMLikeNoiseModel (prog_coeff = [0.26348, 1.9650, -1.1731], g_max = 25 uS).
PCM_PROG_COEFFS = (0.26348, 1.9650, -1.1731)
PCM_G_MAX_US = 25.0


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


# name -> factory taking the experiment's noise level
PRESETS: dict[str, Callable[[float], DeviceModel]] = {
    "ideal": lambda level: ideal(),
    "gaussian": gaussian,
    "pcm_programming": pcm_programming,
}


def device_model(name: str, level: float) -> DeviceModel:
    """Build preset ``name`` at noise ``level`` (the meaning of level is the preset's)."""
    if name not in PRESETS:
        raise ValueError(f"unknown noise model {name!r} (known: {', '.join(sorted(PRESETS))})")
    return PRESETS[name](level)
