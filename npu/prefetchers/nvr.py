"""NVR: NPU vector runahead, a decoupled sub-thread that runs ahead of the vector unit.

The sub-thread executes the kernel's address slice ahead of the core, one vector
instruction per cycle, never more than ``distance`` instructions ahead. It has two
decoupled stages: stage A walks the stream and prefetches loads whose addresses need no
loaded data (the index and value streams, row pointers) at full rate; stage B takes each
load whose addresses come from loaded indices, in program order, once the index data it
needs has arrived, and prefetches all of its lanes' lines at once (vector-wide, so a gather
of whole rows is covered, and chains of several indirections are followed). Stage B blocking
on index data does not stop stage A. The sub-thread uses the time the core spends stalled,
because it only falls behind the wall clock, never the core.

Throttling: the counters propose, the core's progress decides. Every ``epoch`` prefetches
it weighs the prefetched lines evicted unused from the NPU-side level against the used ones
that arrived late, a late one counting ``late_weight`` evicted ones (an evicted line was
also filled into L2 on its way, so using it costs an L2 hit; a late one waits on DRAM). If
evictions exceed a quarter of the used lines and outweigh lateness it proposes halving the
distance; if late ones exceed a quarter and outweigh evictions, doubling. A change is kept
only if it does not slow the core: the epoch after it settles, and if the core then
advances over 2% fewer instructions per cycle than in the epoch before the change, the
change is undone and that distance is not tried again (it becomes a floor or a ceiling).
Measuring what the change did matters because the counters alone mislead: on SpMV with a
small NPU cache the evicted prefetches still hit in L2 and halving only made them late
(+8% cycles), and over DRAM banks lateness comes from row conflicts, which a longer
distance does not cure (doubling overflowed L2: +13%).

Reads of the future instruction stream are what runahead executes. With
``known_loop_bounds`` (the default) control flow is taken as known, so the sub-thread never
mispredicts; without it, stage A may not enter an instruction before the data of the load
that controls it (the trace's ``inst_ctrl``: its row's row pointers, the loop bound) has
arrived, as a non-speculative sub-thread would have to.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np

from simcim.npu.cache import PF_ISSUED, PF_LATE, PF_USEFUL, PF_USELESS, prefetch_access

NAME = "nvr"
# scalar slots after the per-instruction rows
(FRONTIER, TA, TB, DIST, LAST_CALL, E_ISSUED, E_USEFUL, E_USELESS, E_LATE, FLOOR, CEIL, E_INST, E_CYCLE, RATE,
 MOVE, SHARE) = range(16)
SETTLING = 2  # MOVE is +-SETTLING during the epoch right after a change of distance
N_SCALARS = 16
VECTOR_REGS = 8


@dataclasses.dataclass(frozen=True)
class Config:
    distance: int = 128
    min_distance: int = 16
    max_distance: int = 1024
    epoch: int = 1024
    throttle: bool = True
    ports: int = 4  # lines the sub-thread can issue per cycle
    prefetch_queue: int = 64  # for the hardware budget: in-flight index vectors it must hold
    known_loop_bounds: bool = True
    late_weight: int = 8  # throttle: one late prefetch weighs this many evicted-unused ones

    def __post_init__(self) -> None:
        if not 1 <= self.min_distance <= self.distance <= self.max_distance:
            raise ValueError(f"nvr: need 1 <= min_distance <= distance <= max_distance, got "
                             f"{self.min_distance}, {self.distance}, {self.max_distance}")
        if self.epoch < 1 or self.ports < 1 or self.late_weight < 1:
            raise ValueError(f"nvr: epoch, ports and late_weight must be >= 1, got {self.epoch}, {self.ports}, "
                             f"{self.late_weight}")


def make_state(cfg: Config, trace_arrays: tuple, width: int, line_bits: int) -> tuple[np.ndarray, np.ndarray]:
    n_inst = len(trace_arrays[0])
    st = np.full((n_inst + N_SCALARS, 1), -1, np.int64)
    s = n_inst
    st[s:, 0] = 0
    st[s + DIST, 0] = cfg.distance
    st[s + FLOOR, 0] = cfg.min_distance
    st[s + CEIL, 0] = cfg.max_distance
    prm = np.array([cfg.distance, cfg.min_distance, cfg.max_distance, cfg.epoch, int(cfg.throttle),
                    line_bits, cfg.ports, n_inst, int(cfg.known_loop_bounds), cfg.late_weight], np.int64)
    return st, prm


def budget(cfg: Config, width: int) -> dict[str, int]:
    """Storage the sub-thread adds: a vector register snapshot, the index buffer, control."""
    regs = VECTOR_REGS * width * 4
    # each in-flight index vector: width 4-byte indices + a 6-byte line tag + 2 bytes of state
    index_buffer = cfg.prefetch_queue * (width * 4 + 8)
    # frontier and distance counters, loop bounds, stage B head, throttle counters: 16 x 8 B
    control = 16 * 8
    return {"entries": VECTOR_REGS + cfg.prefetch_queue + 16, "bytes": regs + index_buffer + control}


@numba.njit(cache=True)
def operate(H: tuple, tr: tuple, st: np.ndarray, prm: np.ndarray, i: int, t: int, lines: np.ndarray,
            hits: np.ndarray, n: int) -> None:
    kind, start, dep, addr, ctrl = tr[0], tr[2], tr[3], tr[4], tr[9]
    n_inst = prm[7]
    known_bounds = prm[8] != 0
    s = n_inst
    bits = prm[5]
    ports = prm[6]
    f = st[s + FRONTIER, 0]
    if f <= i:
        f = i + 1
    ta = max(st[s + TA, 0], st[s + LAST_CALL, 0])
    tb = st[s + TB, 0]
    dist = st[s + DIST, 0]
    while f < n_inst and f <= i + dist and ta <= t:
        c = ctrl[f]
        if not known_bounds and c >= 0:
            ta = max(ta, st[c, 0] if st[c, 0] >= 0 else t)
        if kind[f] == 0:
            d = dep[f]
            if d >= 0:
                rd = st[d, 0] if st[d, 0] >= 0 else t
                tb = max(tb + 1, rd, ta)
                issue = tb
            else:
                issue = ta
            r_max = issue
            prev = -1
            nl = 0
            for a in range(start[f], start[f + 1]):
                ln = addr[a] >> bits
                if ln == prev:
                    continue
                prev = ln
                r = prefetch_access(H, ln, issue + nl // ports)
                nl += 1
                if r > r_max:
                    r_max = r
            st[f, 0] = r_max
        ta += 1
        f += 1
    st[s + FRONTIER, 0] = f
    st[s + TA, 0] = ta
    st[s + TB, 0] = tb
    st[s + LAST_CALL, 0] = t
    if prm[4]:
        stats = H[5]
        if stats[0, PF_ISSUED] - st[s + E_ISSUED, 0] >= prm[3]:
            _throttle(st, s, prm, i, t, stats[0, PF_USEFUL] - st[s + E_USEFUL, 0],
                      stats[0, PF_USELESS] - st[s + E_USELESS, 0], stats[0, PF_LATE] - st[s + E_LATE, 0])
            st[s + E_ISSUED, 0] = stats[0, PF_ISSUED]
            st[s + E_USEFUL, 0] = stats[0, PF_USEFUL]
            st[s + E_USELESS, 0] = stats[0, PF_USELESS]
            st[s + E_LATE, 0] = stats[0, PF_LATE]


@numba.njit(cache=True)
def _throttle(st, s, prm, i, t, useful, useless, late):
    """End of an epoch: keep, undo or propose a change of distance (see the module docstring)."""
    dist = st[s + DIST, 0]
    rate = ((i - st[s + E_INST, 0]) << 20) // max(1, t - st[s + E_CYCLE, 0])  # instructions per cycle, 2^20
    move = st[s + MOVE, 0]
    first = st[s + E_INST, 0] == 0
    st[s + E_INST, 0] = i
    st[s + E_CYCLE, 0] = t
    if move == SETTLING or move == -SETTLING:
        st[s + MOVE, 0] = move // SETTLING
        return
    late_share = (late << 10) // max(1, useful)
    if move != 0 and (50 * rate < 49 * st[s + RATE, 0] or (move > 0 and 4 * late_share > 3 * st[s + SHARE, 0])):
        # it slowed the core by over 2%, or a doubling did not cut the late share by a quarter (the
        # lateness comes from DRAM queueing, not from the lead): undo it, never try that distance again
        if move < 0:
            st[s + DIST, 0] = dist * 2
            st[s + FLOOR, 0] = dist * 2
        else:
            st[s + DIST, 0] = dist // 2
            st[s + CEIL, 0] = dist // 2
        st[s + MOVE, 0] = 0
        return
    st[s + MOVE, 0] = 0
    st[s + RATE, 0] = rate
    if first:
        return  # the first epoch, with the cold start, only measures
    w = prm[9]
    if 4 * useless > useful and useless > w * late and dist // 2 >= st[s + FLOOR, 0]:
        st[s + DIST, 0] = dist // 2
        st[s + MOVE, 0] = -SETTLING
    elif 4 * late > useful and w * late > useless and dist * 2 <= st[s + CEIL, 0]:
        st[s + DIST, 0] = dist * 2
        st[s + MOVE, 0] = SETTLING
        st[s + SHARE, 0] = late_share
