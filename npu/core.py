"""The NPU core: an in-order vector unit issuing a trace into the cache hierarchy.

Per instruction, in program order:

* a load or store waits until the instruction producing its indices has its data (the
  ``inst_dep`` of the trace), then sends its distinct cache lines, ``ports`` per cycle, into
  level 0; independent misses overlap, limited by the MSHRs; the core does not wait for a
  load's data here (stall on use);
* a compute instruction uses the data of every load issued since the previous compute, so it
  waits until all of them have arrived (these waits are the *stall cycles*), then takes
  ``compute_cycles``;
* stores never stall the core (a store buffer), but allocate their line on a miss;
* after each memory instruction the prefetcher's ``operate`` sees it. The core is compiled once
  and calls ``operate`` through a function pointer of one fixed signature
  (``operate_signature``), so a prefetcher registered by name needs no change here.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import numba
import numpy as np
from numba import types

from simcim.npu import prefetchers
from simcim.npu.cache import (
    D_ACC,
    D_MISS,
    PF_DROPPED,
    PF_ISSUED,
    PF_LATE,
    PF_USEFUL,
    PF_USELESS,
    ST_MISS,
    WB_OUT,
    CacheConfig,
    HierarchyConfig,
    demand_access,
    make_hierarchy,
)
from simcim.npu.dram import READS, ROW_CONFLICTS, ROW_HITS, ROW_MISSES, WRITES
from simcim.npu.trace import Trace

# core stats slots
C_CYCLES, C_STALL, C_LINES, C_INSTS = 0, 1, 2, 3


@dataclasses.dataclass(frozen=True)
class CoreConfig:
    ports: int = 2            # cache lines the vector unit sends to level 0 per cycle
    compute_cycles: int = 1   # cycles of one vector compute instruction

    def __post_init__(self) -> None:
        if self.ports < 1:
            raise ValueError(f"core ports must be >= 1, got {self.ports}")
        if self.compute_cycles < 0:
            raise ValueError(f"core compute_cycles must be >= 0, got {self.compute_cycles}")


def _run_core(H: tuple, tr: tuple, operate, st: np.ndarray, prm: np.ndarray, line_bits: int, ports: int,
              compute_cycles: int, out: np.ndarray) -> None:
    kind, start, dep, addr = tr[0], tr[2], tr[3], tr[4]
    n_inst = len(kind)
    done = np.zeros(n_inst, np.int64)
    max_lanes = 1
    for i in range(n_inst):
        max_lanes = max(max_lanes, start[i + 1] - start[i])
    lines = np.empty(max_lanes, np.int64)
    hits = np.empty(max_lanes, np.int8)
    stats0 = H[5]
    t = 0
    pending = 0
    stall = 0
    n_lines = 0
    for i in range(n_inst):
        k = kind[i]
        if k == 2:
            if pending > t:
                stall += pending - t
                t = pending
            t += compute_cycles
            continue
        d = dep[i]
        if d >= 0 and done[d] > t:
            stall += done[d] - t
            t = done[d]
        n = 0
        for a in range(start[i], start[i + 1]):
            ln = addr[a] >> line_bits
            dup = False
            for q in range(n - 1, -1, -1):
                if lines[q] == ln:
                    dup = True
                    break
            if not dup:
                lines[n] = ln
                n += 1
        fin = t
        for q in range(n):
            before = stats0[0, D_MISS]
            r = demand_access(H, lines[q], t + q // ports, k == 1)
            hits[q] = 1 if stats0[0, D_MISS] == before else 0
            if r > fin:
                fin = r
        n_lines += n
        if k == 0:
            done[i] = fin
            if fin > pending:
                pending = fin
        else:
            done[i] = t
        t += max(1, (n + ports - 1) // ports)
        operate(H, tr, st, prm, i, t, lines, hits, n)
    out[C_CYCLES] = max(t, pending)
    out[C_STALL] = stall
    out[C_LINES] = n_lines
    out[C_INSTS] = n_inst


@functools.cache
def operate_signature() -> types.Signature:
    """The one signature every prefetcher's ``operate`` is compiled for (the core calls it by pointer)."""
    H = make_hierarchy(HierarchyConfig(levels=(CacheConfig("c", 1, 1, 1),)))
    tr = Trace(np.zeros(1, np.int8), np.zeros(1, np.int32), np.array([0, 1]), np.full(1, -1),
               np.zeros(1, np.int64), np.full(1, -1), np.zeros(1, np.int64)).arrays()
    i64 = types.int64
    return types.void(numba.typeof(H), numba.typeof(tr), i64[:, ::1], i64[::1], i64, i64, i64[::1],
                      types.int8[::1], i64)


