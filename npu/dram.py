"""DRAM: fixed access latency behind per-channel FIFO queues with a finite transfer rate.

Each channel serves one line at a time for ``ceil(line_bytes / bytes_per_cycle)`` cycles
(its service time); a request arriving at cycle ``t`` starts when the channel is free, so
``start = max(t, channel_free)``, and its data is back ``latency`` cycles after the
transfer ends. Lines are interleaved over channels by line address. This is the
deterministic-service FIFO (D/D/1 per channel) queue: ``k`` requests arriving together
finish at ``latency + k * service``, and sustained throughput is capped at
``channels * bytes_per_cycle``, so bandwidth contention (prefetch traffic included) shows up
as queueing delay. Banks, row buffers and refresh are not modelled.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

# dcfg slots
N_CHANNELS, SERVICE, LATENCY = 0, 1, 2
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
    chan_free = np.zeros(cfg.channels, np.int64)
    dcfg = np.array([cfg.channels, cfg.service_cycles(line_bytes), cfg.latency], np.int64)
    dstats = np.zeros(4, np.int64)
    return chan_free, dcfg, dstats


@numba.njit(cache=True)
def dram_access(chan_free, dcfg, dstats, line, t, is_write):
    """Queue one line transfer at cycle ``t``; returns the cycle its data is delivered."""
    c = line % dcfg[N_CHANNELS]
    start = max(t, chan_free[c])
    end = start + dcfg[SERVICE]
    chan_free[c] = end
    dstats[BUSY] += dcfg[SERVICE]
    if is_write:
        dstats[WRITES] += 1
    else:
        dstats[READS] += 1
    return end + dcfg[LATENCY]
