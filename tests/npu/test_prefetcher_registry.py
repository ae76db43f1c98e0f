"""Prefetchers are found by name: a module from outside the package registers itself; unknown names fail."""

import dataclasses
import sys
import types

import numba
import numpy as np
import pytest

from simcim.npu import prefetchers
from simcim.npu.cache import CacheConfig, HierarchyConfig, prefetch_access
from simcim.npu.core import CoreConfig, simulate
from simcim.npu.dram import DRAMConfig
from simcim.npu.experiment import Params
from simcim.npu.trace import LOAD, WorkloadSpec, build_trace

# ---- a toy prefetcher defined in this test file: on every load line L, prefetch L + skip

NAME = "toy_skip"


@dataclasses.dataclass(frozen=True)
class Config:
    skip: int = 2


def make_state(cfg: Config, trace_arrays: tuple, width: int, line_bits: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((1, 1), np.int64), np.array([cfg.skip], np.int64)


def budget(cfg: Config, width: int) -> dict[str, int]:
    return {"entries": 1, "bytes": 2}


@numba.njit
def operate(H, tr, st, prm, i, t, lines, hits, n):
    if tr[0][i] != LOAD:
        return
    for q in range(n):
        st[0, 0] += 1
        prefetch_access(H, lines[q] + prm[0], t)


THIS = sys.modules[__name__]


@pytest.fixture
def toy():
    prefetchers.register(THIS)
    yield THIS
    prefetchers.unregister(NAME)


def hierarchy() -> HierarchyConfig:
    return HierarchyConfig(levels=(CacheConfig("c", 64, 4, 1),), dram=DRAMConfig(50, 2, 16.0))


def test_a_prefetcher_registered_from_a_test_file_runs(toy):
    trace = build_trace(WorkloadSpec(workload="spmv", rows=64, cols=4096, density=0.01), 0)
    m = simulate(trace, hierarchy(), CoreConfig(), NAME)
    assert m["pf_issued"] > 0 and m["pf_budget_bytes"] == 2
    # it really ran this module's operate: skipping 2 lines is not next-line
    nl = simulate(trace, hierarchy(), CoreConfig(), "next_line")
    assert (m["pf_issued"], m["cycles"]) != (nl["pf_issued"], nl["cycles"])
    # the experiment kind accepts it by name too
    assert Params(prefetcher=NAME, rows=8, cols=64).prefetcher_config() == Config()


def test_unknown_prefetcher_is_an_error_not_nvr():
    trace = build_trace(WorkloadSpec(workload="spmv", rows=8, cols=256, density=0.05), 0)
    with pytest.raises(ValueError, match=r"prefetcher: unknown 'nvr2' \(known: none, next_line"):
        simulate(trace, hierarchy(), CoreConfig(), "nvr2")
    with pytest.raises(ValueError, match="prefetcher: unknown 'nvr2'"):
        Params(prefetcher="nvr2")


def test_a_module_missing_a_hook_is_refused():
    mod = types.ModuleType("half_done")
    mod.NAME, mod.Config = "half_done", Config
    with pytest.raises(ValueError, match="prefetcher module half_done: missing make_state, budget, operate"):
        prefetchers.register(mod)
    mod.make_state, mod.budget, mod.operate = make_state, budget, operate.py_func
    with pytest.raises(ValueError, match="operate must be compiled with numba.njit"):
        prefetchers.register(mod)
    mod.operate, mod.NAME = operate, "nvr"
    with pytest.raises(ValueError, match="'nvr' is already registered"):
        prefetchers.register(mod)


def test_operate_with_the_wrong_arguments_is_a_clear_error():
    @numba.njit
    def bad(H, tr, st, prm, i, t, lines, hits, n):
        return H[0] + tr  # adds a tuple to an array: does not type

    mod = types.ModuleType("bad_pf")
    mod.NAME, mod.Config, mod.make_state, mod.budget, mod.operate = "bad_pf", Config, make_state, budget, bad
    prefetchers.register(mod)
    try:
        trace = build_trace(WorkloadSpec(workload="spmv", rows=8, cols=256, density=0.05), 0)
        with pytest.raises(ValueError, match="prefetcher 'bad_pf': operate does not compile"):
            simulate(trace, hierarchy(), CoreConfig(), "bad_pf")
    finally:
        prefetchers.unregister("bad_pf")
