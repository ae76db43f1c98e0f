import numpy as np
import pytest

from simcim.npu.trace import COMPUTE, LOAD, Trace


def make_trace(insts: list[tuple[int, int, list[int], int]], producers: dict[int, int] | None = None,
               values: dict[int, int] | None = None) -> Trace:
    """Instructions as (kind, pc, byte addresses, dep); producers/values keyed by global lane."""
    kind, pc, start, dep, addr = [], [], [0], [], []
    for k, p, addrs, d in insts:
        kind.append(k)
        pc.append(p)
        dep.append(d)
        addr.extend(addrs)
        start.append(len(addr))
    n = len(addr)
    prod = np.full(n, -1, np.int64)
    val = np.zeros(n, np.int64)
    for lane, src in (producers or {}).items():
        prod[lane] = src
    for lane, v in (values or {}).items():
        val[lane] = v
    return Trace(np.array(kind, np.int8), np.array(pc, np.int32), np.array(start, np.int64),
                 np.array(dep, np.int64), np.array(addr, np.int64), prod, val, name="hand")


@pytest.fixture
def loads_then_compute():
    def build(lines: list[int], pc: int = 7) -> Trace:
        insts = []
        for ln in lines:
            insts.append((LOAD, pc, [ln * 64], -1))
            insts.append((COMPUTE, 9, [], -1))
        return make_trace(insts)
    return build
