"""PC-indexed stride prefetcher (IP-stride, as in ChampSim): per load PC, the last line and stride.

Every line a load PC touches trains its entry; a stride seen twice in a row (confidence >= 2)
prefetches ``degree`` lines along it. Same-line repeats neither train nor trigger.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from simcim.npu.cache import prefetch_access

NAME = "stride"
PC, LAST, STRIDE, CONF = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class Config:
    entries: int = 64
    degree: int = 4

    def __post_init__(self) -> None:
        if self.entries < 1 or self.degree < 1:
            raise ValueError(f"stride entries and degree must be >= 1, got {self.entries}, {self.degree}")


def make_state(cfg: Config, trace_arrays: tuple, width: int, line_bits: int) -> tuple[np.ndarray, np.ndarray]:
    st = np.full((cfg.entries, 4), -1, np.int64)
    st[:, STRIDE] = 0
    st[:, CONF] = 0
    return st, np.array([cfg.entries, cfg.degree], np.int64)


def budget(cfg: Config, width: int) -> dict[str, int]:
    # tag (2 B) + last line (6 B) + stride (2 B) + 2-bit confidence, rounded to 11 B per entry
    return {"entries": cfg.entries, "bytes": cfg.entries * 11}


@numba.njit(cache=True)
def operate(H: tuple, tr: tuple, st: np.ndarray, prm: np.ndarray, i: int, t: int, lines: np.ndarray,
            hits: np.ndarray, n: int) -> None:
    if tr[0][i] != 0:  # loads only
        return
    pc = tr[1][i]
    e = pc % prm[0]
    for q in range(n):
        line = lines[q]
        if st[e, PC] != pc:
            st[e, PC] = pc
            st[e, LAST] = line
            st[e, STRIDE] = 0
            st[e, CONF] = 0
            continue
        s = line - st[e, LAST]
        if s == 0:
            continue
        if s == st[e, STRIDE]:
            st[e, CONF] = min(st[e, CONF] + 1, 3)
        else:
            st[e, STRIDE] = s
            st[e, CONF] = 1
        st[e, LAST] = line
        if st[e, CONF] >= 2:
            for k in range(1, prm[1] + 1):
                prefetch_access(H, line + k * s, t)
