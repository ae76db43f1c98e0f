"""Traces from files: ChampSim records written by our own writer, text/CSV lists, and clear refusals."""

import numpy as np
import pytest
import scipy.sparse as sp

from simcim.npu.cache import CacheConfig, HierarchyConfig
from simcim.npu.core import CoreConfig, simulate
from simcim.npu.dram import DRAMConfig
from simcim.npu.experiment import Params, run_trial
from simcim.npu.trace import COMPUTE, LOAD, PC_GATHER, PC_INDEX, STORE, Trace, gather_reduce_trace
from simcim.npu.traces import CHAMPSIM_RECORD, read_champsim, read_text, read_trace, sniff, write_champsim


def small_spmv() -> Trace:
    m = sp.random(48, 1 << 16, density=0.004, format="csr", random_state=np.random.default_rng(3))
    return gather_reduce_trace(m, feat=4, width=4, weighted=True, name="spmv")


def hierarchy() -> HierarchyConfig:
    return HierarchyConfig(levels=(CacheConfig("c", 16, 4, 2),), dram=DRAMConfig(100, 2, 16.0))


def test_champsim_records_are_64_bytes_in_champsim_order():
    rec = np.zeros(1, CHAMPSIM_RECORD)
    rec["ip"], rec["src_mem"][0, 0], rec["dst_reg"][0, 1] = 0x1234, 0xABC0, 7
    raw = rec.tobytes()
    assert len(raw) == 64
    assert int.from_bytes(raw[0:8], "little") == 0x1234
    assert raw[11] == 7                                        # destination_registers[1]
    assert int.from_bytes(raw[32:40], "little") == 0xABC0      # source_memory[0], after 2 destination addresses


@pytest.mark.parametrize("compression", ["", "xz", "gz"])
def test_champsim_round_trip_end_to_end(tmp_path, compression):
    orig = small_spmv()
    path = write_champsim(orig, tmp_path / f"t.champsim{'.' + compression if compression else ''}", compression)
    assert sniff(path) == "champsim" + (f".{compression}" if compression else "")
    back = read_trace(path)
    # every access comes back, in order, loads as loads and stores as stores
    mem = orig.inst_kind != COMPUTE
    assert back.n_accesses == orig.n_accesses
    assert np.array_equal(back.addr, orig.addr)
    lane_kind = np.repeat(orig.inst_kind, np.diff(orig.inst_start))
    back_kind = np.repeat(back.inst_kind, np.diff(back.inst_start))
    assert np.array_equal(lane_kind, back_kind)
    assert (back.inst_kind == COMPUTE).sum() == (orig.inst_kind == COMPUTE).sum()
    # the index chain is recovered from the registers: each gather depends on a load of its own index
    gathers = np.flatnonzero((back.inst_kind == LOAD) & (back.inst_dep >= 0))
    assert len(gathers) == (orig.inst_pc[mem] == PC_GATHER).sum()
    pc_of = {int(p): int(o) for p, o in zip(back.inst_pc, _orig_pc_per_back_inst(orig, back))}
    for g in gathers:
        assert pc_of[int(back.inst_pc[g])] == PC_GATHER
        producer = back.inst_dep[g]
        lanes = back.addr[back.inst_start[producer]:back.inst_start[producer + 1]]
        idx = orig.addr[np.isin(orig.addr, lanes)]
        assert pc_of[int(back.inst_pc[producer])] == PC_INDEX and len(idx)
    # and NVR follows it: the simulation of the read-back trace matches the original closely
    a = simulate(orig, hierarchy(), CoreConfig(), "nvr")
    b = simulate(back, hierarchy(), CoreConfig(), "nvr")
    base = simulate(back, hierarchy(), CoreConfig(), "none")
    assert b["misses"] <= 0.2 * base["misses"]
    assert b["cycles"] == pytest.approx(a["cycles"], rel=0.25)
    assert base["cycles"] / b["cycles"] > 2


def _orig_pc_per_back_inst(orig: Trace, back: Trace) -> list[int]:
    # map each read-back instruction to the original pc of its first lane (computes: the FMA pc)
    lane_pc = np.repeat(orig.inst_pc, np.diff(orig.inst_start))
    fma = int(orig.inst_pc[orig.inst_kind == COMPUTE][0])
    return [int(lane_pc[back.inst_start[i]]) if back.inst_start[i + 1] > back.inst_start[i] else fma
            for i in range(back.n_instructions)]


