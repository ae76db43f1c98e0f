"""Stream prefetcher: trackers follow ascending or descending runs of nearby lines.

An access within ``window`` lines of a tracker's last line belongs to that stream; two
steps in the same direction confirm it, after which the tracker keeps a prefetch pointer up
to ``distance`` lines ahead of the access, issuing at most ``degree`` lines per access.
Unmatched accesses take over the least recently used tracker.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from simcim.npu.cache import prefetch_access

NAME = "stream"
LAST, DIR, CONF, PTR, USED = 0, 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class Config:
    trackers: int = 16
    distance: int = 16
    degree: int = 4
    window: int = 16

    def __post_init__(self) -> None:
        for k in ("trackers", "distance", "degree", "window"):
            if getattr(self, k) < 1:
                raise ValueError(f"stream {k} must be >= 1, got {getattr(self, k)}")


def make_state(cfg: Config, trace_arrays: tuple, width: int, line_bits: int) -> tuple[np.ndarray, np.ndarray]:
    st = np.zeros((cfg.trackers + 1, 5), np.int64)
    st[: cfg.trackers, LAST] = -(1 << 40)
    return st, np.array([cfg.trackers, cfg.distance, cfg.degree, cfg.window], np.int64)


def budget(cfg: Config, width: int) -> dict[str, int]:
    # last line + prefetch pointer (6 B each), direction, confidence and LRU bits (1 B)
    return {"entries": cfg.trackers, "bytes": cfg.trackers * 13}


@numba.njit(cache=True)
def operate(H: tuple, tr: tuple, st: np.ndarray, prm: np.ndarray, i: int, t: int, lines: np.ndarray,
            hits: np.ndarray, n: int) -> None:
    if tr[0][i] != 0:
        return
    ntr, dist, degree, window = prm[0], prm[1], prm[2], prm[3]
    for q in range(n):
        line = lines[q]
        st[ntr, 0] += 1
        now = st[ntr, 0]
        e = -1
        for k in range(ntr):
            if abs(line - st[k, LAST]) <= window:
                e = k
                break
        if e < 0:
            e = 0
            for k in range(1, ntr):
                if st[k, USED] < st[e, USED]:
                    e = k
            st[e, LAST] = line
            st[e, DIR] = 0
            st[e, CONF] = 0
            st[e, PTR] = line
            st[e, USED] = now
            continue
        st[e, USED] = now
        d = line - st[e, LAST]
        if d == 0:
            continue
        step = 1 if d > 0 else -1
        if step == st[e, DIR]:
            st[e, CONF] = min(st[e, CONF] + 1, 3)
        else:
            st[e, DIR] = step
            st[e, CONF] = 1
            st[e, PTR] = line
        st[e, LAST] = line
        if st[e, CONF] >= 2:
            if (st[e, PTR] - line) * step < 0:
                st[e, PTR] = line
            issued = 0
            while issued < degree and (st[e, PTR] - line) * step < dist:
                st[e, PTR] += step
                prefetch_access(H, st[e, PTR], t)
                issued += 1
