"""Hardware parameters of a spatial attention accelerator, and the transformer shapes it runs.

Technology: 45 nm, 940 MHz, 16-bit (2-byte) words, as in FuseMax's evaluation (whose
Accelergy/Timeloop artifact, FPSG-UIUC/micro24-fusemax-artifact, is where every default
below comes from unless the comment says otherwise):

- ``mac`` 17.16 pJ = floating-point adder 8.34 pJ + multiplier 8.83 pJ (Aladdin 45 nm table);
  ``mul`` 8.83, ``add`` 8.34; ``max`` is a comparator + mux, charged as an adder (upper bound).
- ``exp`` 94.6 pJ: five fused multiply-adds and one multiply (6th-order Taylor/Horner, the
  artifact's exponential unit); on PEs without an exp unit it also takes 6 cycles.
- ``div`` 36.25 pJ (the artifact's custom 32-bit divider table).
- ``log``, ``sqrt``, ``rsqrt`` (for LayerNorm, RMSNorm, log-sum-exp; not in the artifact, our
  assumption): ``log`` as ``exp`` (a polynomial after range reduction, six multiply-adds, 94.6 pJ);
  ``sqrt`` and ``rsqrt`` as ``div`` (36.25 pJ, a digit-recurrence unit of the divider's class). On
  FLAT's 1D array they are special-function units of one cycle; FuseMax's PEs, which have no such
  units, spend multiply-add cycles: six for ``log`` (polynomial) and ``rsqrt`` (an estimate and two
  Newton steps), seven for ``sqrt`` (``x * rsqrt(x)``); its 2D PEs have no divider.
- register file 0.653 pJ per read, 0.570 pJ per write (one 16-bit word).
- global buffer 2286.5 pJ per 512-byte read and 2759.4 pJ per write, i.e. 4.47 / 5.39 pJ/B. We
  take that as the cost of a 512 KiB bank and scale by sqrt(bank size / 512 KiB) (bit- and
  word-line length); this scaling is our assumption, not the artifact's.
- DRAM (HBM2) 512 pJ per 64-bit access = 64 pJ/B; 400 GiB/s.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Arch", "Energies", "MODELS", "ModelShape", "SEQ_LENS", "FLAT_ARCH", "FUSEMAX_ARCH"]

MIB = 2**20
OPERATIONS = ("mac", "mul", "add", "max", "exp", "div", "log", "sqrt", "rsqrt")


@dataclasses.dataclass(frozen=True)
class Energies:
    """Energy per action in picojoules (45 nm)."""

    mac: float = 17.1645
    mul: float = 8.825
    add: float = 8.3395
    max: float = 8.3395
    exp: float = 5 * 17.1645 + 8.825
    div: float = 36.251
    log: float = 5 * 17.1645 + 8.825
    sqrt: float = 36.251
    rsqrt: float = 36.251
    reg_read: float = 0.653
    reg_write: float = 0.570
    glb_read_per_byte: float = 2286.52 / 512
    glb_write_per_byte: float = 2759.44 / 512
    glb_reference_bank_bytes: float = 512 * 2**10
    dram_per_byte: float = 512.0 / 8

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not v >= 0:  # also rejects NaN
                raise ValueError(f"Energies.{f.name}: expected a non-negative number of pJ, got {v!r}")

    def op(self, name: str) -> float:
        return float(getattr(self, name))


@dataclasses.dataclass(frozen=True)
class Arch:
    """A 2D PE array for the matrix Einsums, a 1D PE array beside it, a global buffer and DRAM.

    ``ops_2d``/``ops_1d`` give the cycles each PE spends per operation it supports; an Einsum
    that needs an operation its array lacks is a configuration error. A ``pipelined`` array
    chains the operations of one Einsum point in a pipeline (one point per cycle per PE); a
    non-pipelined one spends the sum of their cycles.
    """

    name: str
    rows: int = 256  # 2D array: PEs along the query rank P
    cols: int = 256  # 2D array: PEs along the key rank M (also the M0 tile)
    pes_1d: int = 256
    clock_hz: float = 940e6
    glb_bytes: int = 32 * MIB
    glb_banks: int = 4
    dram_bytes_per_s: float = 400 * 2**30
    word_bytes: int = 2
    ops_2d: tuple[tuple[str, int], ...] = (("mac", 1),)
    ops_1d: tuple[tuple[str, int], ...] = (
        ("mac", 1),
        ("mul", 1),
        ("add", 1),
        ("max", 1),
        ("exp", 1),
        ("div", 1),
        ("log", 1),
        ("sqrt", 1),
        ("rsqrt", 1),
    )
    pipelined_2d: bool = False
    pipelined_1d: bool = True
    energies: Energies = dataclasses.field(default_factory=Energies)

    def __post_init__(self) -> None:
        for name in ("rows", "cols", "pes_1d", "glb_banks", "word_bytes", "glb_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"Arch.{name}: expected a positive integer, got {v!r}")
        for name in ("clock_hz", "dram_bytes_per_s"):
            v = getattr(self, name)
            if not v > 0 or v == float("inf"):
                raise ValueError(f"Arch.{name}: expected a positive finite number, got {v!r}")
        for label, ops in (("ops_2d", self.ops_2d), ("ops_1d", self.ops_1d)):
            for op, cycles in ops:
                if op not in OPERATIONS:
                    raise ValueError(f"Arch.{label}: unknown operation {op!r}")
                if not isinstance(cycles, int) or cycles < 1:
                    raise ValueError(f"Arch.{label}: cycles for {op!r} must be a positive integer, got {cycles!r}")

    def cycles(self, array: str) -> dict[str, int]:
        return dict(self.ops_2d if array == "2d" else self.ops_1d)

    def pipelined(self, array: str) -> bool:
        return self.pipelined_2d if array == "2d" else self.pipelined_1d


# FLAT's cloud configuration: 256x256 MAC array, a 256-PE 1D array with dedicated max / exp /
# divide units, 32 MiB global buffer in 4 banks (FuseMax section VI-A, the artifact's FLAT files).
FLAT_ARCH = Arch(name="flat")

# FuseMax: the same arrays, but every 2D PE also does max/add and exponentiation by six
# multiply-adds, and the 1D PEs likewise (no exp unit). The global buffer is cut to 16 MiB in 32
# banks so that the total area matches FLAT's (the paper's iso-area comparison).
_FUSEMAX_OPS = (("mac", 1), ("mul", 1), ("add", 1), ("max", 1), ("exp", 6), ("log", 6), ("sqrt", 7), ("rsqrt", 6))
FUSEMAX_ARCH = Arch(
    name="fusemax",
    glb_bytes=16 * MIB,
    glb_banks=32,
    ops_2d=_FUSEMAX_OPS,
    ops_1d=_FUSEMAX_OPS + (("div", 1),),
    pipelined_2d=False,
    pipelined_1d=False,
)


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """One transformer layer: model width D, heads H, head dims E (keys) and F (values), FFN width S."""

    name: str
    d_model: int
    heads: int
    e: int
    f: int
    ffn: int
    batch: int = 64


# The models and batch FuseMax evaluates (the artifact's flat_validation.csv).
MODELS: dict[str, ModelShape] = {
    "BERT": ModelShape("BERT", 768, 12, 64, 64, 3072),
    "TrXL": ModelShape("TrXL", 1024, 16, 64, 64, 4096),
    "T5": ModelShape("T5", 512, 8, 64, 64, 2048),
    "XLM": ModelShape("XLM", 2048, 16, 128, 128, 8192),
}
SEQ_LENS = (1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20)
