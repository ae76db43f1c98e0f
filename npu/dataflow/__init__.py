"""Einsum cascades, pass lower bounds and a FuseMax-style spatial-array model.

- :mod:`simcim.npu.dataflow.einsum`: the cascade notation (``cascades/*.einsum``) and its parser.
- :mod:`simcim.npu.dataflow.passes`: passes over a rank that any implementation of a cascade must make,
  and what keeping or spilling the data between passes costs.
- :mod:`simcim.npu.dataflow.arch`: hardware parameters (45 nm energies, array sizes, buffer, DRAM) and
  the transformer shapes FuseMax evaluates.
- :mod:`simcim.npu.dataflow.model`: the vectorized latency / energy / utilization / traffic model.
- :mod:`simcim.npu.dataflow.designs`: unfused, FLAT, +Cascade, +Architecture and FuseMax.
- :mod:`simcim.npu.dataflow.experiment`: the ``fusemax`` experiment kind.
- ``python -m simcim.npu.dataflow.analyze CASCADE``: pass analysis of a shipped or user cascade.
- ``python -m simcim.npu.dataflow.reproduce`` / ``python -m simcim.npu.dataflow.bench``: paper comparison, speed.
"""

from simcim.npu.dataflow.designs import DESIGNS, design
from simcim.npu.dataflow.einsum import Cascade, CascadeSyntaxError, Einsum, builtin_cascade, load_cascade, parse_cascade
from simcim.npu.dataflow.model import Design, Stage, bottleneck, evaluate, linear_layers
from simcim.npu.dataflow.passes import PassReport, analyze_passes

__all__ = [
    "DESIGNS",
    "Cascade",
    "CascadeSyntaxError",
    "Design",
    "Einsum",
    "PassReport",
    "Stage",
    "analyze_passes",
    "bottleneck",
    "builtin_cascade",
    "design",
    "evaluate",
    "linear_layers",
    "load_cascade",
    "parse_cascade",
]
