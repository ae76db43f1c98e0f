"""DRAM: exact fractional bandwidth and the open-page bank model, against hand-computed timings."""

from fractions import Fraction

import pytest

from simcim.npu.cache import CacheConfig, HierarchyConfig
from simcim.npu.core import CoreConfig, simulate
from simcim.npu.dram import (
    PRESETS,
    ROW_CONFLICTS,
    ROW_HITS,
    ROW_MISSES,
    DRAMConfig,
    dram_access,
    make_dram,
    preset_cycles,
)
from simcim.npu.trace import WorkloadSpec, build_trace

LINE = 64


def burst(cfg: DRAMConfig, n: int) -> list[int]:
    D = make_dram(cfg, LINE)
    return [dram_access(*D, line, 0, False) for line in range(n)]


@pytest.mark.parametrize("bpc", [20.0, 33.0, 12.8, 1000.0, 0.5])
def test_fractional_bandwidth_is_exact(bpc):
    # n lines on one channel at once: the k-th is delivered at ceil(k * 64 / bpc) + latency
    n, latency = 50, 7
    done = burst(DRAMConfig(latency, 1, bpc), n)
    s = Fraction(LINE) / Fraction(bpc).limit_denominator(1024)
    assert done == [latency + -(-(k + 1) * s // 1) for k in range(n)]


def test_bandwidth_steps_are_gone():
    # ceil(64 / bw)-cycle transfers made these pairs identical; an exact rate separates them
    for a, b in [(16.0, 20.0), (33.0, 63.0), (64.0, 1000.0)]:
        assert burst(DRAMConfig(0, 1, a), 40)[-1] > burst(DRAMConfig(0, 1, b), 40)[-1]


def test_bandwidth_sweep_of_a_whole_simulation_is_monotone():
    trace = build_trace(WorkloadSpec(workload="spmv", rows=64, cols=8192, density=0.02), 0)
    cycles = []
    for bw in (16.0, 20.0, 24.0, 33.0, 48.0, 63.0):
        hier = HierarchyConfig(levels=(CacheConfig("l2", 16, 4, 2),), dram=DRAMConfig(20, 1, bw), mshrs=64)
        cycles.append(simulate(trace, hier, CoreConfig(ports=8), "nvr")["cycles"])
    assert all(a > b for a, b in zip(cycles, cycles[1:])), cycles


def banked(scheduling: str = "fcfs", mapping: str = "row_bank_channel_column", banks: int = 4,
           row_bytes: int = 1024, channels: int = 1) -> DRAMConfig:
    # bus: one line a cycle; t_rcd 10, t_cas 5, t_rp 8, no latency after the bus
    return DRAMConfig(0, channels, 64.0, "banks", banks, row_bytes, t_rcd=10, t_cas=5, t_rp=8, mapping=mapping,
                      scheduling=scheduling)


def test_stream_hits_the_open_row():
    D = make_dram(banked(), LINE)
    # 16 lines = one 1 KiB row of bank 0: one activate, then 15 row hits, one column read a cycle
    done = [dram_access(*D, line, 0, False) for line in range(16)]
    assert done == [10 + k + 5 + 1 for k in range(16)]
    dstats = D[3]
    assert (dstats[ROW_MISSES], dstats[ROW_HITS], dstats[ROW_CONFLICTS]) == (1, 15, 0)


def test_random_gather_pays_precharge_and_activate():
    D = make_dram(banked(banks=1), LINE)
    rows = [0, 3, 1, 7, 2]
    t = 0
    for k, r in enumerate(rows):
        t = 1000 * k  # far apart: no queueing
        done = dram_access(*D, r * 16, t, False)
        expected = t + (10 if k == 0 else 8 + 10) + 5 + 1
        assert done == expected
    assert (D[3][ROW_MISSES], D[3][ROW_CONFLICTS]) == (1, 4)


def test_bank_conflict_serializes_while_other_banks_overlap():
    cfg = banked(banks=2)
    # two rows of one bank at once: the second waits for the first's column read, then precharges
    D = make_dram(cfg, LINE)
    a = dram_access(*D, 0, 0, False)            # bank 0, row 0
    b = dram_access(*D, 2 * 16, 0, False)       # bank 0, row 1
    assert a == 10 + 5 + 1
    assert b == (10 + 1) + 8 + 10 + 5 + 1
    # the same two requests to different banks proceed in parallel (only the bus orders them)
    D = make_dram(cfg, LINE)
    a = dram_access(*D, 0, 0, False)            # bank 0
    b = dram_access(*D, 16, 0, False)           # bank 1
    assert (a, b) == (16, 16 + 1)


def test_frfcfs_serves_a_row_hit_before_a_queued_conflict():
    # A (row 0), B (row 1) and C (row 0 again) to one bank; C arrives before B's precharge starts
    seq = [(0, 0), (16, 0), (0, 1)]
    fcfs = make_dram(banked("fcfs", banks=1), LINE)
    fr = make_dram(banked("frfcfs", banks=1), LINE)
    got_fcfs = [dram_access(*fcfs, ln, t, False) for ln, t in seq]
    got_fr = [dram_access(*fr, ln, t, False) for ln, t in seq]
    assert got_fcfs[:2] == got_fr[:2] == [16, 11 + 18 + 6]
    # FCFS: C re-opens row 0 after B; FR-FCFS: C reads the still-open row 0 right after A
    assert got_fcfs[2] == (29 + 1) + 18 + 6
    assert got_fr[2] == 11 + 5 + 1
    assert fr[3][ROW_HITS] == 1 and fcfs[3][ROW_HITS] == 0


def test_address_mapping_decides_what_a_stream_touches():
    # row_column_bank_channel spreads consecutive lines over banks: a 4-line stream opens 4 banks
    D = make_dram(banked(mapping="row_column_bank_channel"), LINE)
    for line in range(4):
        dram_access(*D, line, 0, False)
    assert (D[3][ROW_MISSES], D[3][ROW_HITS]) == (4, 0)
    D = make_dram(banked(mapping="row_bank_channel_column"), LINE)
    for line in range(4):
        dram_access(*D, line, 0, False)
    assert (D[3][ROW_MISSES], D[3][ROW_HITS]) == (1, 3)


def test_presets_convert_ns_to_cycles():
    assert preset_cycles("ddr4_3200", 1.0) == {"banks": 16, "row_bytes": 8192, "t_rcd": 14, "t_cas": 14,
                                               "t_rp": 14}
    assert preset_cycles("hbm3", 1.0)["t_rcd"] == 20
    assert preset_cycles("hbm2", 2.0)["t_cas"] == 28
    assert set(PRESETS) == {"ddr4_3200", "hbm2", "hbm3"}
    with pytest.raises(ValueError, match="dram preset: unknown 'ddr5'"):
        preset_cycles("ddr5", 1.0)


def test_bank_model_separates_stream_from_gather_in_a_simulation():
    # a streaming SpMV row-pointer/index walk hits open rows far more often than its random gathers
    trace = build_trace(WorkloadSpec(workload="spmv", rows=256, cols=1 << 18, density=0.001), 0)
    base = DRAMConfig(60, 2, 16.0, "banks", **preset_cycles("ddr4_3200", 1.0))
    hier = HierarchyConfig(levels=(CacheConfig("l2", 64, 16, 20),), dram=base)
    m = simulate(trace, hier, CoreConfig(), "none")
    assert m["dram_row_hits"] + m["dram_row_misses"] + m["dram_row_conflicts"] == m["dram_reads"] + m["dram_writes"]
    assert 0 < m["dram_row_hit_rate"] < 1
    simple = simulate(trace, HierarchyConfig(levels=hier.levels, dram=DRAMConfig(60, 2, 16.0)), CoreConfig(), "none")
    assert simple["dram_row_hits"] == 0 and m["cycles"] != simple["cycles"]


def test_bad_dram_parameters_are_one_line_errors():
    with pytest.raises(ValueError, match="dram model: unknown 'dram3'"):
        DRAMConfig(model="dram3")
    with pytest.raises(ValueError, match="dram scheduling"):
        DRAMConfig(scheduling="lifo")
    with pytest.raises(ValueError, match="dram mapping"):
        DRAMConfig(mapping="x")
    with pytest.raises(ValueError, match="dram t_rp"):
        DRAMConfig(t_rp=-1)
    with pytest.raises(ValueError, match="row_bytes must be a multiple"):
        make_dram(DRAMConfig(model="banks", row_bytes=100), LINE)
    with pytest.raises(ValueError, match="bytes_per_cycle must be >= 1/1024"):
        DRAMConfig(bytes_per_cycle=1e-6)
    assert DRAMConfig(bytes_per_cycle=20.0).transfer_cycles(LINE) == Fraction(16, 5)
