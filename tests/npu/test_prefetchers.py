"""Each prefetcher against a trace whose ideal prefetch set is known by hand."""

import numpy as np
import scipy.sparse as sp

from simcim.npu import prefetchers
from simcim.npu.cache import FLAG_PF, PF_ISSUED, CacheConfig, HierarchyConfig, make_hierarchy
from simcim.npu.core import CoreConfig, run_core, simulate
from simcim.npu.dram import DRAMConfig
from simcim.npu.trace import BASE_INDEX, BASE_TABLE, PC_GATHER, gather_reduce_trace

LINE_BITS = 6


def big_cache() -> HierarchyConfig:
    # 1 MiB, 16-way: nothing these traces touch is ever evicted
    return HierarchyConfig(levels=(CacheConfig("c", 1024, 16, 1),), dram=DRAMConfig(50, 2, 16.0))


def run(trace, name, cfg=None, hier=None):
    """Simulate and return (metrics, set of lines that were prefetched, used or not)."""
    hier = hier or big_cache()
    mod = prefetchers.get(name)
    cfg = cfg or mod.Config()
    tr = trace.arrays()
    H = make_hierarchy(hier)
    st, prm = mod.make_state(cfg, tr, 16, LINE_BITS)
    out = np.zeros(4, np.int64)
    run_core(H, tr, prefetchers.get(name), st, prm, LINE_BITS, 2, 1, out)
    m = simulate(trace, hier, CoreConfig(), name, cfg)
    demanded = set((trace.addr >> LINE_BITS).tolist())
    present = set(H[0][H[0] >= 0].tolist())
    unused_pf = set(H[0][(H[3] & FLAG_PF) != 0].tolist())
    prefetched = (present - demanded) | unused_pf
    return m, prefetched, H


def test_none_issues_nothing(loads_then_compute):
    m, pf, _ = run(loads_then_compute([0, 1, 2, 3]), "none")
    assert m["pf_issued"] == 0 and pf == set()


def test_next_line_prefetches_the_line_after_each_miss(loads_then_compute):
    m, pf, _ = run(loads_then_compute([0, 10, 20]), "next_line")
    assert pf == {1, 11, 21}
    assert m["pf_issued"] == 3 and m["pf_useful"] == 0
    m, pf, _ = run(loads_then_compute([0, 10]), "next_line", prefetchers.next_line.Config(degree=3))
    assert pf == {1, 2, 3, 11, 12, 13}


def test_stride_follows_a_pc_stride_after_two_confirmations(loads_then_compute):
    # strides 3, 3 confirm at line 6 -> 9, 12, 15, 18; line 9 (a prefetch hit) adds 21
    m, pf, _ = run(loads_then_compute([0, 3, 6, 9]), "stride")
    assert pf | {9} == {9, 12, 15, 18, 21}
    assert m["pf_issued"] == 5 and m["pf_useful"] == 1


def test_stream_runs_a_pointer_ahead_of_an_ascending_stream(loads_then_compute):
    # confirmed at 102; 4 lines per access, at most 16 ahead: ends at 109 + 16
    m, pf, _ = run(loads_then_compute(list(range(100, 110))), "stream")
    assert pf | set(range(103, 110)) == set(range(103, 126))
    assert m["pf_issued"] == 23 and m["pf_useful"] == 7
    m, pf, _ = run(loads_then_compute(list(range(200, 190, -1))), "stream")
    assert pf | set(range(191, 198)) == set(range(175, 198))


def indirect_trace(n=256, width=16, seed=0):
    """One row gathering n table elements, each on its own line (index values are multiples of 16)."""
    rng = np.random.default_rng(seed)
    cols = rng.permutation(4096)[:n] * 16
    m = sp.csr_matrix((np.ones(n, np.float32), (np.zeros(n, int), np.sort(cols))), shape=(1, 65536))
    return gather_reduce_trace(m, feat=1, width=width, weighted=False)


