"""Experiment kind ``npu_sim``: one sparse workload through the NPU memory system with one prefetcher.

Baseline architecture (the defaults below; every one is a parameter): a 1 GHz NPU whose
in-order vector unit has 16 fp32 lanes and sends 2 cache lines per cycle to memory; no
NPU-side cache (the paper's baseline NPU; set ``npu_cache_kib`` to add one, 4-way, 2 cycles);
a shared 256 KiB 16-way L2 with 20-cycle latency; no LLC; 64 B lines, LRU, write-back;
16 MSHRs for demand misses and a 64-entry prefetch queue; DRAM with 100-cycle latency and
2 channels of 16 B/cycle (32 GB/s at 1 GHz). Prefetches fill the level closest to the NPU.

With ``compare_baseline`` the same trace also runs without prefetching, which gives
``speedup`` and ``miss_reduction``.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Literal

from simcim.experiments.config import param
from simcim.experiments.kinds import TrialContext
from simcim.npu import prefetchers
from simcim.npu.cache import CacheConfig, HierarchyConfig
from simcim.npu.core import CoreConfig, simulate
from simcim.npu.dram import DRAMConfig, make_dram, preset_cycles
from simcim.npu.trace import Trace, WorkloadSpec, build_trace
from simcim.npu.traces import read_trace

Workload = Literal["spmv", "spmm", "pruned_matmul", "embedding_bag", "gnn"]


@dataclasses.dataclass(frozen=True)
class Params:
    workload: Workload = param("spmv", help="kernel lowered to the trace")
    structure: Literal["random", "powerlaw", "banded"] = param("random", help="sparsity pattern generator")
    rows: int = param(4096, ge=1, help="output rows (matrix rows, bags, graph nodes) [rows]")
    cols: int = param(262144, ge=1, help="columns of the sparse matrix / rows of the gathered table [rows]")
    sparsity: float = param(0.9995, ge=0, lt=1, help="fraction of zeros (pruned_matmul: pruned weights)")
    feat: int = param(16, ge=1, help="dense width gathered per index (SpMM/pruned-matmul batch, "
                                     "embedding dim, GNN features; SpMV uses 1)")
    width: int = param(16, ge=1, le=1024, help="vector lanes (4-byte elements per vector instruction)")
    matrix_market: Path | None = param(None, must_exist=True,
                                       help="a .mtx file to use as the sparse structure")
    weights: Path | None = param(None, must_exist=True,
                                 help="safetensors file for pruned_matmul (default: the bundled model)")
    weight_tensor: str = param("", help="tensor to prune (default: the largest 2-D tensor)")
    zipf_alpha: float = param(1.05, gt=0, help="Zipf exponent of embedding-bag indices")
    trace: Path | None = param(None, must_exist=True,
                               help="a trace file to simulate instead of generating the workload: a ChampSim "
                                    "binary trace (raw, .xz or .gz), a text/CSV list of accesses (R or W, address, "
                                    "optional pc), or a .npz from save_trace; the workload parameters above are "
                                    "then unused")

    npu_cache_kib: float = param(0.0, ge=0, help="NPU-side cache size, 0 = none [KiB]")
    npu_cache_ways: int = param(4, ge=1, help="NPU-side cache associativity [ways]")
    npu_cache_latency: int = param(2, ge=0, help="NPU-side cache hit latency [cycles]")
    l2_kib: float = param(256.0, gt=0, help="L2 size [KiB]")
    l2_ways: int = param(16, ge=1, help="L2 associativity [ways]")
    l2_latency: int = param(20, ge=0, help="L2 hit latency, added after the levels above [cycles]")
    llc_kib: float = param(0.0, ge=0, help="last-level cache size, 0 = none [KiB]")
    llc_ways: int = param(16, ge=1, help="LLC associativity [ways]")
    llc_latency: int = param(40, ge=0, help="LLC hit latency, added after the levels above [cycles]")
    policy: Literal["lru", "srrip"] = param("lru", help="replacement policy of every level")
    dram_latency: int = param(100, ge=0, help="cycles from the end of a line's bus transfer to its data at the "
                                              "NPU (banks model: the controller and interconnect part, on top of "
                                              "the bank timing) [cycles]")
    dram_channels: int = param(2, ge=1, help="DRAM channels, each with its own data bus (and banks)")
    dram_bytes_per_cycle: float = param(16.0, gt=0, help="data-bus rate of one channel, modelled exactly to "
                                                         "1/1024 [B/cycle]")
    dram_model: Literal["simple", "banks"] = param("simple", help="simple: fixed latency behind the data bus; "
                                                                  "banks: open-page banks with row buffers")
    dram_preset: Literal["ddr4_3200", "hbm2", "hbm3"] = param("ddr4_3200", help="device whose banks, row size "
                                                               "and JEDEC timing the banks model takes")
    dram_banks: int | None = param(None, ge=1, help="banks per channel (default: the preset's)")
    dram_row_bytes: int | None = param(None, ge=64, help="row (page) size of a bank (default: the preset's) [B]")
    dram_t_rcd: int | None = param(None, ge=0, help="activate to column read (default: the preset's) [cycles]")
    dram_t_cas: int | None = param(None, ge=0, help="column read to data (default: the preset's) [cycles]")
    dram_t_rp: int | None = param(None, ge=0, help="precharge (default: the preset's) [cycles]")
    dram_mapping: Literal["row_bank_channel_column", "row_column_bank_channel"] = param(
        "row_bank_channel_column", help="how a line address splits into DRAM fields, most significant first "
                                        "(the column is the line within a row)")
    dram_scheduling: Literal["frfcfs", "fcfs"] = param("frfcfs", help="bank scheduling: first-ready FCFS (row "
                                                                      "hits first) or plain FCFS")
    clock_ghz: float = param(1.0, gt=0, help="NPU clock; converts the DRAM preset's ns timing to cycles [GHz]")
    mshrs: int = param(16, ge=1, help="outstanding demand misses from the NPU-side level. The core stalls on "
                                      "use, so this only limits anything when one instruction (a vector of up "
                                      "to `width` lanes) or the loads before a compute miss on more lines than "
                                      "this")
    prefetch_queue: int = param(64, ge=1, help="outstanding prefetches (a queue apart from the MSHRs)")
    ports: int = param(2, ge=1, help="cache lines the vector unit sends to the NPU-side level [lines/cycle]")
    compute_cycles: int = param(1, ge=0, help="time of one vector compute instruction [cycles]")

    prefetcher: str = param("nvr", help="prefetcher by name: none, next_line, stride, stream, imp, nvr, or one "
                                        "registered with simcim.npu.prefetchers.register")
    pf_distance: int | None = param(None, ge=1, help="prefetch distance (nvr: instructions, imp: index "
                                                     "elements, stream: lines; others ignore it); "
                                                     "default per prefetcher")
    pf_degree: int | None = param(None, ge=1, help="lines per trigger for next_line/stride/stream (others ignore it)")
    nvr_throttle: bool = param(True, help="adapt NVR's distance: shorter when its prefetches are evicted unused, "
                                          "longer when they arrive late; a change is kept only if the core got "
                                          "faster")
    nvr_known_loop_bounds: bool = param(True, help="NVR knows loop bounds; false: it waits for each "
                                                   "row's row-pointer data before running into the row")
    compare_baseline: bool = param(True, help="also run without prefetching for speedup / miss reduction")
    save_trace: bool = param(False, help="write the trace (.npz) to the trial's artifact folder")

    def __post_init__(self) -> None:
        if self.workload == "pruned_matmul" and self.matrix_market is not None:
            raise ValueError("matrix_market does not apply to pruned_matmul (it prunes weights)")
        hier = self.hierarchy()  # cache and DRAM geometry errors surface at config load
        make_dram(hier.dram, hier.line_bytes)
        self.prefetcher_config()

    def spec(self) -> WorkloadSpec:
        return WorkloadSpec(workload=self.workload, structure=self.structure, rows=self.rows, cols=self.cols,
                            density=1.0 - self.sparsity, feat=self.feat, width=self.width,
                            matrix_market=str(self.matrix_market or ""), weights=str(self.weights or ""),
                            weight_tensor=self.weight_tensor, zipf_alpha=self.zipf_alpha)

    def hierarchy(self) -> HierarchyConfig:
        p = self.policy
        npu = CacheConfig("npu_cache", self.npu_cache_kib, self.npu_cache_ways, self.npu_cache_latency, p)
        return HierarchyConfig(
            levels=(npu,
                    CacheConfig("l2", self.l2_kib, self.l2_ways, self.l2_latency, p),
                    CacheConfig("llc", self.llc_kib, self.llc_ways, self.llc_latency, p)),
            dram=self.dram(),
            mshrs=self.mshrs, prefetch_queue=self.prefetch_queue)

    def dram(self) -> DRAMConfig:
        geometry = preset_cycles(self.dram_preset, self.clock_ghz)
        for key in geometry:
            value = getattr(self, f"dram_{key}")
            if value is not None:
                geometry[key] = value
        return DRAMConfig(self.dram_latency, self.dram_channels, self.dram_bytes_per_cycle, self.dram_model,
                          mapping=self.dram_mapping, scheduling=self.dram_scheduling, **geometry)

    def core(self) -> CoreConfig:
        return CoreConfig(ports=self.ports, compute_cycles=self.compute_cycles)

    def prefetcher_config(self) -> object:
        mod = prefetchers.get(self.prefetcher)
        kw: dict[str, object] = {}
        if self.prefetcher == "nvr":
            kw = {"throttle": self.nvr_throttle, "prefetch_queue": self.prefetch_queue,
                  "known_loop_bounds": self.nvr_known_loop_bounds}
            if self.pf_distance is not None:
                d = self.pf_distance
                kw.update(distance=d, min_distance=min(16, d), max_distance=max(1024, d))
        elif self.prefetcher in ("imp", "stream") and self.pf_distance is not None:
            kw["distance"] = self.pf_distance
        if self.prefetcher in ("next_line", "stride", "stream") and self.pf_degree is not None:
            kw["degree"] = self.pf_degree
        return mod.Config(**kw)


DEFAULT_METRICS = ("speedup", "misses", "miss_reduction", "pf_accuracy", "pf_coverage", "cycles")


@functools.lru_cache(maxsize=2)
def _trace(spec: WorkloadSpec, seed: int, path: Path | None) -> tuple[Trace, tuple]:
    # a worker running a sweep over cache sizes reuses the trace of its previous trial
    trace = read_trace(path) if path is not None else build_trace(spec, seed)
    return trace, trace.arrays()


def run_trial(params: Params, seed: int, ctx: TrialContext) -> dict[str, float | int | str]:
    trace, arrays = _trace(params.spec(), seed, params.trace)
    if trace.n_accesses == 0:
        raise ValueError(f"workload {params.workload!r} at sparsity {params.sparsity} produced an empty "
                         "trace")
    if params.save_trace:
        trace.save(ctx.artifact_dir / "trace.npz")
    hier, core = params.hierarchy(), params.core()
    m: dict[str, float | int | str] = dict(simulate(trace, hier, core, params.prefetcher,
                                                    params.prefetcher_config(), params.width, arrays))
    if params.compare_baseline:
        base = m if params.prefetcher == "none" else simulate(trace, hier, core, "none", None, params.width,
                                                              arrays)
        m["baseline_cycles"] = base["cycles"]
        m["baseline_misses"] = base["misses"]
        m["speedup"] = base["cycles"] / m["cycles"]
        m["miss_reduction"] = 1.0 - m["misses"] / base["misses"] if base["misses"] else 0.0
    m["trace_name"] = trace.name
    return m
