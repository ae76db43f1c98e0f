"""Cross-check the 2D-array model against SCALE-Sim v3 on GEMMs (output-stationary dataflow).

    python -m simcim.npu.dataflow.scalesim_check [--arrays 256 128] [--python PATH] [--csv out.csv]

Each shape runs through our model (:func:`simcim.npu.dataflow.model.evaluate` on the shipped
``gemm`` cascade: tokens along the array rows, output features along its columns, the reduction in
time) and through SCALE-Sim (``scalesim`` on PyPI) with the same array, dataflow (``os``), SRAM
and DRAM bandwidth. SCALE-Sim runs in a subprocess with the interpreter ``--python`` (default:
``$SIMCIM_SCALESIM_PYTHON``, else this one), so it may live in a virtual environment of its own.

Compared: compute cycles (SCALE-Sim's total minus its stall cycles; also ours plus a fill and drain
of ``rows + cols - 2`` cycles for every fold, which SCALE-Sim does not overlap), DRAM stall cycles (ours: the
part of the latency that DRAM adds over the compute, ``max(0, memory - compute)``) and DRAM traffic
in elements.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from simcim.npu.dataflow.arch import FUSEMAX_ARCH, MODELS
from simcim.npu.dataflow.model import Design, Stage, evaluate

__all__ = ["SHAPES", "Gemm", "compare", "ours", "scalesim_available", "scalesim_gemm"]


@dataclasses.dataclass(frozen=True)
class Gemm:
    """(tokens x k) times (k x n): tokens along the array rows, n along its columns, k in time."""

    name: str
    tokens: int
    k: int
    n: int


def _shapes() -> tuple[Gemm, ...]:
    bert, trxl, t5, xlm = (MODELS[k] for k in ("BERT", "TrXL", "T5", "XLM"))
    t = 512  # tokens of one 512-long sequence (batch 1): SCALE-Sim's run time grows with the cycles
    return (
        Gemm("BERT qkv proj", t, bert.d_model, bert.heads * bert.e),
        Gemm("BERT ffn up", t, bert.d_model, bert.ffn),
        Gemm("BERT ffn down", t, bert.ffn, bert.d_model),
        Gemm("TrXL out proj", t, trxl.heads * trxl.f, trxl.d_model),
        Gemm("T5 ffn up", t, t5.d_model, t5.ffn),
        Gemm("XLM qkv proj", 256, xlm.d_model, xlm.heads * xlm.e),
        Gemm("attn QK^T (E=64)", t, bert.e, t),
        Gemm("attn AV (F=64)", t, t, bert.f),
        Gemm("XLM attn QK^T (E=128)", t, xlm.e, t),
        Gemm("decode qkv (1 token)", 1, bert.d_model, bert.heads * bert.e),
        Gemm("decode ffn down (8 tokens)", 8, trxl.ffn, trxl.d_model),
        Gemm("skinny 64x64x4096", 64, 64, 4096),
    )


SHAPES = _shapes()
GEMM_CASCADE = "gemm"
WORD_BYTES = FUSEMAX_ARCH.word_bytes


def _design(rows: int, cols: int, sram_bytes: int) -> Design:
    arch = dataclasses.replace(FUSEMAX_ARCH, name=f"os{rows}x{cols}", rows=rows, cols=cols, glb_bytes=sram_bytes)
    return Design("gemm_os", GEMM_CASCADE, arch, stages=(Stage(two_d=("S",)),), operand_reuse="rows")


def ours(shape: Gemm, rows: int, cols: int, sram_bytes: int, words_per_cycle: float) -> dict[str, float]:
    """Our compute cycles, DRAM stall cycles and DRAM elements for one GEMM (clock 1 Hz: seconds = cycles)."""
    d = _design(rows, cols, sram_bytes)
    wl = {"B": 1, "H": 1, "M": shape.n, "P": shape.tokens, "E": shape.k}
    r = evaluate(d, wl, {"clock_hz": 1.0, "dram_bytes_per_s": words_per_cycle * WORD_BYTES})
    compute = float(r["compute_s"])
    return {
        "ours_compute_cycles": compute,
        "ours_stall_cycles": max(0.0, float(r["memory_s"]) - compute),
        "ours_dram_elements": float(r["dram_bytes"]) / WORD_BYTES,
    }


_RUNNER = r"""
import json, sys
from scalesim.scale_sim import scalesim
a = json.loads(sys.argv[1])
s = scalesim(save_disk_space=True, verbose=False, config=a["config"], topology=a["topology"],
             layout=a["layout"], input_type_gemm=True)
s.run_scale(top_path=a["out"])
"""


def _config(run: str, rows: int, cols: int, sram_kib: int, per_operand_bw: int) -> str:
    return f"""[general]
run_name = {run}

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: {sram_kib}
FilterSramSzkB: {sram_kib}
OfmapSramSzkB: {sram_kib}
IfmapOffset: 0
FilterOffset: 100000000
OfmapOffset: 200000000
Bandwidth: {per_operand_bw}
Dataflow: os
ReadRequestBuffer: 512
WriteRequestBuffer: 512

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: {per_operand_bw}
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: {per_operand_bw}
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false