def test_imp_prefetches_exactly_the_indirect_targets_distance_ahead():
    tr = indirect_trace()
    cols = tr.value[tr.inst_start[1]:tr.inst_start[1] + 16]
    assert np.all(cols % 16 == 0)
    d = 32
    m, pf, _ = run(tr, "imp", prefetchers.imp.Config(distance=d))
    idx_vals = np.sort(tr.value[(tr.addr >= BASE_INDEX) & (tr.addr < BASE_TABLE)])
    target_lines = (BASE_TABLE + idx_vals * 4) >> LINE_BITS
    index_lines = (BASE_INDEX + 4 * np.arange(256)) >> LINE_BITS
    # the pattern is confirmed by the first gather; from the second index vector (elements 16..31) on,
    # every element j triggers element j + 32: targets of elements 48..255 and index lines 3..15
    ideal = set(target_lines[48:].tolist()) | set(index_lines[48:].tolist())
    gather = tr.inst_pc == PC_GATHER
    assert gather.sum() == 16
    assert m["pf_useless"] == 0 and pf == set()  # everything prefetched was used
    assert m["pf_issued"] == len(ideal) == 208 + 13
    assert m["pf_useful"] == len(ideal)
    # load misses left: rowptr, 3 index lines, 48 gathered lines; the output line is a store miss
    assert m["l0_misses"] == 1 + 3 + 48
    assert m["store_misses"] == 1


def test_nvr_prefetches_every_future_load_line_and_nothing_else():
    tr = indirect_trace()
    m, pf, _ = run(tr, "nvr", prefetchers.nvr.Config(distance=64, throttle=False))
    assert pf == set()  # no line outside the trace's loads, none unused
    loads = tr.inst_kind == 0
    load_lanes = np.repeat(loads, np.diff(tr.inst_start))
    load_lines = set((tr.addr[load_lanes] >> LINE_BITS).tolist())
    # every load line but the row pointer's (instruction 0, before NVR starts) is prefetched
    assert m["pf_issued"] == len(load_lines) - 1
    assert m["pf_useful"] == m["pf_issued"]
    assert m["l0_misses"] == 1  # the row pointer
    assert m["store_misses"] == 1  # stores are not prefetched


def test_nvr_cuts_misses_and_cycles_against_imp_on_rows_of_several_lines():
    # SpMM-like gathers of 64-element rows (4 lines per index): IMP fetches only a row's first line
    rng = np.random.default_rng(1)
    m = sp.random(64, 2048, density=0.01, format="csr", random_state=rng)
    tr = gather_reduce_trace(m, feat=64, width=16, weighted=True)
    hier = HierarchyConfig(levels=(CacheConfig("npu", 64, 4, 2), CacheConfig("l2", 128, 8, 20)),
                           dram=DRAMConfig(100, 2, 16.0))
    base = simulate(tr, hier, CoreConfig(), "none")
    imp = simulate(tr, hier, CoreConfig(), "imp")
    nvr = simulate(tr, hier, CoreConfig(), "nvr")
    assert nvr["misses"] < 0.2 * base["misses"]
    assert nvr["misses"] < imp["misses"]
    assert nvr["cycles"] < imp["cycles"] < base["cycles"]
    assert nvr["pf_budget_bytes"] > 0


def test_pf_issued_stat_matches_metric(loads_then_compute):
    m, _, H = run(loads_then_compute([0, 10, 20]), "next_line")
    assert H[5][0, PF_ISSUED] == m["pf_issued"]


def chain_trace(iters=24, width=4):
    """A[B[C[i]]]: C streams, B and A are gathered; every touched element is on its own line."""
    from simcim.npu.trace import COMPUTE, LOAD

    from .conftest import make_trace

    rng = np.random.default_rng(2)
    insts, producers, values = [], {}, {}
    lane = 0
    b_idx = rng.permutation(10_000)[: iters * width]
    a_idx = rng.permutation(10_000)[: iters * width]
    for it in range(iters):
        c0 = lane
        insts.append((LOAD, 1, [(1 << 32) + 64 * (it * width + k) for k in range(width)], -1))
        for k in range(width):
            values[c0 + k] = int(b_idx[it * width + k])
        lane += width
        b0 = lane
        insts.append((LOAD, 2, [(2 << 32) + 64 * int(b_idx[it * width + k]) for k in range(width)],
                      len(insts) - 1))
        for k in range(width):
            producers[b0 + k] = c0 + k
            values[b0 + k] = int(a_idx[it * width + k])
        lane += width
        insts.append((LOAD, 3, [(3 << 32) + 64 * int(a_idx[it * width + k]) for k in range(width)],
                      len(insts) - 1))
        for k in range(width):
            producers[lane + k] = b0 + k
        lane += width
        insts.append((COMPUTE, 4, [], -1))
    return make_trace(insts, producers, values)


