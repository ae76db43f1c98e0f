"""Device physics of memristive crossbars: noise, drift, faults and their calibration."""

from noise_models.base import DeviceModel, NoiseComponent, NoiseContext
from noise_models.gaussian import AdditiveGaussianNoise
from noise_models.presets import PRESETS, device_model
from noise_models.programming import ProgrammingNoise

__all__ = [
    "PRESETS",
    "AdditiveGaussianNoise",
    "DeviceModel",
    "NoiseComponent",
    "NoiseContext",
    "ProgrammingNoise",
    "device_model",
]
