"""DRAM: per-channel data buses with an exact transfer rate, behind a fixed latency or an open-page bank model.

**Data bus.** Each channel moves one line at a time at ``bytes_per_cycle``, so a line occupies
the bus for ``S = line_bytes / bytes_per_cycle`` cycles, a rational number kept exact (the rate
is read to 1/1024 B/cycle): bus time is cut into slots ``[k S, (k + 1) S)`` and a request whose
data is ready at cycle ``t`` takes the first free slot starting at or after ``t``; the requester
has the data ``latency`` cycles after the end of the slot, rounded up to a whole cycle. ``k``
requests ready together at a slot boundary finish at ``latency + ceil(k S)``, and sustained
throughput is exactly ``channels * bytes_per_cycle``, so bandwidth contention (prefetch traffic
included) shows up as queueing delay. Slots rather than a single "bus free at" time, because
the simulator issues requests in program order, not time order: a prefetch issued for a
future cycle must not delay a demand miss simulated after it but happening earlier. A slot
ring remembers ``SLOT_WINDOW`` slots per channel.

**Models.** ``simple``: the data is ready on arrival (a fixed-latency DRAM). ``banks``: an
open-page bank model. An address maps to (channel, bank, row) by ``mapping``; each bank
keeps its last row open. A request to the open row is a *row hit* and its column read issues
at once; to a bank with no open row (the first access) a *row miss*, paying ``t_rcd`` to
activate; to a bank with another row open a *row conflict*, paying ``t_rp + t_rcd`` to
precharge and activate. The data is on the bus ``t_cas`` after the column read. One bank
issues one command at a time, so requests to one bank serialize; different banks overlap.

Scheduling: requests reach a bank in issue order. ``fcfs`` serves them in that order.
``frfcfs`` (first-ready FCFS) lets a request to the row that was open when it arrived go
ahead of an earlier-issued conflicting request whose precharge had not started yet, as a
controller that picks row hits first would; the conflicting request's already computed
time is not pushed back by the one column read it lets pass (an optimistic error of one
command slot). Not modelled: tRAS, tRC, tFAW, tRRD, bank groups, read/write turnaround,
refresh.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numba
import numpy as np

# dcfg slots
(MODEL, N_CHANNELS, SLOT_P, SLOT_Q, LATENCY, N_BANKS, ROW_LINES, T_RCD, T_CAS, T_RP, MAPPING,
 SCHEDULING) = range(12)
SLOT_WINDOW = 1 << 15
# dstats slots
READS, WRITES, ROW_HITS, ROW_MISSES, ROW_CONFLICTS = range(5)
# bank state columns
B_ROW, B_FREE, B_PREV_ROW, B_PREV_FREE, B_PREV_CLOSE = range(5)

MODELS = {"simple": 0, "banks": 1}
# how a line address splits into fields, most significant first; the column is the line within a row
MAPPINGS = {
    "row_bank_channel_column": 0,  # consecutive lines fill a row, then the next channel, then bank
    "row_column_bank_channel": 1,  # consecutive lines go to the next channel, then the next bank
}
SCHEDULERS = {"fcfs": 0, "frfcfs": 1}
RATE_DENOMINATOR = 1024


@dataclasses.dataclass(frozen=True)
class BankPreset:
    """One DRAM device's bank geometry and core timing (ns), per channel."""

    banks: int
    row_bytes: int
    t_rcd_ns: float
    t_cas_ns: float
    t_rp_ns: float
    channel_gb_s: float  # peak data rate of one channel (for reference; the model takes bytes_per_cycle)
    source: str


# Timing minimums from the JEDEC standards as encoded in the Ramulator / Ramulator 2 device presets
# named in ``source``; docs/npu.md lists them with the standards.
PRESETS: dict[str, BankPreset] = {
    "ddr4_3200": BankPreset(16, 8192, 13.75, 13.75, 13.75, 25.6,
                            "JESD79-4 DDR4-3200AA (22-22-22 at tCK 0.625 ns); 4 bank groups x 4 banks; "
                            "8 KiB row: a rank of eight x8 devices with 1 KiB pages"),
    "hbm2": BankPreset(16, 2048, 14.0, 14.0, 14.0, 32.0,
                       "JESD235 HBM, legacy 128-bit channel: tRCD = CL = tRP = 14 ns as in Ramulator's HBM "
                       "model (7 cycles at tCK 2 ns); 16 banks, 2 KiB row"),
    "hbm3": BankPreset(32, 1024, 19.375, 12.5, 16.25, 25.6,
                       "JESD238A HBM3 at 6.4 Gb/s/pin, 32-bit pseudo-channel (tRCD 31, CL 20, tRP 26 at "
                       "tCK 0.625 ns); 2 stack IDs x 4 bank groups x 4 banks, 1 KiB row"),
}