def test_nvr_follows_a_two_level_index_chain():
    from simcim.npu.cache import lookup

    tr = chain_trace()
    hier = big_cache()
    m, pf, H = run(tr, "nvr", prefetchers.nvr.Config(distance=1024, max_distance=1024, throttle=False), hier)
    loads = np.repeat(tr.inst_kind == 0, np.diff(tr.inst_start))
    lines = set((tr.addr[loads] >> LINE_BITS).tolist())
    first = set((tr.addr[: tr.inst_start[1]] >> LINE_BITS).tolist())
    assert pf == set()
    assert m["pf_issued"] == len(lines - first) and m["l0_misses"] == len(first)
    # each A line cannot arrive before the B line whose value addresses it, plus a DRAM trip
    dram_trip = 50 + 4
    for i in range(2, tr.n_instructions, 4):
        for a in range(tr.inst_start[i], tr.inst_start[i + 1]):
            b = tr.producer[a]
            ready_a = H[2][lookup(H, 0, tr.addr[a] >> LINE_BITS)]
            ready_b = H[2][lookup(H, 0, tr.addr[b] >> LINE_BITS)]
            assert ready_a >= ready_b + dram_trip


def test_nvr_throttle_backs_off_when_prefetches_are_evicted_unused():
    m = sp.random(128, 65536, density=0.004, format="csr", random_state=np.random.default_rng(3))
    tr = gather_reduce_trace(m, feat=1, width=16, weighted=False)
    tiny = HierarchyConfig(levels=(CacheConfig("c", 4, 4, 1), CacheConfig("l2", 1024, 16, 10)),
                           dram=DRAMConfig(50, 2, 16.0))
    fixed = {d: run(tr, "nvr", prefetchers.nvr.Config(distance=d, min_distance=4, max_distance=512,
                                                       throttle=False), tiny)[0] for d in (4, 16, 64, 512)}
    cfg_thr = prefetchers.nvr.Config(distance=512, min_distance=4, max_distance=512, throttle=True)
    thr, _, _ = run(tr, "nvr", cfg_thr, tiny)
    assert fixed[512]["pf_useless"] > 10 * fixed[512]["pf_useful"]
    # it backs off from 512, but not into the short distances whose prefetches come late
    assert thr["cycles"] < 0.96 * fixed[512]["cycles"]
    assert thr["cycles"] < 0.9 * fixed[4]["cycles"]
    assert thr["cycles"] <= 1.05 * min(m["cycles"] for m in fixed.values())


def test_nvr_waiting_for_loop_bounds_prefetches_the_same_lines_later():
    rng = np.random.default_rng(4)
    m = sp.random(256, 65536, density=0.002, format="csr", random_state=rng)
    tr = gather_reduce_trace(m, feat=1, width=16, weighted=True)
    rowptr = tr.inst_pc == 0
    assert np.all(tr.inst_ctrl[rowptr] == -1)
    assert np.all(tr.inst_pc[tr.inst_ctrl[~rowptr]] == 0)  # every other instruction hangs off a row pointer
    hier = HierarchyConfig(levels=(CacheConfig("npu", 16, 4, 2), CacheConfig("l2", 256, 16, 20)),
                           dram=DRAMConfig(100, 2, 16.0))
    known = simulate(tr, hier, CoreConfig(), "nvr", prefetchers.nvr.Config())
    waits = simulate(tr, hier, CoreConfig(), "nvr", prefetchers.nvr.Config(known_loop_bounds=False))
    base = simulate(tr, hier, CoreConfig(), "none")
    assert waits["pf_issued"] > 0.9 * known["pf_issued"]
    assert known["cycles"] < waits["cycles"] < base["cycles"]
