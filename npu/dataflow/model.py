"""Analytical performance and energy model of a cascade mapped onto a spatial accelerator.

Everything is numpy arithmetic on broadcastable arrays, so one call evaluates any number of
design points (array sizes, buffer sizes, bandwidths, sequence lengths) at once. Cascades name
the key (sequence) index ``m`` and the query index ``p``; a split ``m -> m1, m0`` uses tiles of
M0 = the 2D array's width; batch and heads (``B``, ``H``) multiply every Einsum.

Time. Each Einsum's work is (points of its iteration space) x (cycles per point on its array)
/ (PEs of the array). A *stage* runs its 2D and 1D Einsums concurrently and lasts as long as the
slower array; stages follow one another. Designs that do not interleave tiles pay a stall per
tile (the 2D array waiting for the 1D array's result). Memory either overlaps the whole
computation (``overlap="global"``: latency = max(compute, traffic / bandwidth)) or each stage
(``"per_stage"``: the sum over stages of max(compute, its traffic / bandwidth), for an unfused
design whose Einsums run one after another).

Padding. Cycles count whole tiles: M0 is always ``cols`` wide, an unsplit m on the 2D array is
rounded up to ``cols``, and p to the 2D array's ``rows`` or the 1D array's PEs (idle PEs take
time). Energy and DRAM traffic count only real points and real data.

Masks. ``where`` constraints keep part of the iteration space: compute and energy count the kept
points; each block of query rows fetches only the keys its rows can see (and, with ``"tile"``
reuse, each block of keys only the query rows it meets); intermediates kept or spilled across
passes are only as long as a row's kept keys.

Traffic. Inputs that carry the key rank M (K, V) are read once per block of query rows that
the buffer holds (``operand_reuse="rows"``) or once per array-height block of rows
(``"tile"``, no buffering of operands, FLAT's mapping); the others (Q) once, or once per
array-width block of keys (``"tile"``). Intermediates stay in PE registers, go through the
global buffer, or go through DRAM (unfused). A cascade of more than one pass must keep
``live_fibers`` M-long fibers per row of a block of ``rows`` query rows; what does not fit in
the buffer is spilled, costing ``spill_accesses`` DRAM accesses per score (see
:mod:`simcim.npu.dataflow.passes`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

import numpy as np

from simcim.npu.dataflow.arch import Arch, ModelShape
from simcim.npu.dataflow.einsum import Cascade, Einsum, cascade_path, parse_cascade
from simcim.npu.dataflow.passes import PassReport, analyze_passes

__all__ = ["ARRAY_METRICS", "Design", "Stage", "bottleneck", "compile_design", "evaluate", "linear_layers"]

ArrayLike = float | int | np.ndarray


@dataclasses.dataclass(frozen=True)
class Stage:
    two_d: tuple[str, ...] = ()
    one_d: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Design:
    """A cascade, an architecture and a mapping (binding of Einsums to arrays, fusion, pipelining)."""

    name: str
    cascade: str
    arch: Arch
    stages: tuple[Stage, ...]
    intermediates: Literal["registers", "buffer", "dram"] = "registers"
    operand_reuse: Literal["rows", "tile"] = "rows"
    overlap: Literal["global", "per_stage"] = "global"
    stall_cycles_per_tile: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if self.intermediates not in ("registers", "buffer", "dram"):
            raise ValueError(f"Design.intermediates: expected registers, buffer or dram, got {self.intermediates!r}")
        if self.operand_reuse not in ("rows", "tile"):
            raise ValueError(f"Design.operand_reuse: expected rows or tile, got {self.operand_reuse!r}")
        if self.overlap not in ("global", "per_stage"):
            raise ValueError(f"Design.overlap: expected global or per_stage, got {self.overlap!r}")
        if self.stall_cycles_per_tile < 0:
            raise ValueError(f"Design.stall_cycles_per_tile: expected >= 0, got {self.stall_cycles_per_tile}")
        compile_design(self)  # fail at construction on an unknown Einsum or an unsupported operation


@dataclasses.dataclass(frozen=True)
class _EinsumPlan:
    einsum: Einsum
    array: str
    stage: int
    cycles_per_point: int
    energy_per_point: float  # operations, pJ
    ops_per_point: int


@dataclasses.dataclass(frozen=True)
class _Compiled:
    cascade: Cascade
    passes: PassReport
    plans: tuple[_EinsumPlan, ...]


_COMPILED: dict[tuple[Design, str], _Compiled] = {}


def compile_design(design: Design) -> _Compiled:
    """Check the binding against the cascade and the arrays; cache the per-point costs.

    The cache is keyed by the cascade's text too, so an edited user file is re-read.
    """
    path = cascade_path(design.cascade)
    text = path.read_text()
    if (design, text) in _COMPILED:
        return _COMPILED[(design, text)]
    cascade = parse_cascade(text, str(path))
    passes = analyze_passes(cascade)
    where: dict[str, tuple[str, int]] = {}
    for i, st in enumerate(design.stages):
        for array, names in (("2d", st.two_d), ("1d", st.one_d)):
            for n in names:
                cascade.einsum(n)  # raises on an unknown name
                if n in where:
                    raise ValueError(f"design {design.name!r}: Einsum {n!r} is bound twice")
                where[n] = (array, i)
    missing = [e.name for e in cascade.einsums if e.name not in where]
    if missing:
        raise ValueError(
            f"design {design.name!r}: Einsums {', '.join(missing)} of cascade {cascade.name!r} are bound to no array"
        )
    plans = []
    arch = design.arch
    for e in cascade.einsums:
        array, stage = where[e.name]
        costs = arch.cycles(array)
        ops = e.op_counts()
        for op in ops:
            if op not in costs:
                raise ValueError(
                    f"design {design.name!r}: Einsum {e.name} needs {op!r}, which the "
                    f"{array.upper()} array of arch {arch.name!r} does not have"
                )
        per_op = [costs[op] for op, n in ops.items() for _ in range(n)]
        cycles = (max(per_op) if arch.pipelined(array) else sum(per_op)) if per_op else 1
        energy = sum(n * arch.energies.op(op) for op, n in ops.items())
        plans.append(_EinsumPlan(e, array, stage, cycles, energy, sum(ops.values())))
    out = _Compiled(cascade, passes, tuple(plans))
    _COMPILED[(design, text)] = out
    return out


ARRAY_METRICS = (
    "latency_s",
    "compute_s",
    "memory_s",
    "busy_2d_s",
    "busy_1d_s",
    "stall_s",
    "util_2d",
    "util_1d",
    "dram_bytes",
    "energy_pj",
    "energy_mac_2d_pj",
    "energy_ops_pj",
    "energy_reg_pj",
    "energy_glb_pj",
    "energy_dram_pj",
    "buffer_bytes",
    "buffer_occupancy",
    "spill_fraction",
    "rows_resident",
)


def _f(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


_WHOLE_ARCH = ("rows", "cols", "pes_1d", "glb_bytes", "glb_banks")


def _check(what: str, name: str, v: np.ndarray, minimum: float, whole: bool) -> None:
    """Refuse, in one line naming the parameter, a value that is not finite, is below ``minimum``
    (not above it, for ``minimum = 0``) or, when ``whole``, has a fractional part."""
    ok = v > 0 if minimum == 0 else v >= minimum
    if not np.all(np.isfinite(v)) or not np.all(ok):
        bound = "positive" if minimum == 0 else f">= {minimum:g}"
        raise ValueError(f"{what} {name} must be {bound} and finite, got {_first_bad(v, ok)}")
    if whole and np.any(v != np.floor(v)):
        raise ValueError(f"{what} {name} must be a whole number, got {_first_bad(v, v == np.floor(v))}")


def _first_bad(v: np.ndarray, ok: np.ndarray) -> float:
    """The first value of ``v`` that fails ``ok`` (NaN and infinity fail), for a one-line error."""
    bad = ~(np.asarray(ok) & np.isfinite(v))
    return float(np.broadcast_to(v, bad.shape)[bad].ravel()[0]) if bad.any() else float(np.ravel(v)[0])


def evaluate(
    design: Design, workload: Mapping[str, ArrayLike], arch: Mapping[str, ArrayLike] | None = None
) -> dict[str, np.ndarray]:
    """Latency, energy by component, utilization, buffer occupancy and DRAM traffic of attention.

    ``workload`` holds the rank sizes ``B`` (batch), ``H`` (heads), ``M`` (keys), ``P`` (queries),
    ``E``, ``F`` (head dims), and any other rank the cascade uses; ``arch`` overrides
    :class:`Arch` numeric fields (``rows``, ``cols``, ``pes_1d``, ``clock_hz``, ``glb_bytes``,
    ``glb_banks``, ``dram_bytes_per_s``) with scalars or arrays. All broadcast together.
    """
    comp = compile_design(design)
    a = design.arch
    over = dict(arch or {})
    known = {"rows", "cols", "pes_1d", "clock_hz", "glb_bytes", "glb_banks", "dram_bytes_per_s"}
    for k in over:
        if k not in known:
            raise ValueError(f"evaluate: unknown arch override {k!r} (known: {', '.join(sorted(known))})")
    rows, cols, pes_1d = (
        _f(over.get("rows", a.rows)),
        _f(over.get("cols", a.cols)),
        _f(over.get("pes_1d", a.pes_1d)),
    )
    clock, glb = _f(over.get("clock_hz", a.clock_hz)), _f(over.get("glb_bytes", a.glb_bytes))
    banks, bw = _f(over.get("glb_banks", a.glb_banks)), _f(over.get("dram_bytes_per_s", a.dram_bytes_per_s))
    for name, v in (
        ("rows", rows),
        ("cols", cols),
        ("pes_1d", pes_1d),
        ("clock_hz", clock),
        ("glb_bytes", glb),
        ("glb_banks", banks),
        ("dram_bytes_per_s", bw),
    ):
        _check("evaluate: arch", name, v, minimum=0.0, whole=name in _WHOLE_ARCH)
    wl = {k: _f(v) for k, v in workload.items()}
    for k, v in wl.items():
        _check("evaluate: workload rank", k, v, minimum=1.0, whole=True)
    for k in ("B", "H", "M", "P"):
        if k not in wl:
            raise ValueError(f"evaluate: workload is missing rank {k!r} (needs B, H, M, P and the head dims)")
    w = float(a.word_bytes)
    en = a.energies
    cascade = comp.cascade

    def size(var: str) -> np.ndarray:
        for whole, (outer, inner) in cascade.partitions.items():
            if var == inner:
                return cols if whole == "m" else wl.get(inner.upper(), cols)
            if var == outer:
                tile = cols if whole == "m" else wl.get(inner.upper(), cols)
                return np.ceil(wl[whole.upper()] / tile)
        rank = var.upper()
        if rank not in wl:
            raise ValueError(
                f"evaluate: cascade {cascade.name!r} uses rank {rank!r}, which the workload "
                f"does not give (has {', '.join(sorted(wl))})"
            )
        return wl[rank]

    inner_of = {inner: whole for whole, (_, inner) in cascade.partitions.items()}

    def points(vars_: tuple[str, ...], on: str | None = None) -> np.ndarray:
        """Iteration points over ``vars_`` (times B x H).

        Exact (``on=None``, for energy and traffic): a split rank whose tile and tile index are both
        iterated counts its real size (M keys, not M1 x M0), a lone tile index at most the rank.
        On an array (``on="2d"``/``"1d"``, for cycles): the tile rounding where PEs idle: M0 is a whole
        tile of ``cols``, an unsplit m on the 2D array is rounded up to ``cols``, and p is rounded
        up to the 2D array's ``rows`` or the 1D array's PEs.
        """
        vs = list(dict.fromkeys(vars_))
        out = wl["B"] * wl["H"]
        if on is None:
            for whole, (outer, inner) in cascade.partitions.items():
                if outer in vs and inner in vs:
                    vs.remove(outer)
                    vs.remove(inner)
                    out = out * size(whole)
        for v in vs:
            n = size(v)
            if on is None and v in inner_of:
                n = np.minimum(n, size(inner_of[v]))
            elif on == "2d" and v == "p":
                n = np.ceil(n / rows) * rows
            elif on == "1d" and v == "p":
                n = np.ceil(n / pes_1d) * pes_1d
            elif on == "2d" and v == "m":
                n = np.ceil(n / cols) * cols
            out = out * n
        return out

    def ranges(e: Einsum) -> dict[tuple[str, ...], tuple[float, float]]:
        """The ``where`` constraints as ``lo <= u - v <= hi`` (names sorted) or ``lo <= u <= hi``."""
        out: dict[tuple[str, ...], tuple[float, float]] = {}
        for c in e.constraints:
            names, lo, hi = c.difference_range()
            if len(names) == 2 and names[0] > names[1]:
                names, lo, hi = (names[1], names[0]), -hi, -lo
            was = out.get(names, (-np.inf, np.inf))
            out[names] = (max(was[0], lo), min(was[1], hi))
        return out

    densities: dict[str, np.ndarray] = {}

    def density(e: Einsum) -> np.ndarray:
        """Fraction of the iteration space the ``where`` constraints keep (1 when there are none).

        A constraint on a split index (``m``) is counted per element, also for an Einsum that
        iterates only its tiles (``m1``): the tile-level fraction is taken equal to the element-level
        one, which is exact up to one tile per row.
        """
        if e.name not in densities:
            densities[e.name] = _density(e)
        return densities[e.name]

    def _density(e: Einsum) -> np.ndarray:
        out = _f(1.0)
        for names, (lo, hi) in ranges(e).items():
            if len(names) == 1:
                n = size(names[0])
                kept = np.clip(np.minimum(hi, n - 1) - max(lo, 0) + 1, 0, None)
                out = out * kept / n
            else:
                u, v = size(names[0]), size(names[1])
                out = out * (_pairs_upto(u, v, hi) - _pairs_upto(u, v, lo - 1)) / (u * v)
        return out

    def key_query_window(e: Einsum) -> tuple[float, float, tuple[float, float], tuple[float, float]]:
        """(lo, hi) of p - m, the range of m and the range of p that ``e``'s constraints allow."""
        rg = ranges(e)
        lo, hi = rg.get(("m", "p"), (-np.inf, np.inf))  # lo <= m - p <= hi
        inf = (-np.inf, np.inf)
        return -hi, -lo, rg.get(("m",), inf), rg.get(("p",), inf)

    def key_fetches(e: Einsum, block: np.ndarray) -> np.ndarray:
        """Keys fetched, summed over blocks of ``block`` query rows: only those a row of the block sees."""
        lo, hi, m_range, p_range = key_query_window(e)
        return _block_pairs(wl["P"], block, wl["M"], lo, hi, p_range, m_range)

    def query_fetches(e: Einsum, block: np.ndarray) -> np.ndarray:
        """Query rows fetched, summed over blocks of ``block`` keys: only those a key of the block meets."""
        lo, hi, m_range, p_range = key_query_window(e)
        return _block_pairs(wl["M"], block, wl["P"], -hi, -lo, m_range, p_range)

    heads = wl["B"] * wl["H"]
    M, P = wl["M"], wl["P"]
    scores = heads * M * P
    rank_vars = {"m", *cascade.partitions.get("m", ())}
    query_vars = {"p", *cascade.partitions.get("p", ())}

    # ---------------------------------------------------------------- operand residency
    inputs = cascade.inputs
    key_side = {n: r for n, r in inputs.items() if rank_vars & set(r.vars)}
    query_side = {n: r for n, r in inputs.items() if n not in key_side}

    def per(r_vars: tuple[str, ...], drop: set[str]) -> np.ndarray:
        out = _f(1.0)
        for v in r_vars:
            if v not in drop:
                out = out * size(v)
        return out

    kv_tile_bytes = w * cols * sum((per(r.vars, rank_vars) for r in key_side.values()), _f(0.0))
    recurrences = [e for e in cascade.einsums if e.is_recurrence]
    row_state = sum((per(r.vars, {"p"}) for r in query_side.values()), _f(0.0)) + sum(
        (per(e.output.vars, rank_vars | {"p"}) for e in recurrences), _f(0.0)
    )
    row_bytes = w * np.maximum(row_state, 1.0)
    working_set = kv_tile_bytes + row_bytes
    if np.any(glb < working_set):
        bad = np.broadcast_to(glb < working_set, np.broadcast_shapes(np.shape(glb), np.shape(working_set)))
        i = np.flatnonzero(bad.ravel())[0]
        raise ValueError(
            f"evaluate: arch glb_bytes = {float(np.broadcast_to(glb, bad.shape).ravel()[i]):.0f} B cannot hold "
            f"the working set of one K/V tile and one query row "
            f"({float(np.broadcast_to(working_set, bad.shape).ravel()[i]):.0f} B)"
        )
    if design.operand_reuse == "rows":
        fit = np.floor((glb - kv_tile_bytes) / row_bytes)
        rows_resident = np.minimum(fit, P)
        key_block, query_block = rows_resident, M
        operand_buffer = kv_tile_bytes + rows_resident * row_bytes
    else:
        rows_resident = np.minimum(rows, P)
        key_block, query_block = rows, cols
        operand_buffer = kv_tile_bytes + rows * row_bytes
    rows_resident = rows_resident + 0 * scores

    # ---------------------------------------------------------------- pass consequences
    pr = comp.passes
    # a masked cascade keeps, per row, only the keys its constraints let that row see
    kept = max((density(cascade.einsum(n)) for n in pr.cross_pass), key=np.max, default=_f(1.0))
    fiber_bytes = pr.live_fibers * np.minimum(rows, P) * M * kept * w
    avail = np.maximum(glb - np.minimum(operand_buffer, glb), 0.0)
    if pr.passes > 1 and design.intermediates != "dram":
        spill = np.clip(1.0 - avail / np.maximum(fiber_bytes, 1.0), 0.0, 1.0)
    else:
        spill = _f(0.0)
    spill_bytes = spill * pr.spill_accesses * scores * kept * w

    # ---------------------------------------------------------------- per-Einsum work and traffic
    n_stages = len(design.stages)
    busy = {(s, arr): _f(0.0) for s in range(n_stages) for arr in ("2d", "1d")}
    stage_traffic = [_f(0.0) for _ in range(n_stages)]
    e_mac2d, e_ops, e_reg = _f(0.0), _f(0.0), _f(0.0)
    glb_bytes_rw = _f(0.0)
    outputs = set(cascade.outputs)
    produced = cascade.produced

    def moved(e: Einsum, r_vars: tuple[str, ...]) -> np.ndarray:
        """Elements of a tensor over ``r_vars`` that Einsum ``e`` touches once (a masked score is not)."""
        vs = set(r_vars)
        return points(r_vars) * (density(e) if rank_vars & vs and query_vars & vs else 1.0)

    for plan in comp.plans:
        e = plan.einsum
        dens = density(e)
        pts = points(e.iteration_vars) * dens
        pes = rows * cols if plan.array == "2d" else pes_1d
        cycles = points(e.iteration_vars, on=plan.array) * dens * plan.cycles_per_point / pes
        busy[(plan.stage, plan.array)] = busy[(plan.stage, plan.array)] + cycles / clock
        ops_energy = pts * plan.energy_per_point
        if plan.array == "2d" and set(e.op_counts()) == {"mac"}:
            e_mac2d = e_mac2d + ops_energy
        else:
            e_ops = e_ops + ops_energy
        e_reg = e_reg + pts * plan.ops_per_point * (en.reg_read + en.reg_write)
        traffic = _f(0.0)
        seen: set[str] = set()
        for r in e.inputs:
            if r.name == e.name or r.name in seen:
                continue
            seen.add(r.name)
            vs = set(r.vars)
            if r.name in inputs:
                if rank_vars & vs and query_vars & vs:
                    traffic = traffic + moved(e, r.vars) * w
                elif r.name in key_side:
                    traffic = traffic + points(tuple(v for v in r.vars if v not in rank_vars)) * w * key_fetches(
                        e, key_block
                    )
                elif "p" in vs:
                    traffic = traffic + points(tuple(v for v in r.vars if v != "p")) * w * query_fetches(e, query_block)
                else:
                    reads = np.ceil(M / cols) if design.operand_reuse == "tile" else 1.0
                    traffic = traffic + points(r.vars) * w * reads
            elif design.intermediates == "dram" and r.name in produced:
                traffic = traffic + moved(e, r.vars) * w
            elif design.intermediates == "buffer" and rank_vars & vs:
                glb_bytes_rw = glb_bytes_rw + moved(e, r.vars) * w
        if e.name in outputs or design.intermediates == "dram":
            traffic = traffic + moved(e, e.output.vars) * w
        elif design.intermediates == "buffer" and rank_vars & set(e.output.vars):
            glb_bytes_rw = glb_bytes_rw + moved(e, e.output.vars) * w
        stage_traffic[plan.stage] = stage_traffic[plan.stage] + traffic

    dram = sum(stage_traffic, _f(0.0)) + spill_bytes
    busy_2d = sum((busy[(s, "2d")] for s in range(n_stages)), _f(0.0))
    busy_1d = sum((busy[(s, "1d")] for s in range(n_stages)), _f(0.0))
    n_tiles = heads * np.ceil(M / cols) * np.ceil(P / rows)
    stall = design.stall_cycles_per_tile * n_tiles / clock
    stage_time = [np.maximum(busy[(s, "2d")], busy[(s, "1d")]) for s in range(n_stages)]
    compute = sum(stage_time, _f(0.0)) + stall
    memory = dram / bw
    if design.overlap == "global":
        latency = np.maximum(compute, memory)
    else:
        latency = sum((np.maximum(t, tr / bw) for t, tr in zip(stage_time, stage_traffic)), _f(0.0))
        latency = latency + stall + spill_bytes / bw

    scale = np.sqrt(glb / banks / en.glb_reference_bank_bytes)
    glb_rw_pj = (en.glb_read_per_byte + en.glb_write_per_byte) * scale
    onchip_intermediate = glb_bytes_rw * (1.0 - spill)
    e_glb = dram * glb_rw_pj + onchip_intermediate * 0.5 * glb_rw_pj
    e_dram = dram * en.dram_per_byte
    energy = e_mac2d + e_ops + e_reg + e_glb + e_dram
    buffer_need = operand_buffer + fiber_bytes
    shape = np.broadcast_shapes(*(np.shape(x) for x in (latency, energy, rows_resident, spill)))

    def b(x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x, shape).astype(np.float64)

    return {
        "latency_s": b(latency),
        "compute_s": b(compute),
        "memory_s": b(memory),
        "busy_2d_s": b(busy_2d),
        "busy_1d_s": b(busy_1d),
        "stall_s": b(stall),
        "util_2d": b(busy_2d / latency),
        "util_1d": b(busy_1d / latency),
        "dram_bytes": b(dram),
        "energy_pj": b(energy),
        "energy_mac_2d_pj": b(e_mac2d),
        "energy_ops_pj": b(e_ops),
        "energy_reg_pj": b(e_reg),
        "energy_glb_pj": b(e_glb),
        "energy_dram_pj": b(e_dram),
        "buffer_bytes": b(np.minimum(buffer_need, glb)),
        "buffer_occupancy": b(np.minimum(buffer_need, glb) / glb),
        "spill_fraction": b(spill),
        "rows_resident": b(rows_resident),
    }