def preset_cycles(name: str, clock_ghz: float) -> dict[str, int]:
    """A preset's geometry and timing with ns rounded up to whole cycles of a ``clock_ghz`` clock."""
    if name not in PRESETS:
        raise ValueError(f"dram preset: unknown {name!r} (known: {', '.join(PRESETS)})")
    if not (clock_ghz > 0 and math.isfinite(clock_ghz)):
        raise ValueError(f"clock_ghz must be a positive number, got {clock_ghz}")
    p = PRESETS[name]

    def cyc(ns: float) -> int:
        return math.ceil(round(ns * clock_ghz, 9))

    return {"banks": p.banks, "row_bytes": p.row_bytes, "t_rcd": cyc(p.t_rcd_ns), "t_cas": cyc(p.t_cas_ns),
            "t_rp": cyc(p.t_rp_ns)}


@dataclasses.dataclass(frozen=True)
class DRAMConfig:
    latency: int = 100             # cycles from the end of the bus transfer to data at the requester
    channels: int = 2
    bytes_per_cycle: float = 16.0  # per channel, exact to 1/1024
    model: str = "simple"          # "simple" (fixed latency) or "banks" (open-page banks)
    banks: int = 16                # per channel (banks model)
    row_bytes: int = 8192          # row (page) size of one bank across the channel
    t_rcd: int = 14                # activate to column read [cycles]
    t_cas: int = 14                # column read to data on the bus [cycles]
    t_rp: int = 14                 # precharge [cycles]
    mapping: str = "row_bank_channel_column"
    scheduling: str = "frfcfs"

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"dram latency must be >= 0, got {self.latency}")
        if self.channels < 1:
            raise ValueError(f"dram channels must be >= 1, got {self.channels}")
        if not (self.bytes_per_cycle > 0 and math.isfinite(self.bytes_per_cycle)):
            raise ValueError(f"dram bytes_per_cycle must be a positive number, got {self.bytes_per_cycle}")
        if self.rate() == 0:
            raise ValueError(f"dram bytes_per_cycle must be >= 1/{RATE_DENOMINATOR}, got {self.bytes_per_cycle}")
        if self.model not in MODELS:
            raise ValueError(f"dram model: unknown {self.model!r} (known: {', '.join(MODELS)})")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"dram mapping: unknown {self.mapping!r} (known: {', '.join(MAPPINGS)})")
        if self.scheduling not in SCHEDULERS:
            raise ValueError(f"dram scheduling: unknown {self.scheduling!r} (known: {', '.join(SCHEDULERS)})")
        if self.banks < 1:
            raise ValueError(f"dram banks must be >= 1, got {self.banks}")
        for name in ("t_rcd", "t_cas", "t_rp"):
            if getattr(self, name) < 0:
                raise ValueError(f"dram {name} must be >= 0, got {getattr(self, name)}")

    def rate(self) -> Fraction:
        """The per-channel rate as the exact fraction the model uses [bytes/cycle]."""
        return Fraction(self.bytes_per_cycle).limit_denominator(RATE_DENOMINATOR)

    def transfer_cycles(self, line_bytes: int) -> Fraction:
        """Bus time of one line [cycles], exact."""
        return line_bytes / self.rate()


