"""DRAM: fixed access latency behind per-channel queues with a finite transfer rate.

Each channel moves one line at a time, taking ``service = ceil(line_bytes / bytes_per_cycle)``
cycles; time on a channel is cut into slots of ``service`` cycles and a request arriving at
cycle ``t`` takes the first free slot starting at or after ``t``; its data is back ``latency``
cycles after the transfer ends. Lines are interleaved over channels by line address. For
requests that arrive in time order this is the deterministic-service FIFO (D/D/1 per channel):
``k`` requests arriving together at a slot boundary finish at ``latency + k * service``, and
sustained throughput is capped at ``channels * bytes_per_cycle``, so bandwidth contention
(prefetch traffic included) shows up as queueing delay.

Slots rather than a single "channel free at" time, because the simulator issues requests in
program order, not time order: a prefetch issued for a future cycle (one waiting for its
index data) must not delay a demand miss simulated after it but happening earlier. A slot
ring remembers ``SLOT_WINDOW`` slots per channel. Banks, row buffers and refresh are not
modelled; a request's start is rounded up to a slot boundary (at most ``service - 1`` cycles).
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

# dcfg slots
N_CHANNELS, SERVICE, LATENCY = 0, 1, 2
SLOT_WINDOW = 1 << 15
# dstats slots
READS, WRITES, BUSY = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class DRAMConfig:
    latency: int = 100            # cycles from the end of the transfer to data at the requester
    channels: int = 2
    bytes_per_cycle: float = 16.0  # per channel

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"dram latency must be >= 0, got {self.latency}")
        if self.channels < 1:
            raise ValueError(f"dram channels must be >= 1, got {self.channels}")
        if not (self.bytes_per_cycle > 0 and math.isfinite(self.bytes_per_cycle)):
            raise ValueError(f"dram bytes_per_cycle must be a positive number, got {self.bytes_per_cycle}")

    def service_cycles(self, line_bytes: int) -> int:
        return max(1, math.ceil(line_bytes / self.bytes_per_cycle))


def make_dram(cfg: DRAMConfig, line_bytes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slot ring per channel, config, stats) for ``dram_access``."""
    # last two columns: the latest contiguous run of taken slots [start, end), skipped in one step
    slots = np.full((cfg.channels, SLOT_WINDOW + 2), -1, np.int64)
    slots[:, SLOT_WINDOW:] = 0
    dcfg = np.array([cfg.channels, cfg.service_cycles(line_bytes), cfg.latency], np.int64)
    dstats = np.zeros(4, np.int64)
    return slots, dcfg, dstats


@numba.njit(cache=True)
def dram_access(slots: np.ndarray, dcfg: np.ndarray, dstats: np.ndarray, line: int, t: int,
                is_write: bool) -> int:
    """Queue one line transfer at cycle ``t``; returns the cycle its data is delivered."""
    c = line % dcfg[N_CHANNELS]
    service = dcfg[SERVICE]
    window = slots.shape[1] - 2
    k = (t + service - 1) // service
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
    end = (k + 1) * service
    dstats[BUSY] += dcfg[SERVICE]
    if is_write:
        dstats[WRITES] += 1
    else:
        dstats[READS] += 1
    return end + dcfg[LATENCY]
