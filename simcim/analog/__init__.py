"""The analog forward: crossbar matrix-vector products with DAC, ADC, read noise, IR drop and tile partial sums.

- :mod:`simcim.analog.periphery`: :class:`PeripheryConfig` and the PyTorch reference :func:`analog_mvm`;
- :mod:`simcim.analog.engines`: the choice between the reference and the Triton kernel
  (``simcim.kernels.analog_matmul``);
- :mod:`simcim.analog.model`: :class:`AnalogForward`, a whole model's selected weights through it.
"""

from simcim.analog.model import AnalogForward
from simcim.analog.periphery import Counters, PeripheryConfig, analog_mvm

__all__ = ["AnalogForward", "Counters", "PeripheryConfig", "analog_mvm"]