def _tri(n: np.ndarray, u: np.ndarray) -> np.ndarray:
    """sum of clip(t, 0, u) over the integers t < n."""
    n = np.asarray(n, dtype=np.float64)
    inside = np.clip(n, 0, u)
    return inside * (inside - 1) / 2 * (n > 0) + np.maximum(n - u, 0) * u


def _pairs_upto(u: np.ndarray, v: np.ndarray, x: float) -> np.ndarray:
    """Number of (i, j) in [0, u) x [0, v) with i - j <= x."""
    if x == np.inf:
        return u * v
    if x == -np.inf:
        return _f(0.0) * u * v
    c = x + 1
    return _tri(c + v, u) - _tri(_f(c) + 0 * v, u)


def _clipped_ramp_sum(n: np.ndarray, step: np.ndarray, start: np.ndarray, cap: np.ndarray) -> np.ndarray:
    """sum of clip(b * step + start, 0, cap) over the integers 0 <= b < n (step >= 1, cap >= 0)."""
    below = np.clip(np.floor(-start / step) + 1, 0, n)  # terms <= 0
    ramp_end = np.clip(np.ceil((cap - start) / step), below, n)  # terms < cap end here
    k = ramp_end - below
    return step * (below + ramp_end - 1) * k / 2 + start * k + (n - ramp_end) * cap


