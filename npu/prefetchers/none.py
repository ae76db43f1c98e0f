"""No prefetching: the baseline every speedup is measured against."""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

NAME = "none"


@dataclasses.dataclass(frozen=True)
class Config:
    pass


def make_state(cfg: Config, trace_arrays: tuple, width: int, line_bits: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((1, 1), np.int64), np.zeros(1, np.int64)


def budget(cfg: Config, width: int) -> dict[str, int]:
    return {"entries": 0, "bytes": 0}


@numba.njit(cache=True)
def operate(H: tuple, tr: tuple, st: np.ndarray, prm: np.ndarray, i: int, t: int, lines: np.ndarray,
            hits: np.ndarray, n: int) -> None:
    return