@functools.cache
def _core_kernel() -> numba.core.registry.CPUDispatcher:
    op = operate_signature()
    h_t, tr_t, st_t, prm_t = op.args[:4]
    i64 = types.int64
    sig = types.void(h_t, tr_t, types.FunctionType(op), st_t, prm_t, i64, i64, i64, i64[::1])
    return numba.njit(sig, cache=True)(_run_core)


@functools.cache
def _operate_pointer(module: object) -> numba.core.registry.CPUDispatcher:
    """The module's ``operate``, compiled for the core's signature."""
    try:
        module.operate.compile(operate_signature())
    except numba.core.errors.TypingError as e:
        lines = [ln.strip() for ln in str(e).splitlines()
                 if ln.strip() and not ln.startswith(("Failed in", "During", "- Resolution", "File "))]
        first = lines[0] if lines else type(e).__name__
        raise ValueError(f"prefetcher {module.NAME!r}: operate does not compile for the core's arguments "
                         f"({first})") from None
    return module.operate


def run_core(H: tuple, tr: tuple, module: object, st: np.ndarray, prm: np.ndarray, line_bits: int, ports: int,
             compute_cycles: int, out: np.ndarray) -> None:
    """Issue the trace ``tr`` through ``H`` with prefetcher ``module``; cycles and counts go to ``out``."""
    core_kernel(module)(H, tr, st, prm, line_bits, ports, compute_cycles, out)


def core_kernel(module: object) -> Callable[..., None]:
    """``run_core`` bound to ``module``'s operate, compiled (so a caller can time the run alone)."""
    kernel, op = _core_kernel(), _operate_pointer(module)

    def run(H: tuple, tr: tuple, st: np.ndarray, prm: np.ndarray, line_bits: int, ports: int, compute_cycles: int,
            out: np.ndarray) -> None:
        kernel(H, tr, op, st, prm, line_bits, ports, compute_cycles, out)

    return run


def level_names(cfg: HierarchyConfig) -> tuple[str, ...]:
    return tuple(lv.name for lv in cfg.present)


