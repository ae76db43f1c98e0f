"""Device physics of memristive crossbars: noise, drift, faults and their calibration."""

from noise_models.base import DEFAULT_CHUNK_ELEMS, DeviceModel, NoiseComponent, NoiseContext
from noise_models.calibrate import CalibrationResult, calibrate
from noise_models.drift import PowerLawDrift
from noise_models.faults import StuckAtFaults
from noise_models.gaussian import AdditiveGaussianNoise, MultiplicativeGaussianNoise
from noise_models.levels import FiniteLevels
from noise_models.presets import PRESETS, device_model
from noise_models.programming import ProgrammingNoise
from noise_models.read import ReadNoise
from noise_models.relaxation import ConductanceRelaxation
from noise_models.variation import DeviceVariation

__all__ = [
    "DEFAULT_CHUNK_ELEMS",
    "PRESETS",
    "AdditiveGaussianNoise",
    "CalibrationResult",
    "ConductanceRelaxation",
    "DeviceModel",
    "DeviceVariation",
    "FiniteLevels",
    "MultiplicativeGaussianNoise",
    "NoiseComponent",
    "NoiseContext",
    "PowerLawDrift",
    "ProgrammingNoise",
    "ReadNoise",
    "StuckAtFaults",
    "calibrate",
    "device_model",
]