def test_npu_sim_reads_a_champsim_trace_through_the_kind(tmp_path):
    path = write_champsim(small_spmv(), tmp_path / "spmv.champsim.xz", "xz")
    p = Params(trace=path, prefetcher="nvr")

    class Ctx:
        artifact_dir = tmp_path

    m = run_trial(p, 0, Ctx())
    assert m["trace_name"] == "champsim:spmv.champsim.xz" and m["speedup"] > 2


def test_text_and_csv_traces(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("# a comment\nR 0x1000 0x400\nR 4160 0x400\nC\nW 0x2000\n")
    t = read_trace(txt)
    assert list(t.inst_kind) == [LOAD, LOAD, COMPUTE, STORE]
    assert list(t.addr) == [0x1000, 4160, 0x2000]
    assert t.inst_pc[0] == t.inst_pc[1] != t.inst_pc[3]
    csv = tmp_path / "t.csv"
    csv.write_text("op,address,pc\nR,0x1000,1\nW,0x1040,2\n")
    assert list(read_text(csv).addr) == [0x1000, 0x1040]
    bad = tmp_path / "bad.txt"
    bad.write_text("R 0x10\nX 0x20\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 'R\|W address \[pc\]' or 'C', got 'X 0x20'"):
        read_trace(bad)
    m = simulate(t, hierarchy(), CoreConfig(), "next_line")
    assert m["accesses"] == 3


def test_trace_load_on_a_foreign_file_says_what_it_is_not(tmp_path):
    txt = tmp_path / "t.txt"
    txt.write_text("R 0x1000\n")
    with pytest.raises(ValueError, match=r"not a simcim trace \(.npz written by Trace.save\) but a text/CSV"):
        Trace.load(txt)
    cs = write_champsim(small_spmv(), tmp_path / "t.champsim")
    with pytest.raises(ValueError, match="but a ChampSim binary trace") as e:
        Trace.load(cs)
    assert "\n" not in str(e.value) and "pickle" not in str(e.value)


def test_unreadable_files_are_refused(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01\x02" * 7)
    with pytest.raises(ValueError, match="not a simcim .npz, a ChampSim binary trace"):
        read_trace(junk)
    cut = tmp_path / "cut.champsim"
    cut.write_bytes(write_champsim(small_spmv(), tmp_path / "x.champsim").read_bytes()[:100])
    with pytest.raises(ValueError, match="not a whole number of 64-byte ChampSim records"):
        read_champsim(cut)
    with pytest.raises(ValueError, match="trace file not found"):
        read_trace(tmp_path / "missing")


def test_champsim_register_dataflow_by_hand(tmp_path):
    # r1 = load [0x1000]; r2 = r1 + 8 (no memory); r3 = load [r2]; store [0x3000] <- r3; r4 = 5 (no memory)
    rec = np.zeros(5, CHAMPSIM_RECORD)
    rec["ip"] = [0x10, 0x14, 0x18, 0x1C, 0x20]
    rec["src_mem"][0, 0], rec["dst_reg"][0, 0] = 0x1000, 1
    rec["src_reg"][1, 0], rec["dst_reg"][1, 0] = 1, 2
    rec["src_mem"][2, 0], rec["src_reg"][2, 0], rec["dst_reg"][2, 0] = 0x2040, 2, 3
    rec["dst_mem"][3, 0], rec["src_reg"][3, 0] = 0x3000, 3
    rec["dst_reg"][4, 0] = 4
    path = tmp_path / "chase.champsim"
    path.write_bytes(rec.tobytes())
    t = read_champsim(path)
    assert list(t.inst_kind) == [LOAD, COMPUTE, LOAD, STORE]   # the register-only r4 = 5 is dropped
    assert list(t.inst_dep) == [-1, -1, 0, 2]                  # the second load's address came from the first
    assert list(t.producer) == [-1, 0, 1]                      # lane level: first lane of the producing load
    assert list(t.addr) == [0x1000, 0x2040, 0x3000]
