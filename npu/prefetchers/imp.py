"""IMP, the indirect memory prefetcher (Yu et al., MICRO 2015), for A[B[i]] patterns.

Per index-load PC it learns the element stride of the index stream and the affine map
``address = base + index * scale`` from index values to the addresses of the loads that use
them (two consecutive agreeing observations confirm it). Once confirmed, every index element
read at address ``x`` triggers: read the element ``distance`` elements ahead (prefetching its
line first when absent; the indirect prefetch waits for that line), and prefetch the one line
that holds ``base + value * scale``. As in the original design it is scalar (one element,
one line per index) and follows one level of indirection.

Our IMP is told which earlier load produced a dependent load's index (the trace's
``producer``), where the hardware finds that pairing with a detector that tries candidate
shifts; it still has to learn base and scale, and it only reads index values it has fetched.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from simcim.npu.cache import line_ready, prefetch_access

NAME = "imp"
PC, BASE, SCALE, CONF, LAST_V, LAST_A, STRIDE = range(7)


@dataclasses.dataclass(frozen=True)
class Config:
    entries: int = 16
    distance: int = 64  # index elements ahead

    def __post_init__(self) -> None:
        if self.entries < 1 or self.distance < 1:
            raise ValueError(f"imp entries and distance must be >= 1, got {self.entries}, {self.distance}")


def make_state(cfg: Config, trace_arrays: tuple, width: int, line_bits: int) -> tuple[np.ndarray, np.ndarray]:
    st = np.zeros((cfg.entries, 7), np.int64)
    st[:, PC] = -1
    return st, np.array([cfg.entries, cfg.distance, line_bits], np.int64)


def budget(cfg: Config, width: int) -> dict[str, int]:
    # pc tag 2 B, base 6 B, scale 2 B, last value 4 B, last address 6 B, stride 1 B, confidence 1 B
    return {"entries": cfg.entries, "bytes": cfg.entries * 22}


@numba.njit(cache=True)
def _train(tr, st, prm, i):
    start, dep, addr, producer, value, pcs = tr[2], tr[3], tr[4], tr[5], tr[6], tr[1]
    d = dep[i]
    idx_pc = pcs[d]
    e = idx_pc % prm[0]
    if st[e, PC] != idx_pc:
        st[e, PC] = idx_pc
        st[e, CONF] = 0
        st[e, LAST_A] = -1
        st[e, STRIDE] = 0
    for a in range(start[i], start[i + 1]):
        p = producer[a]
        # only the first element each index addresses (a row of several elements starts there)
        if p < 0 or (a > 0 and producer[a - 1] == p):
            continue
        v = value[p]
        if st[e, LAST_A] >= 0 and v != st[e, LAST_V]:
            dv = v - st[e, LAST_V]
            da = addr[a] - st[e, LAST_A]
            if da % dv == 0:
                scale = da // dv
                base = addr[a] - v * scale
                if scale == st[e, SCALE] and base == st[e, BASE]:
                    st[e, CONF] = min(st[e, CONF] + 1, 3)
                else:
                    st[e, SCALE] = scale
                    st[e, BASE] = base
                    st[e, CONF] = 0
        st[e, LAST_V] = v
        st[e, LAST_A] = addr[a]


@numba.njit(cache=True)
def operate(H: tuple, tr: tuple, st: np.ndarray, prm: np.ndarray, i: int, t: int, lines: np.ndarray,
            hits: np.ndarray, n: int) -> None:
    kind, pcs, start, dep, addr = tr[0], tr[1], tr[2], tr[3], tr[4]
    img_addr, img_val = tr[7], tr[8]
    if kind[i] != 0:
        return
    if dep[i] >= 0:
        _train(tr, st, prm, i)
        return
    pc = pcs[i]
    e = pc % prm[0]
    if st[e, PC] != pc:
        return
    a0, a1 = start[i], start[i + 1]
    if a1 - a0 >= 2:
        st[e, STRIDE] = addr[a0 + 1] - addr[a0]
    if st[e, CONF] < 1 or st[e, STRIDE] == 0:
        return
    bits = prm[2]
    for a in range(a0, a1):
        y = addr[a] + prm[1] * st[e, STRIDE]
        pos = np.searchsorted(img_addr, y)
        if pos >= len(img_addr) or img_addr[pos] != y:
            continue
        r = line_ready(H, y >> bits)
        if r < 0:
            r = prefetch_access(H, y >> bits, t)
        target = st[e, BASE] + img_val[pos] * st[e, SCALE]
        prefetch_access(H, target >> bits, max(t, r))
