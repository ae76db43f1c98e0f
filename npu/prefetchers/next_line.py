"""Next-line: on a demand miss to line L, prefetch L+1 .. L+degree."""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from simcim.npu.cache import prefetch_access

NAME = "next_line"


@dataclasses.dataclass(frozen=True)
class Config:
    degree: int = 1

    def __post_init__(self) -> None:
        if self.degree < 1:
            raise ValueError(f"next_line degree must be >= 1, got {self.degree}")


def make_state(cfg: Config, trace_arrays: tuple, width: int, line_bits: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((1, 1), np.int64), np.array([cfg.degree], np.int64)


def budget(cfg: Config, width: int) -> dict[str, int]:
    return {"entries": 0, "bytes": 0}


@numba.njit(cache=True)
def operate(H: tuple, tr: tuple, st: np.ndarray, prm: np.ndarray, i: int, t: int, lines: np.ndarray,
            hits: np.ndarray, n: int) -> None:
    for q in range(n):
        if hits[q] == 0:
            for k in range(1, prm[0] + 1):
                prefetch_access(H, lines[q] + k, t)
