"""The NVR paper's three headline numbers beside ours, from the bundled claim sweeps.

    python -m simcim.npu.reproduce [--results results] [--workers 2] [--dram banks [--dram-preset hbm2]]

Runs (or resumes: finished trials are kept) ``experiments/configs/npu_claim{1,2,3}_*.toml``
through the runner into ``RESULTS/<name>/``, then prints a markdown table. ``--dram banks``
runs the same sweeps over the open-page bank model of the preset (into
``RESULTS/<name>-banks-<preset>/``) with ``dram_latency`` lowered by the preset's
``t_rcd + t_cas``, so that a read to a closed bank takes as long as the fixed-latency DRAM's
100 cycles: row hits are then faster, row conflicts slower.

1. miss reduction of NVR against the best other prefetcher, per workload and on average
   (against the best of all others, IMP included, and against the best general-purpose one:
   next-line, stride, stream);
2. NVR's speedup over the same NPU without prefetching, per workload (arithmetic and
   geometric mean), without and with a 16 KiB NPU cache;
3. the performance gain (baseline cycles / cycles - 1) of +16 KiB of NPU cache over that of
   +16 KiB of L2, both with NVR, as the ratio of the mean gains: expanding the 16 KiB NPU
   cache to 32 KiB (the paper's wording), and adding a 16 KiB NPU cache to an NPU without one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
CLAIMS = ("npu_claim1_misses", "npu_claim2_speedup", "npu_claim3_cache")
PAPER = {"miss_reduction": 0.90, "speedup": 4.0, "cache_ratio": 5.0}
GENERAL_PURPOSE = ("next_line", "stride", "stream")


def bank_overrides(preset: str, clock_ghz: float = 1.0) -> dict[str, object]:
    """Config overrides for the bank model with a closed-bank read as long as the default 100 cycles."""
    from simcim.npu.dram import preset_cycles

    g = preset_cycles(preset, clock_ghz)
    return {"params.dram_model": "banks", "params.dram_preset": preset,
            "params.dram_latency": 100 - g["t_rcd"] - g["t_cas"]}


def run_claims(results: Path, workers: int, overrides: dict[str, object] | None = None,
               suffix: str = "") -> dict[str, pd.DataFrame]:
    from simcim.experiments.config import load_config
    from simcim.experiments.runner import run_trials, write_run_manifest
    from simcim.experiments.store import load

    frames = {}
    for name in CLAIMS:
        cfg = load_config(CONFIG_DIR / f"{name}.toml", overrides)
        run_dir = results / f"{cfg.name}{suffix}"
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_manifest(cfg, run_dir, True)
        summary = run_trials(cfg.trials(), run_dir, workers=workers, description=name)
        if summary.failed:
            raise RuntimeError(f"{name}: {summary.failed} trial(s) failed: {next(iter(summary.errors.values()))}")
        frames[name] = load(run_dir)
    return frames


def claim1(df: pd.DataFrame) -> pd.DataFrame:
    misses = df.pivot_table(index="workload", columns="prefetcher", values="misses", aggfunc="mean")
    others = [c for c in misses.columns if c not in ("nvr", "none")]
    gp = [c for c in GENERAL_PURPOSE if c in misses.columns]
    out = pd.DataFrame({
        "none": misses["none"],
        "best_other": misses[others].idxmin(axis=1),
        "best_other_misses": misses[others].min(axis=1),
        "nvr": misses["nvr"],
    })
    out["reduction_vs_best"] = 1 - out["nvr"] / out["best_other_misses"]
    out["reduction_vs_best_general"] = 1 - out["nvr"] / misses[gp].min(axis=1)
    out["reduction_vs_none"] = 1 - out["nvr"] / out["none"]
    return out


def claim2(df: pd.DataFrame) -> pd.DataFrame:
    return df.pivot_table(index="workload", columns="npu_cache_kib", values="speedup", aggfunc="mean")


def claim3(df: pd.DataFrame) -> pd.DataFrame:
    cyc = df.pivot_table(index="workload", columns=["npu_cache_kib", "l2_kib"], values="cycles", aggfunc="mean")
    return pd.DataFrame({
        "expand_npu_cache": cyc[(16.0, 256.0)] / cyc[(32.0, 256.0)] - 1,
        "expand_l2": cyc[(16.0, 256.0)] / cyc[(16.0, 272.0)] - 1,
        "add_npu_cache": cyc[(0.0, 256.0)] / cyc[(16.0, 256.0)] - 1,
        "add_l2": cyc[(0.0, 256.0)] / cyc[(0.0, 272.0)] - 1,
    })


def _ratio(a: pd.Series, b: pd.Series) -> str:
    return f"{a.mean() / b.mean():.1f}x" if b.mean() > 0 else "unbounded (L2 gain <= 0)"


def table(frames: dict[str, pd.DataFrame]) -> str:
    c1, c2, c3 = claim1(frames[CLAIMS[0]]), claim2(frames[CLAIMS[1]]), claim3(frames[CLAIMS[2]])
    lines = [
        "| claim | paper | ours |",
        "| --- | --- | --- |",
        f"| NVR cache-miss reduction vs the best other prefetcher (mean over workloads) | "
        f"{PAPER['miss_reduction']:.0%} | {c1['reduction_vs_best'].mean():.0%} vs best incl. IMP; "
        f"{c1['reduction_vs_best_general'].mean():.0%} vs best of next-line/stride/stream |",
        f"| NVR speedup over no prefetching (mean over workloads) | {PAPER['speedup']:.0f}x | "
        f"{c2[0.0].mean():.2f}x (geomean {np.exp(np.log(c2[0.0]).mean()):.2f}x) without NPU cache; "
        f"{c2[16.0].mean():.2f}x (geomean {np.exp(np.log(c2[16.0]).mean()):.2f}x) with 16 KiB |",
        f"| gain of +16 KiB NPU cache over gain of +16 KiB L2, with NVR | {PAPER['cache_ratio']:.0f}x | "
        f"expanding the 16 KiB NPU cache: {_ratio(c3['expand_npu_cache'], c3['expand_l2'])} (mean gains "
        f"{c3['expand_npu_cache'].mean():.1%} vs {c3['expand_l2'].mean():.1%}); adding a 16 KiB NPU cache: "
        f"{_ratio(c3['add_npu_cache'], c3['add_l2'])} ({c3['add_npu_cache'].mean():.1%} vs "
        f"{c3['add_l2'].mean():.1%}) |",
        "",
        "Per workload (misses are demand load misses reaching DRAM):",
        "",
        "| workload | misses none | best other (misses) | NVR misses | NVR vs best | speedup, no NPU cache | "
        "speedup, 16 KiB NPU cache | 16->32 KiB NPU cache | 16 KiB NPU cache, L2 +16 KiB | "
        "0->16 KiB NPU cache | no NPU cache, L2 +16 KiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in c1.index:
        lines.append(
            f"| {w} | {c1.loc[w, 'none']:.0f} | {c1.loc[w, 'best_other']} ({c1.loc[w, 'best_other_misses']:.0f}) | "
            f"{c1.loc[w, 'nvr']:.0f} | {c1.loc[w, 'reduction_vs_best']:.0%} | {c2.loc[w, 0.0]:.2f}x | "
            f"{c2.loc[w, 16.0]:.2f}x | {c3.loc[w, 'expand_npu_cache']:.1%} | {c3.loc[w, 'expand_l2']:.1%} | "
            f"{c3.loc[w, 'add_npu_cache']:.1%} | {c3.loc[w, 'add_l2']:.1%} |")
    return "\n".join(lines)


def row_hit_rates(df: pd.DataFrame) -> str:
    """DRAM row-buffer hit rate per workload and prefetcher (bank model runs of claim 1)."""
    rates = df.pivot_table(index="workload", columns="prefetcher", values="dram_row_hit_rate", aggfunc="mean")
    cols = [c for c in ("none", "next_line", "stride", "stream", "imp", "nvr") if c in rates.columns]
    lines = ["| workload | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for w in rates.index:
        lines.append(f"| {w} | " + " | ".join(f"{rates.loc[w, c]:.0%}" for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=Path("results"), help="folder holding the run folders")
    ap.add_argument("--workers", type=int, default=0, help="Dask worker processes (0: run serially)")
    ap.add_argument("--dram", choices=("simple", "banks"), default="simple", help="DRAM model")
    ap.add_argument("--dram-preset", choices=("ddr4_3200", "hbm2", "hbm3"), default="ddr4_3200",
                    help="device of the banks model")
    args = ap.parse_args(argv)
    if args.workers < 0:
        raise SystemExit(f"--workers must be >= 0, got {args.workers}")
    if args.dram == "banks":
        frames = run_claims(args.results, args.workers, bank_overrides(args.dram_preset),
                            f"-banks-{args.dram_preset}")
    else:
        frames = run_claims(args.results, args.workers)
    print(table(frames))
    if args.dram == "banks":
        print("\nDRAM row-buffer hit rate (claim 1 runs):\n")
        print(row_hit_rates(frames[CLAIMS[0]]))


if __name__ == "__main__":
    main()
