"""Traces (lowering, dependence, save/load, workloads) and the core's timing on hand-built traces."""

import numpy as np
import pytest
import scipy.sparse as sp

from simcim.npu.cache import CacheConfig, HierarchyConfig
from simcim.npu.core import CoreConfig, simulate
from simcim.npu.dram import DRAMConfig
from simcim.npu.trace import (
    BASE_INDEX,
    BASE_TABLE,
    COMPUTE,
    LOAD,
    PC_GATHER,
    PC_INDEX,
    STORE,
    Trace,
    WorkloadSpec,
    build_trace,
    gather_reduce_trace,
    magnitude_pruned,
)

from .conftest import make_trace


def small_hierarchy(**kw) -> HierarchyConfig:
    return HierarchyConfig(levels=(CacheConfig("c", 4, 4, 1),), dram=DRAMConfig(10, 1, 64.0), **kw)


def test_lowering_records_addresses_values_and_dependence():
    m = sp.csr_matrix(np.array([[0, 1, 0, 1, 1], [1, 0, 0, 0, 0]], np.float32))
    tr = gather_reduce_trace(m, feat=2, width=2, weighted=False)
    kinds = [int(k) for k in tr.inst_kind]
    # row 0: rowptr, idx[0:2], 2 gathers (4 elements) each + compute, idx[2:3], gather+compute, store
    assert kinds[:8] == [LOAD, LOAD, LOAD, COMPUTE, LOAD, COMPUTE, LOAD, LOAD]
    idx_inst = 1
    assert tr.inst_pc[idx_inst] == PC_INDEX
    lanes = slice(tr.inst_start[idx_inst], tr.inst_start[idx_inst + 1])
    assert list(tr.addr[lanes]) == [BASE_INDEX, BASE_INDEX + 4]
    assert list(tr.value[lanes]) == [1, 3]
    g = 2
    assert tr.inst_pc[g] == PC_GATHER and tr.inst_dep[g] == idx_inst
    glanes = slice(tr.inst_start[g], tr.inst_start[g + 1])
    # column 1, elements 0 and 1 of its 2-element row (8 bytes per row)
    assert list(tr.addr[glanes]) == [BASE_TABLE + 8, BASE_TABLE + 12]
    assert list(tr.producer[glanes]) == [tr.inst_start[idx_inst]] * 2
    assert (tr.inst_kind == STORE).sum() == 2  # one 2-wide store per row
    img_addr, img_val = tr.memory_image()
    assert dict(zip(img_addr.tolist(), img_val.tolist())) == {BASE_INDEX: 1, BASE_INDEX + 4: 3,
                                                            BASE_INDEX + 8: 4, BASE_INDEX + 12: 0}


def test_trace_save_load_roundtrip(tmp_path):
    tr = build_trace(WorkloadSpec(workload="spmv", rows=32, cols=256, density=0.05), seed=3)
    path = tr.save(tmp_path / "t.npz")
    back = Trace.load(path)
    for f in ("inst_kind", "inst_pc", "inst_start", "inst_dep", "addr", "producer", "value"):
        assert np.array_equal(getattr(tr, f), getattr(back, f))
    assert back.name == tr.name
    with pytest.raises(ValueError, match="not found"):
        Trace.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("workload,structure", [("spmv", "random"), ("spmm", "powerlaw"), ("gnn", "powerlaw"),
                                                ("embedding_bag", "random"), ("spmv", "banded")])
def test_workloads_build(workload, structure):
    tr = build_trace(WorkloadSpec(workload=workload, structure=structure, rows=64, cols=512, density=0.02,
                                  feat=8), seed=0)
    assert tr.n_accesses > 0
    gathers = tr.inst_pc == PC_GATHER
    assert np.all(tr.inst_dep[gathers] >= 0)
    lanes = np.repeat(np.arange(tr.n_instructions), np.diff(tr.inst_start))
    assert np.all(tr.producer[np.isin(lanes, np.flatnonzero(gathers))] >= 0)


def test_matrix_market_and_pruned_weights(tmp_path):
    import scipy.io
    from safetensors.numpy import save_file

    m = sp.random(40, 60, density=0.1, format="coo", random_state=1)
    scipy.io.mmwrite(str(tmp_path / "m.mtx"), m)
    tr = build_trace(WorkloadSpec(workload="spmv", matrix_market=str(tmp_path / "m.mtx")), seed=0)
    assert (tr.inst_pc == PC_INDEX).sum() >= 40
    w = np.random.default_rng(0).standard_normal((48, 32)).astype(np.float32)
    save_file({"proj.weight": w, "bias": np.zeros(48, np.float32)}, str(tmp_path / "w.safetensors"))
    tr = build_trace(WorkloadSpec(workload="pruned_matmul", density=0.25, feat=4,
                                  weights=str(tmp_path / "w.safetensors")), seed=0)
    kept = magnitude_pruned(w, 0.75)
    assert kept.nnz == 48 * 32 // 4
    assert np.min(np.abs(kept.data)) >= np.max(np.abs(w[kept.toarray() == 0]))
    assert tr.n_accesses > 0
    (tmp_path / "bad.mtx").write_text("%%MatrixMarket matrix coordinate real general\n3 3 2\n1 1\n")
    with pytest.raises(ValueError, match="not a readable Matrix Market file"):
        build_trace(WorkloadSpec(workload="spmv", matrix_market=str(tmp_path / "bad.mtx")), 0)
    with pytest.raises(ValueError, match="weights file not found"):
        build_trace(WorkloadSpec(workload="pruned_matmul", weights=str(tmp_path / "none.safetensors")), 0)


def test_bad_workload_inputs():
    with pytest.raises(ValueError, match="workload: unknown"):
        WorkloadSpec(workload="conv")
    with pytest.raises(ValueError, match="density"):
        build_trace(WorkloadSpec(density=0.0), 0)
    with pytest.raises(ValueError, match="NaN"):
        magnitude_pruned(np.array([[1.0, np.nan]]), 0.5)


def test_core_stalls_on_use_of_a_miss():
    # load misses at 0 (data at 12), compute waits 1 -> 12, then runs 1 cycle
    tr = make_trace([(LOAD, 1, [0], -1), (COMPUTE, 2, [], -1)])
    m = simulate(tr, small_hierarchy(), CoreConfig(ports=1, compute_cycles=1))
    assert (m["cycles"], m["stall_cycles"]) == (13, 11)


def test_core_waits_for_index_before_dependent_load():
    # index load data at 12; gather issues at 12: tag 13, transfer 13..14, data 24; compute 24 -> 25
    tr = make_trace([(LOAD, 1, [0], -1), (LOAD, 3, [640], 0), (COMPUTE, 4, [], -1)],
                    producers={1: 0}, values={0: 10})
    m = simulate(tr, small_hierarchy(), CoreConfig(ports=1, compute_cycles=1))
    assert (m["cycles"], m["stall_cycles"]) == (25, 22)


def test_core_overlaps_independent_misses_up_to_mshrs():
    insts = [(LOAD, 1, [64 * k for k in range(4)], -1), (COMPUTE, 2, [], -1)]
    tr = make_trace(insts)
    # ports=4: four misses issue at 0, transfers serialise on the channel: data at 12, 13, 14, 15
    wide = simulate(tr, small_hierarchy(mshrs=4), CoreConfig(ports=4))
    assert wide["cycles"] == 16
    # one MSHR: each miss waits for the previous one's data
    narrow = simulate(tr, small_hierarchy(mshrs=1), CoreConfig(ports=4))
    assert narrow["cycles"] == 12 + 3 * 11 + 1