def _block_pairs(
    n_rows: np.ndarray,
    block: np.ndarray,
    n_cols: np.ndarray,
    lo: float,
    hi: float,
    row_range: tuple[float, float],
    col_range: tuple[float, float],
) -> np.ndarray:
    """Columns fetched, summed over blocks of ``block`` consecutive rows, when a block needs column c
    only if one of its rows r has ``lo <= r - c <= hi`` (rows and columns also limited to their ranges).

    With no limits this is ceil(n_rows / block) * n_cols; a causal mask (lo = 0) or a window
    (hi = W - 1) fetches only the columns a block can see. Closed form, vectorized.
    """
    if lo > hi:
        return _f(0.0) * n_rows * block * n_cols
    if (lo, hi, *row_range, *col_range) == (-np.inf, np.inf, -np.inf, np.inf, -np.inf, np.inf):
        return np.ceil(n_rows / block) * n_cols  # no mask: every block fetches every column
    r0, r1 = np.clip(row_range[0], 0, n_rows), np.clip(row_range[1], -1, n_rows - 1)
    c0, c1 = np.clip(col_range[0], 0, n_cols), np.clip(col_range[1], -1, n_cols - 1)
    n_used_rows = np.maximum(r1 - r0 + 1, 0)
    cap = np.maximum(c1 - c0 + 1, 0)
    big = n_rows + n_cols + block + 1
    lo_, hi_ = np.clip(lo, -big, big), np.clip(hi, -big, big)
    full = np.floor(n_used_rows / block)
    # a block of rows [a, a + block - 1] needs the columns [a - hi, a + block - 1 - lo]; count them in
    # [c0, c1] as G(last) - G(first - 1), G(x) = clip(x - c0 + 1, 0, cap)
    fetched = _clipped_ramp_sum(full, block, r0 + block - 1 - lo_ - c0 + 1, cap) - _clipped_ramp_sum(
        full, block, r0 - hi_ - 1 - c0 + 1, cap
    )
    a = r0 + full * block
    last = np.clip(r1 - lo_ - c0 + 1, 0, cap) - np.clip(a - hi_ - 1 - c0 + 1, 0, cap)
    return fetched + np.where(n_used_rows > full * block, last, 0.0)


