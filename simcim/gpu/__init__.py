"""The GPU performance model: predict a kernel call's time on a GPU from counts of its work and measured rates.

- ``simcim.gpu.model``: :class:`GPUSpec` (a GPU's measured rates, ``specs/*.toml``), :class:`Work` (what a call
  must do) and :func:`predict`;
- ``simcim.gpu.counts``: one counter per kernel of ``kernels/`` (``COUNTERS``, :func:`count`);
- ``simcim.gpu.specs``: the bundled specs, written by ``python -m simcim.kernels.gpu_microbench``.

Checked against measured times by ``simcim.validation`` (the ``sim_vs_measured`` and ``gpu_model_blind`` kinds).
"""

from simcim.gpu.counts import COUNTERS, count
from simcim.gpu.model import GPUSpec, Prediction, Work, load_spec, predict, write_spec

__all__ = ["COUNTERS", "GPUSpec", "Prediction", "Work", "count", "load_spec", "predict", "write_spec"]