def simulate(trace: Trace, hierarchy: HierarchyConfig, core: CoreConfig = CoreConfig(),
             prefetcher: str = "none", prefetcher_cfg: object | None = None, width: int = 16,
             trace_arrays: tuple | None = None) -> dict[str, float | int]:
    """Run ``trace`` through a cold hierarchy with ``prefetcher``; return flat metrics."""
    module = prefetchers.get(prefetcher)
    cfg = prefetcher_cfg if prefetcher_cfg is not None else module.Config()
    if not isinstance(cfg, module.Config):
        raise ValueError(f"prefetcher_cfg: expected {module.__name__}.Config for {prefetcher!r}, "
                         f"got {type(cfg).__name__}")
    tr = trace_arrays if trace_arrays is not None else trace.arrays()
    H = make_hierarchy(hierarchy)
    st, prm = module.make_state(cfg, tr, width, hierarchy.line_bits)
    out = np.zeros(4, np.int64)
    run = core_kernel(module)
    t0, c0 = time.perf_counter(), time.process_time()
    run(H, tr, st, prm, hierarchy.line_bits, core.ports, core.compute_cycles, out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return _metrics(H, out, hierarchy, trace, module, cfg, width, wall, cpu)


def _metrics(H: tuple, out: np.ndarray, hierarchy: HierarchyConfig, trace: Trace, module: object,
             cfg: object, width: int, wall: float, cpu: float) -> dict[str, float | int]:
    stats, dstats = H[5], H[8]
    cycles = int(out[C_CYCLES])
    insts = int(out[C_INSTS])
    m: dict[str, float | int] = {
        "cycles": cycles,
        "stall_cycles": int(out[C_STALL]),
        "stall_fraction": out[C_STALL] / cycles if cycles else 0.0,
        "instructions": insts,
        "accesses": trace.n_accesses,
        "line_requests": int(out[C_LINES]),
    }
    names = level_names(hierarchy)
    load_miss = stats[:, D_MISS] - stats[:, ST_MISS]
    for lvl, name in enumerate(names):
        m[f"{name}_accesses"] = int(stats[lvl, D_ACC])
        m[f"{name}_misses"] = int(load_miss[lvl])
        m[f"{name}_store_misses"] = int(stats[lvl, ST_MISS])
        m[f"{name}_mpki"] = 1000.0 * load_miss[lvl] / insts if insts else 0.0
        m[f"{name}_writebacks"] = int(stats[lvl, WB_OUT])
    # misses are demand *load* misses (what prefetchers act on); write-allocate misses are counted apart
    m["l0_misses"] = int(load_miss[0])
    m["misses"] = int(load_miss[-1])  # load misses that went to DRAM
    m["store_misses"] = int(stats[-1, ST_MISS])
    m["mpki"] = 1000.0 * load_miss[-1] / insts if insts else 0.0
    line = hierarchy.line_bytes
    m["dram_reads"] = int(dstats[READS])
    m["dram_writes"] = int(dstats[WRITES])
    m["dram_bytes"] = int((dstats[READS] + dstats[WRITES]) * line)
    m["dram_traffic_per_cycle"] = m["dram_bytes"] / cycles if cycles else 0.0
    busy = float((dstats[READS] + dstats[WRITES]) * hierarchy.dram.transfer_cycles(line))
    m["dram_utilization"] = busy / (cycles * hierarchy.dram.channels) if cycles else 0.0
    hits, row_misses, conflicts = int(dstats[ROW_HITS]), int(dstats[ROW_MISSES]), int(dstats[ROW_CONFLICTS])
    m["dram_row_hits"] = hits
    m["dram_row_misses"] = row_misses
    m["dram_row_conflicts"] = conflicts
    m["dram_row_hit_rate"] = hits / (hits + row_misses + conflicts) if hits + row_misses + conflicts else 0.0
    issued, useful = int(stats[0, PF_ISSUED]), int(stats[0, PF_USEFUL])
    late, useless = int(stats[0, PF_LATE]), int(stats[0, PF_USELESS])
    m["pf_issued"] = issued
    m["pf_useful"] = useful
    m["pf_late"] = late
    m["pf_useless"] = useless
    m["pf_dropped"] = int(stats[0, PF_DROPPED])
    m["pf_accuracy"] = useful / issued if issued else 0.0
    # of the level-0 misses there would have been, the share a prefetch removed
    m["pf_coverage"] = useful / (useful + load_miss[0]) if useful + load_miss[0] else 0.0
    m["pf_timeliness"] = 1.0 - late / useful if useful else 0.0
    b = module.budget(cfg, width)
    m["pf_budget_entries"] = b["entries"]
    m["pf_budget_bytes"] = b["bytes"]
    sram = sum(lv.size_kib * 1024 for lv in hierarchy.present)
    m["pf_budget_fraction_of_sram"] = b["bytes"] / sram
    m["sim_seconds"] = wall
    m["sim_cpu_seconds"] = cpu
    m["sim_accesses_per_second"] = trace.n_accesses / wall if wall > 0 else 0.0
    m["sim_accesses_per_cpu_second"] = trace.n_accesses / cpu if cpu > 0 else 0.0
    return m