def make_dram(cfg: DRAMConfig, line_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(slot ring per channel, bank state, config, stats) for ``dram_access``."""
    if cfg.model == "banks" and (cfg.row_bytes < line_bytes or cfg.row_bytes % line_bytes):
        raise ValueError(f"dram row_bytes must be a multiple of the {line_bytes} B line, got {cfg.row_bytes}")
    # last two columns: the latest contiguous run of taken slots [start, end), skipped in one step
    slots = np.full((cfg.channels, SLOT_WINDOW + 2), -1, np.int64)
    slots[:, SLOT_WINDOW:] = 0
    banks = np.zeros((cfg.channels * cfg.banks, 5), np.int64)
    banks[:, B_ROW] = -1
    banks[:, B_PREV_ROW] = -1
    s = cfg.transfer_cycles(line_bytes)
    dcfg = np.array([MODELS[cfg.model], cfg.channels, s.numerator, s.denominator, cfg.latency, cfg.banks,
                     max(1, cfg.row_bytes // line_bytes), cfg.t_rcd, cfg.t_cas, cfg.t_rp, MAPPINGS[cfg.mapping],
                     SCHEDULERS[cfg.scheduling]], np.int64)
    dstats = np.zeros(5, np.int64)
    return slots, banks, dcfg, dstats


@numba.njit(cache=True)
def _bus_slot(slots, dcfg, c, t):
    """Take the first free bus slot of channel ``c`` starting at or after ``t``; return its end cycle."""
    p, q = dcfg[SLOT_P], dcfg[SLOT_Q]  # a slot lasts p / q cycles
    window = slots.shape[1] - 2
    k = (t * q + p - 1) // p
    run_start, run_end = slots[c, window], slots[c, window + 1]
    if run_start <= k < run_end:
        k = run_end
    # a ring entry holding a slot >= k is taken (a later one beyond the window counts as taken too)
    while slots[c, k % window] >= k:
        k += 1
    slots[c, k % window] = k
    if k == run_end:
        slots[c, window + 1] = k + 1
    elif not run_start <= k < run_end:
        slots[c, window] = k
        slots[c, window + 1] = k + 1
    return ((k + 1) * p + q - 1) // q


@numba.njit(cache=True)
def _bank_column(banks, dcfg, dstats, b, row, t):
    """Cycle the column read of ``row`` in bank ``b`` issues, for a request arriving at ``t``."""
    free = banks[b, B_FREE]
    if banks[b, B_ROW] == row:
        dstats[ROW_HITS] += 1
        col = max(t, free)
        banks[b, B_FREE] = col + 1
        return col
    if dcfg[SCHEDULING] == 1 and banks[b, B_PREV_ROW] == row and t < banks[b, B_PREV_CLOSE]:
        # its row was still open on arrival: first-ready scheduling serves it before the queued conflict
        dstats[ROW_HITS] += 1
        col = max(t, banks[b, B_PREV_FREE])
        banks[b, B_PREV_FREE] = col + 1
        return col
    start = max(t, free)
    if banks[b, B_ROW] == -1:
        dstats[ROW_MISSES] += 1
        col = start + dcfg[T_RCD]
    else:
        dstats[ROW_CONFLICTS] += 1
        col = start + dcfg[T_RP] + dcfg[T_RCD]
    banks[b, B_PREV_ROW] = banks[b, B_ROW]
    banks[b, B_PREV_FREE] = free
    banks[b, B_PREV_CLOSE] = start
    banks[b, B_ROW] = row
    banks[b, B_FREE] = col + 1
    return col


@numba.njit(cache=True)
def dram_access(slots: np.ndarray, banks: np.ndarray, dcfg: np.ndarray, dstats: np.ndarray, line: int, t: int,
                is_write: bool) -> int:
    """Queue one line transfer arriving at cycle ``t``; returns the cycle its data is delivered."""
    nch = dcfg[N_CHANNELS]
    if is_write:
        dstats[WRITES] += 1
    else:
        dstats[READS] += 1
    if dcfg[MODEL] == 0:
        return _bus_slot(slots, dcfg, line % nch, t) + dcfg[LATENCY]
    nb, rl = dcfg[N_BANKS], dcfg[ROW_LINES]
    if dcfg[MAPPING] == 0:
        c = (line // rl) % nch
        b = (line // (rl * nch)) % nb
    else:
        c = line % nch
        b = (line // nch) % nb
    row = line // (rl * nch * nb)
    col = _bank_column(banks, dcfg, dstats, c * nb + b, row, t)
    return _bus_slot(slots, dcfg, c, col + dcfg[T_CAS]) + dcfg[LATENCY]
