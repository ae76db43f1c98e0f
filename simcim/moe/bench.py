"""Time per trial of a ``moe_noise`` run, per repair, as a ratio to the unrepaired trials.

    python -m simcim.moe.bench RUN_DIR [--csv PATH]

Reads a finished run (``simcim sweep``'s results folder), and prints per repair the number of
trials and the mean wall time per trial and of its phases (programming, ROMER's calibration,
evaluation), with the ratio of the wall time to that of ``repair = "none"`` trials of the same
run (the baseline, measured on the same machine in the same run). The first trial of a process
also loads the model and records the clean reference; it is reported apart (``first_trial_s``)
and left out of the means.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

PHASES = ("program_s", "romer_s", "unrepaired_eval_s", "eval_s")
TRIAL_COLUMNS = ("repair", "level", "seed", "wall_time_s", *PHASES, "perplexity", "unrepaired_perplexity",
                 "clean_perplexity", "load_cv", "topk_mismatch", "romer_replaced_experts")


def trial_times(run_dir: Path) -> pd.DataFrame:
    from simcim.experiments.store import load

    df = load(run_dir)
    if df.empty or "repair" not in df.columns:
        raise ValueError(f"{run_dir}: no successful moe_noise trials")
    df = df.sort_values("started_at")
    first = df.iloc[0]
    rest = df.iloc[1:] if len(df) > 1 else df
    rows = []
    for repair, g in rest.groupby("repair", sort=True):
        row = {"repair": repair, "trials": len(g), "wall_s": float(g["wall_time_s"].mean())}
        for ph in PHASES:
            if ph in g.columns:
                row[ph] = float(pd.to_numeric(g[ph], errors="coerce").mean())
        rows.append(row)
    out = pd.DataFrame(rows)
    base = out.loc[out["repair"] == "none", "wall_s"]
    out["ratio_to_none"] = out["wall_s"] / float(base.iloc[0]) if len(base) else float("nan")
    out.attrs["first_trial_s"] = float(first["wall_time_s"])
    out.attrs["device"] = str(first.get("device", "?"))
    out.attrs["model"] = str(first.get("model", "?"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--csv", type=Path, help="write the table here (default RUN_DIR/bench_times.csv)")
    ap.add_argument("--trials-csv", type=Path, help="also write one row per trial (times and main metrics)")
    args = ap.parse_args(argv)
    table = trial_times(args.run_dir)
    print(f"model {table.attrs['model']} on {table.attrs['device']}; first trial (load + clean reference) "
          f"{table.attrs['first_trial_s']:.1f}s")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    path = args.csv or args.run_dir / "bench_times.csv"
    table.to_csv(path, index=False)
    print(f"wrote {path}")
    if args.trials_csv:
        from simcim.experiments.store import load

        df = load(args.run_dir).sort_values("started_at")
        df[[c for c in TRIAL_COLUMNS if c in df.columns]].to_csv(args.trials_csv, index=False)
        print(f"wrote {args.trials_csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