def bottleneck(result: Mapping[str, np.ndarray]) -> np.ndarray:
    """Name the term that sets the latency: dram, 2d_array, 1d_array or pipeline_stall."""
    mem, b2, b1, st = (np.asarray(result[k]) for k in ("memory_s", "busy_2d_s", "busy_1d_s", "stall_s"))
    names = np.array(["dram", "2d_array", "1d_array", "pipeline_stall"])
    return names[np.argmax(np.stack(np.broadcast_arrays(mem, b2, b1, st)), axis=0)]


def linear_layers(
    arch: Arch, model: ModelShape, seq_len: ArrayLike, overrides: Mapping[str, ArrayLike] | None = None
) -> dict[str, np.ndarray]:
    """The rest of one transformer layer on the 2D array: Q/K/V/output projections and the FFN.

    Each matmul streams its activations once and its weights once; it takes max(compute, traffic /
    bandwidth), the compute output stationary: tokens along the rows, output features along the
    columns, whole tiles (a partial tile takes as long as a full one), the reduction in time.
    """
    over = dict(overrides or {})
    rows, cols = _f(over.get("rows", arch.rows)), _f(over.get("cols", arch.cols))
    clock, bw = (
        _f(over.get("clock_hz", arch.clock_hz)),
        _f(over.get("dram_bytes_per_s", arch.dram_bytes_per_s)),
    )
    glb, banks = _f(over.get("glb_bytes", arch.glb_bytes)), _f(over.get("glb_banks", arch.glb_banks))
    for name, v in (("rows", rows), ("cols", cols), ("clock_hz", clock), ("dram_bytes_per_s", bw)):
        _check("linear_layers: arch", name, v, minimum=0.0, whole=name in _WHOLE_ARCH)
    for name, v in (("glb_bytes", glb), ("glb_banks", banks)):
        _check("linear_layers: arch", name, v, minimum=0.0, whole=True)
    _check("linear_layers:", "seq_len", _f(seq_len), minimum=1.0, whole=True)
    tokens = model.batch * _f(seq_len)
    d, he, hf = model.d_model, model.heads * model.e, model.heads * model.f
    shapes = [(d, he), (d, he), (d, he), (hf, d), (d, model.ffn), (model.ffn, d)]
    w = arch.word_bytes
    en = arch.energies
    latency, macs, traffic = _f(0.0), _f(0.0), _f(0.0)
    for k, n in shapes:
        m = tokens * k * n
        t = w * (tokens * k + k * n + tokens * n)
        cycles = np.ceil(tokens / rows) * np.ceil(n / cols) * k  # whole output tiles, k in time
        latency = latency + np.maximum(cycles / clock, t / bw)
        macs = macs + m
        traffic = traffic + t
    scale = np.sqrt(glb / banks / en.glb_reference_bank_bytes)
    energy = macs * (en.mac + en.reg_read + en.reg_write) + traffic * (
        en.dram_per_byte + (en.glb_read_per_byte + en.glb_write_per_byte) * scale
    )
    return {"latency_s": latency, "energy_pj": energy, "dram_bytes": traffic, "macs": macs}
