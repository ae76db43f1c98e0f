"""The designs FuseMax compares, iso-area, on the cloud configuration (256x256 2D array, 256-PE 1D
array, 940 MHz, 400 GiB/s): unfused, FLAT, and the steps from FLAT to FuseMax.

- ``unfused``: the 3-pass cascade, each Einsum on its own, every intermediate through DRAM.
- ``flat``: FLAT's fused 3-pass attention: QK and AV on the 2D array, softmax on the 1D array,
  the score rows of a block of query rows kept in the 32 MiB buffer (spilled when they do not fit),
  Q/K/V streamed per array tile.
- ``cascade`` (paper: "+Cascade"): the 1-pass cascade on FLAT's hardware: only the matrix
  Einsums on the 2D array, all softmax work on the 1D array.
- ``fusemax_arch`` ("+Architecture"): FuseMax's PEs (max, add, exp by multiply-adds in the 2D
  array), the softmax of each tile in the 2D array, the per-tile corrections in the 1D array, but
  tiles not interleaved: the 2D array stalls while the 1D array finishes a tile's running max.
- ``fusemax`` ("+Binding", FuseMax): as above with tiles interleaved so the 1D array's work of
  one tile hides under the 2D array's work of the next.
"""

from __future__ import annotations

from simcim.npu.dataflow.arch import FLAT_ARCH, FUSEMAX_ARCH
from simcim.npu.dataflow.model import Design, Stage

__all__ = ["DESIGNS", "design"]

_UNFUSED = Design(
    "unfused",
    "attention_3pass",
    FLAT_ARCH,
    stages=(
        Stage(two_d=("QK",)),
        Stage(one_d=("GM",)),
        Stage(one_d=("SN",)),
        Stage(one_d=("SD",)),
        Stage(one_d=("A",)),
        Stage(two_d=("AV",)),
    ),
    intermediates="dram",
    operand_reuse="rows",
    overlap="per_stage",
    description="3-pass cascade, one Einsum at a time, intermediates through DRAM",
)

_FLAT = Design(
    "flat",
    "attention_3pass",
    FLAT_ARCH,
    stages=(Stage(two_d=("QK", "AV"), one_d=("GM", "SN", "SD", "A")),),
    intermediates="buffer",
    operand_reuse="tile",
    overlap="global",
    description="FLAT: fused 3-pass attention, score rows in the global buffer",
)

_CASCADE = Design(
    "cascade",
    "attention_1pass",
    FLAT_ARCH,
    stages=(Stage(two_d=("QK", "SLNV"), one_d=("LM", "RM", "SLN", "SLD", "PRM", "SPD", "RD", "SPNV", "RNV", "AV")),),
    intermediates="buffer",
    operand_reuse="rows",
    overlap="global",
    description="+Cascade: the 1-pass cascade on FLAT's arrays",
)

_FUSEMAX_STAGES_STALL = (
    Stage(two_d=("QK", "LM"), one_d=("RD", "AV")),
    Stage(one_d=("RM",)),
    Stage(two_d=("SLN", "SLD"), one_d=("PRM", "SPD")),
    Stage(two_d=("SLNV",), one_d=("SPNV", "RNV")),
)

_FUSEMAX_ARCH_ONLY = Design(
    "fusemax_arch",
    "attention_1pass",
    FUSEMAX_ARCH,
    stages=_FUSEMAX_STAGES_STALL,
    intermediates="registers",
    operand_reuse="rows",
    overlap="global",
    stall_cycles_per_tile=256,
    description="+Architecture: FuseMax PEs, softmax in the 2D array, tiles not interleaved",
)

_FUSEMAX = Design(
    "fusemax",
    "attention_1pass",
    FUSEMAX_ARCH,
    stages=(
        Stage(two_d=("QK", "LM"), one_d=("RD", "RNV", "AV")),
        Stage(one_d=("RM",)),
        Stage(two_d=("SLN", "SLD"), one_d=("PRM", "SPD")),
        Stage(two_d=("SLNV",), one_d=("SPNV",)),
    ),
    intermediates="registers",
    operand_reuse="rows",
    overlap="global",
    description="FuseMax (+Binding): 1-pass cascade, tiles interleaved between the 2D and 1D arrays",
)

DESIGNS: dict[str, Design] = {d.name: d for d in (_UNFUSED, _FLAT, _CASCADE, _FUSEMAX_ARCH_ONLY, _FUSEMAX)}


def design(name: str) -> Design:
    if name not in DESIGNS:
        raise ValueError(f"unknown design {name!r} (known: {', '.join(DESIGNS)})")
    return DESIGNS[name]