[run_presets]
InterfaceBandwidth: USER
UseRamulatorTrace: False
"""


def scalesim_python() -> str:
    return os.environ.get("SIMCIM_SCALESIM_PYTHON") or sys.executable


def scalesim_available(python: str | None = None) -> bool:
    """Whether ``python`` (default :func:`scalesim_python`) can import SCALE-Sim."""
    try:
        done = subprocess.run(
            [python or scalesim_python(), "-c", "import scalesim.scale_sim"], capture_output=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def scalesim_gemm(
    shapes: tuple[Gemm, ...], rows: int, cols: int, sram_kib: int, per_operand_bw: int, python: str | None = None
) -> pd.DataFrame:
    """SCALE-Sim's cycles, stalls and DRAM accesses for each shape (one layer each), output stationary.

    SCALE-Sim gives the input, weight and output buffers ``sram_kib`` KiB and ``per_operand_bw``
    elements per cycle of DRAM bandwidth each (its words are one element).
    """
    with tempfile.TemporaryDirectory(prefix="scalesim_") as tmp:
        t = Path(tmp)
        run = f"os{rows}x{cols}"
        (t / "scale.cfg").write_text(_config(run, rows, cols, sram_kib, per_operand_bw))
        # SCALE-Sim's GEMM topology: M (rows of the input), N (columns of the output), K (reduction)
        lines = ["Layer, M, N, K,"] + [f"g{i}, {s.tokens}, {s.n}, {s.k}," for i, s in enumerate(shapes)]
        (t / "gemm.csv").write_text("\n".join(lines) + "\n")
        (t / "layout.csv").write_text("Layer,\n")
        args = {"config": str(t / "scale.cfg"), "topology": str(t / "gemm.csv"), "layout": str(t / "layout.csv")}
        args["out"] = str(t / "out")
        done = subprocess.run([python or scalesim_python(), "-c", _RUNNER, json.dumps(args)], capture_output=True)
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise RuntimeError(f"SCALE-Sim failed (exit {done.returncode}): {tail[0]}")
        compute = pd.read_csv(t / "out" / run / "COMPUTE_REPORT.csv", skipinitialspace=True)
        access = pd.read_csv(t / "out" / run / "DETAILED_ACCESS_REPORT.csv", skipinitialspace=True)
    compute.columns = [c.strip() for c in compute.columns]
    access.columns = [c.strip() for c in access.columns]
    dram = access["DRAM IFMAP Reads"] + access["DRAM Filter Reads"] + access["DRAM OFMAP Writes"]
    return pd.DataFrame(
        {
            "scalesim_total_cycles": compute["Total Cycles"].to_numpy(float),
            "scalesim_compute_cycles": (compute["Total Cycles"] - compute["Stall Cycles"]).to_numpy(float),
            "scalesim_stall_cycles": compute["Stall Cycles"].to_numpy(float),
            "scalesim_dram_elements": dram.to_numpy(float),
        }
    )


def compare(
    shapes: tuple[Gemm, ...] = SHAPES,
    arrays: tuple[int, ...] = (256, 128),
    sram_kib: int = 4096,
    bytes_per_cycle: float = 400 * 2**30 / 940e6,
    python: str | None = None,
) -> pd.DataFrame:
    """Both models on every shape and square array size; DRAM bandwidth split evenly over the 3 operands."""
    per_operand = max(1, int(bytes_per_cycle / WORD_BYTES / 3))
    rows = []
    for dim in arrays:
        sim = scalesim_gemm(shapes, dim, dim, sram_kib, per_operand, python)
        for i, s in enumerate(shapes):
            ours_ = ours(s, dim, dim, sram_kib * 1024 * 3, 3 * per_operand)
            row = {"array": f"{dim}x{dim}", **dataclasses.asdict(s), **ours_, **sim.iloc[i].to_dict()}
            row["compute_ratio"] = row["ours_compute_cycles"] / row["scalesim_compute_cycles"]
            # SCALE-Sim fills and drains the array for every fold, one after another; our model
            # overlaps them with the neighbouring folds (see docs/dataflow.md)
            folds = -(-s.tokens // dim) * -(-s.n // dim)
            row["folds"] = folds
            row["ours_plus_fill_drain"] = row["ours_compute_cycles"] + folds * (2 * dim - 2)
            row["fill_drain_ratio"] = row["ours_plus_fill_drain"] / row["scalesim_compute_cycles"]
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arrays", type=int, nargs="+", default=[256, 128], help="square array sizes (PEs a side)")
    ap.add_argument("--sram-kib", type=int, default=4096, help="SCALE-Sim's SRAM per operand, KiB (ours: 3x)")
    ap.add_argument("--python", default=None, help="interpreter with scalesim installed")
    ap.add_argument("--csv", type=Path, default=Path("scalesim_check.csv"))
    args = ap.parse_args(argv)
    if any(a < 1 for a in args.arrays) or args.sram_kib < 1:
        raise SystemExit("--arrays and --sram-kib must be >= 1")
    if not scalesim_available(args.python):
        raise SystemExit(
            f"SCALE-Sim is not importable by {args.python or scalesim_python()}: pip install scalesim "
            "(in a venv with numpy < 2.4) and pass --python or set SIMCIM_SCALESIM_PYTHON"
        )
    t = compare(arrays=tuple(args.arrays), sram_kib=args.sram_kib, python=args.python)
    cols = ["array", "name", "tokens", "k", "n", "folds", "ours_compute_cycles", "scalesim_compute_cycles"]
    cols += ["compute_ratio", "fill_drain_ratio"]
    cols += ["ours_stall_cycles", "scalesim_stall_cycles", "ours_dram_elements", "scalesim_dram_elements"]
    pd.set_option("display.width", 250)
    print(t[cols].to_string(index=False, float_format=lambda x: f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"))
    t.to_csv(args.csv, index=False)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
