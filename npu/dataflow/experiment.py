"""Experiment kind ``fusemax``: one design on one workload, or a vectorized design-space sweep.

``mode = "point"`` evaluates a design (attention and, with ``end_to_end``, the whole layer) and its
ratios to ``baseline`` on the same workload and the same hardware overrides.
``mode = "design_space"`` crosses the ``dse_*`` lists into one numpy evaluation (10,000 points
take milliseconds), writes every point to ``design_space.csv`` in the trial's artifact folder
and returns the best point and the evaluation rate.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import numpy as np
import pandas as pd

from simcim.experiments.config import param
from simcim.experiments.kinds import TrialContext
from simcim.npu.dataflow.arch import MODELS, ModelShape
from simcim.npu.dataflow.designs import DESIGNS
from simcim.npu.dataflow.einsum import builtin_cascade
from simcim.npu.dataflow.model import Design, Stage, bottleneck, evaluate, linear_layers
from simcim.npu.dataflow.passes import analyze_passes

DesignName = Literal["unfused", "flat", "cascade", "fusemax_arch", "fusemax"]


@dataclasses.dataclass(frozen=True)
class Params:
    design: DesignName = param("fusemax", help="design to evaluate (see simcim.npu.dataflow.designs)")
    baseline: DesignName = param("flat", help="design the ratios are taken against")
    model: Literal["BERT", "TrXL", "T5", "XLM"] = param("BERT", help="transformer shape (FuseMax's set)")
    seq_len: int = param(1024, ge=1, le=1 << 24, help="sequence length (queries = keys) [tokens]")
    batch: int | None = param(None, ge=1, help="batch; default: the model's (64)")
    cascade: str | None = param(
        None,
        help="a user's .einsum file (or shipped cascade name) run on the design's hardware: Einsums over "
        "every key go to the 2D array when its PEs support their operations, the rest to the 1D array",
    )
    rows: int | None = param(None, ge=1, help="2D array rows [PEs]; default: the design's (256)")
    cols: int | None = param(None, ge=1, help="2D array columns (and M0 tile) [PEs]; default: the design's (256)")
    pes_1d: int | None = param(None, ge=1, help="1D array size [PEs]; default: the design's (256)")
    glb_mib: float | None = param(
        None, gt=0, help="global buffer [MiB], rounded down to whole bytes; default: the design's (FLAT 32, FuseMax 16)"
    )
    dram_gib_s: float | None = param(None, gt=0, help="DRAM bandwidth [GiB/s]; default 400")
    clock_mhz: float | None = param(None, gt=0, help="clock [MHz]; default 940")
    kv_group: int = param(1, ge=1, help="query heads per key/value head, for cascades with a g index (GQA)")
    end_to_end: bool = param(True, help="also model the layer's linear layers (projections and FFN)")
    mode: Literal["point", "design_space"] = param("point", help="one point, or the dse_* grid at once")
    dse_array_dim: list[int] = param(
        default_factory=lambda: [64, 128, 256, 512], ge=1, help="square 2D array sizes [PEs a side]"
    )
    dse_pes_1d: list[int] = param(default_factory=lambda: [64, 128, 256, 512], ge=1, help="1D array sizes [PEs]")
    dse_glb_mib: list[float] = param(
        default_factory=lambda: [4.0, 8.0, 16.0, 32.0, 64.0], gt=0, help="global buffer sizes [MiB]"
    )
    dse_dram_gib_s: list[float] = param(
        default_factory=lambda: [100.0, 200.0, 400.0, 800.0, 1600.0], gt=0, help="DRAM bandwidths [GiB/s]"
    )
    dse_seq_len: list[int] = param(
        default_factory=lambda: [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18, 1 << 20],
        ge=1,
        help="sequence lengths [tokens]",
    )

    def __post_init__(self) -> None:
        if self.mode == "design_space":
            for name in ("dse_array_dim", "dse_pes_1d", "dse_glb_mib", "dse_dram_gib_s", "dse_seq_len"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: expected a non-empty list in design_space mode")
        if self.kv_group > 1 and MODELS[self.model].heads % self.kv_group:
            raise ValueError(
                f"kv_group: {self.kv_group} does not divide the {MODELS[self.model].heads} heads of {self.model}"
            )
        if self.cascade is not None:
            builtin_cascade(self.cascade)  # raises a one-line error on a missing file or bad notation
        self._check_buffer()

    def _check_buffer(self) -> None:
        """Refuse, before any trial runs, a global buffer that cannot hold one K/V tile and one query row."""
        d = DESIGNS[self.design] if self.cascade is None else auto_design(DESIGNS[self.design], self.cascade)
        shape = _shape(self)
        if self.mode == "point":
            checks = [(d, _workload(shape, self.seq_len, d, self.kv_group), _overrides(self))]
            checks.append((DESIGNS[self.baseline], _workload(shape, self.seq_len), _overrides(self)))
        else:  # the smallest buffer with the widest array; the working set does not depend on the length
            dim = float(max(self.dse_array_dim))
            over = {"rows": dim, "cols": dim, "glb_bytes": np.floor(min(self.dse_glb_mib) * 2**20)}
            checks = [(d, _workload(shape, min(self.dse_seq_len), d, self.kv_group), over)]
        for design, wl, over in checks:
            try:
                evaluate(design, wl, over)
            except ValueError as e:
                if "glb_bytes" in str(e):
                    raise ValueError(f"{'glb_mib' if self.mode == 'point' else 'dse_glb_mib'}: {e}") from None
                raise


DEFAULT_METRICS = ("speedup_vs_baseline", "energy_vs_baseline", "util_2d", "util_1d", "latency_s")


def auto_design(base: Design, cascade_name: str) -> Design:
    """A user's cascade on ``base``'s hardware and memory mapping, its tiles perfectly interleaved.

    An Einsum that traverses the whole key rank goes to the 2D array when the 2D PEs support
    all its operations; everything else (per-tile corrections, final divides) goes to the 1D array.
    """
    cascade = builtin_cascade(cascade_name)
    outer, inner = cascade.partitions.get("m", ("m", "m"))
    costs_2d = base.arch.cycles("2d")
    two_d, one_d = [], []
    for e in cascade.einsums:
        vs = set(e.iteration_vars)
        full = "m" in vs or {outer, inner} <= vs
        (two_d if full and set(e.op_counts()) <= set(costs_2d) else one_d).append(e.name)
    return Design(
        f"{base.name}+{cascade.name}",
        cascade_name,
        base.arch,
        stages=(Stage(tuple(two_d), tuple(one_d)),),
        intermediates=base.intermediates,
        operand_reuse=base.operand_reuse,
        overlap=base.overlap,
    )


def _shape(params: Params) -> ModelShape:
    m = MODELS[params.model]
    return dataclasses.replace(m, batch=params.batch) if params.batch is not None else m


def _overrides(params: Params) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value, scale in (
        ("rows", params.rows, 1),
        ("cols", params.cols, 1),
        ("pes_1d", params.pes_1d, 1),
        ("glb_bytes", params.glb_mib, 2**20),
        ("dram_bytes_per_s", params.dram_gib_s, 2**30),
        ("clock_hz", params.clock_mhz, 1e6),
    ):
        if value is not None:
            out[key] = float(value) * scale
    if "glb_bytes" in out:
        out["glb_bytes"] = float(np.floor(out["glb_bytes"]))  # a buffer holds whole bytes
    return out


def _workload(
    shape: ModelShape, seq_len: np.ndarray | int, d: Design | None = None, kv_group: int = 1
) -> dict[str, np.ndarray | int]:
    wl: dict[str, np.ndarray | int] = {
        "B": shape.batch,
        "H": shape.heads,
        "M": seq_len,
        "P": seq_len,
        "E": shape.e,
        "F": shape.f,
    }
    if d is not None and any("g" in e.iteration_vars for e in builtin_cascade(d.cascade).einsums):
        if shape.heads % kv_group:
            raise ValueError(f"kv_group: {kv_group} does not divide the {shape.heads} heads of {shape.name}")
        wl["H"], wl["G"] = shape.heads // kv_group, kv_group
    return wl


def run_trial(params: Params, seed: int, ctx: TrialContext) -> dict[str, float | int | str | list[float]]:
    del seed  # the model is deterministic
    d = DESIGNS[params.design]
    if params.cascade is not None:
        d = auto_design(d, params.cascade)
    if params.mode == "design_space":
        return _design_space(params, d, ctx)
    shape = _shape(params)
    over = _overrides(params)
    r = evaluate(d, _workload(shape, params.seq_len, d, params.kv_group), over)
    base = evaluate(DESIGNS[params.baseline], _workload(shape, params.seq_len), over)
    passes = analyze_passes(builtin_cascade(d.cascade))
    out: dict[str, float | int | str | list[float]] = {k: float(v) for k, v in r.items()}
    out["bottleneck"] = str(bottleneck(r))
    out["passes"] = passes.passes
    out["speedup_vs_baseline"] = float(base["latency_s"] / r["latency_s"])
    out["energy_vs_baseline"] = float(r["energy_pj"] / base["energy_pj"])
    if params.end_to_end:
        lin = linear_layers(d.arch, shape, params.seq_len, over)
        lin_base = linear_layers(DESIGNS[params.baseline].arch, shape, params.seq_len, over)
        e2e_lat = float(r["latency_s"] + lin["latency_s"])
        e2e_energy = float(r["energy_pj"] + lin["energy_pj"])
        out["e2e_latency_s"] = e2e_lat
        out["e2e_energy_pj"] = e2e_energy
        out["e2e_speedup_vs_baseline"] = float(base["latency_s"] + lin_base["latency_s"]) / e2e_lat
        out["e2e_energy_vs_baseline"] = e2e_energy / float(base["energy_pj"] + lin_base["energy_pj"])
    return out


def _design_space(params: Params, d: Design, ctx: TrialContext) -> dict[str, float | int | str | list[float]]:
    shape = _shape(params)
    grids = np.meshgrid(
        np.asarray(params.dse_array_dim, float),
        np.asarray(params.dse_pes_1d, float),
        np.floor(np.asarray(params.dse_glb_mib, float) * 2**20),
        np.asarray(params.dse_dram_gib_s, float) * 2**30,
        np.asarray(params.dse_seq_len, float),
        indexing="ij",
    )
    dim, pes, glb, bw, seq = (g.ravel() for g in grids)
    t0 = time.perf_counter()
    over = {"rows": dim, "cols": dim, "pes_1d": pes, "glb_bytes": glb, "dram_bytes_per_s": bw}
    r = evaluate(d, _workload(shape, seq, d, params.kv_group), over)
    elapsed = time.perf_counter() - t0
    n = dim.size
    table = pd.DataFrame(
        {"array_dim": dim, "pes_1d": pes, "glb_mib": glb / 2**20, "dram_gib_s": bw / 2**30, "seq_len": seq}
        | {k: v for k, v in r.items()}
        | {"bottleneck": bottleneck(r)}
    )
    table.to_csv(ctx.artifact_dir / "design_space.csv", index=False)
    # best throughput per PE among the points at the longest sequence length
    longest = seq == seq.max()
    work_per_area = 1.0 / (r["latency_s"] * (dim * dim + pes))
    best = int(np.flatnonzero(longest)[np.argmax(work_per_area[longest])])
    return {
        "points": int(n),
        "eval_seconds": elapsed,
        "points_per_second": n / max(elapsed, 1e-9),
        "best_array_dim": float(dim[best]),
        "best_pes_1d": float(pes[best]),
        "best_glb_mib": float(glb[best] / 2**20),
        "best_dram_gib_s": float(bw[best] / 2**30),
        "best_latency_s": float(r["latency_s"][best]),
        "best_util_2d": float(r["util_2d"][best]),
        "dram_bound_fraction": float(np.mean(bottleneck(r) == "dram")),
    }
