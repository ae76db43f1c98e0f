"""The GPU model beside the kernel benchmarks: ``python -m simcim.validation.bench_cases CSV [--spec h200]``.

The ``sim_vs_measured`` run checks the model at the decode-step shapes of two small models. The
benchmarks of ``simcim.kernels.bench`` time the same kernels at large shapes (attention at 4K-16K tokens,
GEMVs of 8192 x 28672, a 32K-token KV cache, SpMM over 16384^2, a 1M-row embedding table), and
docs/kernels.md and docs/history.md record those medians. A CSV of them (``docs/data/bench_*.csv``: counter,
its arguments as JSON, what was timed, the median in us, where it was recorded) is here
predicted by the current model with a GPU spec, and the table says how far each prediction is.
Nothing is fitted to these figures; where a benchmark timed the best of several configs, the model
still predicts the default one (the CSV's source column says which).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from simcim.validation.report import mape, markdown_table

COLUMNS = ("counter", "args", "impl", "meas_us", "source")


def load_cases(path: str | Path) -> pd.DataFrame:
    """The benchmark medians of ``path``, each row's arguments parsed; a bad row is named by its line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark cases file not found: {path}")
    df = pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (needs {', '.join(COLUMNS)})")
    args = []
    for i, a in enumerate(df["args"], start=2):
        try:
            kw = json.loads(a)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}, line {i}: args is not a JSON object: {e}") from None
        if not isinstance(kw, dict):
            raise ValueError(f"{path}, line {i}: args is not a JSON object")
        args.append(kw)
    df["args"] = args
    meas = pd.to_numeric(df["meas_us"], errors="coerce")
    bad = meas.isna() | (meas <= 0)
    if bad.any():
        raise ValueError(f"{path}, line {int(bad.idxmax()) + 2}: meas_us must be a positive number")
    df["meas_us"] = meas
    return df


def predict_cases(cases: pd.DataFrame, spec: str) -> pd.DataFrame:
    """``cases`` with the model's prediction, its bound and the error of each row."""
    from simcim.gpu import count, load_spec, predict

    gpu = load_spec(spec)
    rows = []
    for i, r in cases.iterrows():
        try:
            p = predict(count(r["counter"], **r["args"]), gpu)
        except (TypeError, ValueError) as e:
            raise ValueError(f"case {i + 1} ({r['counter']} {r['args']}): {e}") from None
        call = f"{r['counter']}({', '.join(f'{k}={v}' for k, v in r['args'].items())})"
        rows.append({"kernel": r["counter"], "call": call, "impl": r["impl"], "bound": p.bound,
                     "pred_us": p.time_s * 1e6, "meas_us": float(r["meas_us"]), "source": r["source"]})
    t = pd.DataFrame(rows)
    t["err_pct"] = 100 * (t["pred_us"] - t["meas_us"]) / t["meas_us"]
    return t


def report(t: pd.DataFrame, spec: str) -> str:
    lines = [f"GPU spec: {spec}. {len(t)} benchmark medians.", ""]
    lines += markdown_table(t, ["call", "impl", "bound", "pred_us", "meas_us", "err_pct"])
    lines += ["", f"MAPE over {len(t)}: **{mape(t['pred_us'], t['meas_us']):.1f}%**"]
    for kernel, g in t.groupby("kernel", sort=False):
        lines.append(f"- {kernel}: {mape(g['pred_us'], g['meas_us']):.1f}% over {len(g)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simcim.validation.bench_cases", description=__doc__.split("\n")[0])
    ap.add_argument("cases", type=Path, help="CSV of benchmark medians (docs/data/bench_*.csv)")
    ap.add_argument("--spec", default="h200", help="GPU spec: a bundled name or a .toml file (default h200)")
    ap.add_argument("--csv", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    try:
        t = predict_cases(load_cases(args.cases), args.spec)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(t, args.spec))
    if args.csv:
        t.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
