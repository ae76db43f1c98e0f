"""Report of a ``gpu_model_blind`` run: ``python -m simcim.validation.blind_report RUN_DIR [--repredict SPEC]``.

Writes ``RUN_DIR/gpu_model_blind.md``: for each trial its label (blind, or why not), the draw seed, the spec and the
device, the model's source hash and commit at prediction and at scoring, the error distribution (mean, median and
90th percentile of the absolute error, the largest, the share within 10% and 20%), the error by kernel, the worst
five calls with what the model thought bounds them, and every call. A ``sim_vs_measured`` run is scored the same way,
labelled as the suite's own calls (the ones the model was built on). ``--repredict SPEC`` scores the stored times
against the current model's predictions with ``SPEC`` instead: blind only if the model's source is the one that
predicted the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from simcim.experiments.store import load
from simcim.validation.blind import model_hash, predict_calls, score
from simcim.validation.report import markdown_table

COLUMNS = ("call", "kernel", "family", "pred_us", "meas_us", "bound", "terms", "notes", "error")


def trial_table(r: pd.Series) -> pd.DataFrame:
    """One row per drawn call of a stored ``gpu_model_blind`` trial."""
    t = pd.DataFrame({c: list(r[f"c_{c}"]) for c in COLUMNS})
    t["err_pct"] = 100 * (t["pred_us"] - t["meas_us"]) / t["meas_us"]
    return t


def suite_table(df: pd.DataFrame) -> pd.DataFrame:
    """The distinct kernel calls of a stored ``sim_vs_measured`` run, as :func:`trial_table` lays them out."""
    from simcim.validation.report import kernel_table

    kt = kernel_table(df)
    t = pd.DataFrame({"call": kt["model"] + " " + kt["call"], "kernel": [c.split("(")[0] for c in kt["call"]],
                      "family": kt["kernel"], "pred_us": kt["pred_us"], "meas_us": kt["meas_us"],
                      "bound": kt["bound"], "terms": "", "notes": "", "error": ""})
    t["err_pct"] = 100 * (t["pred_us"] - t["meas_us"]) / t["meas_us"]
    return t


def repredicted(run_dir: Path, trial_id: str, t: pd.DataFrame, spec: str) -> tuple[pd.DataFrame, str]:
    """``t`` with the current model's predictions on ``spec`` of the calls in the trial's predictions file."""
    from simcim.gpu.model import load_spec

    record = json.loads((run_dir / "artifacts" / trial_id / "predictions.json").read_text(encoding="utf-8"))
    calls = [(p["kernel"], p["args"]) for p in record["predictions"]]
    new = pd.DataFrame(predict_calls(calls, load_spec(spec)))
    t = t.copy()
    for c in ("pred_us", "bound", "terms", "notes"):
        t[c] = list(new[c])
    t["err_pct"] = 100 * (t["pred_us"] - t["meas_us"]) / t["meas_us"]
    now = model_hash()
    same = now == record["model_hash"]
    how = "blind (re-predicted by the model that predicted the run)" if same else "not blind: re-predicted"
    return t, f"{how}, model {now}, spec {spec}"


def section(title: str, facts: list[str], t: pd.DataFrame) -> list[str]:
    s = score(t)
    lines = [f"## {title}", ""] + [f"- {f}" for f in facts] + [""]
    if not s["n_scored"]:
        return lines + [f"Not measured: {len(t)} predictions only.", ""] + markdown_table(
            t, ["call", "bound", "pred_us", "notes"]) + [""]
    lines += [f"**{s['n_scored']} calls scored** ({s['n_unscored']} not timed): mean absolute error "
              f"**{s['mape_pct']:.1f}%**, median {s['median_ape_pct']:.1f}%, 90th percentile {s['p90_ape_pct']:.1f}%, "
              f"largest {s['max_ape_pct']:.0f}%; {s['within_10_pct']:.0f}% of the calls within 10%, "
              f"{s['within_20_pct']:.0f}% within 20%.", "", "By kernel:", ""]
    ok = t[t["meas_us"] > 0]
    for kernel, g in ok.groupby("kernel", sort=True):
        e = g["err_pct"]
        lines.append(f"- {kernel}: {e.abs().mean():.1f}% over {len(g)} (signed mean {e.mean():+.1f}%)")
    lines += ["", "Worst five:", ""] + [f"{i}. {w}" for i, w in enumerate(s["worst5"], 1)] + [""]
    failed = t[t["error"].astype(str) != ""]
    if not failed.empty:
        lines += ["Not timed:", ""] + [f"- {r['call']}: {r['error']}" for _, r in failed.iterrows()] + [""]
    rows = t.reindex(t["err_pct"].abs().sort_values(ascending=False, na_position="last").index)
    return lines + markdown_table(rows, ["call", "bound", "pred_us", "meas_us", "err_pct", "notes"]) + [""]


def write(run_dir: str | Path, spec: str | None = None) -> Path:
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "experiment.json").read_text(encoding="utf-8"))
    df = load(run_dir)
    if df.empty:
        raise ValueError(f"{run_dir}: no successful trials to report")
    lines = ["# The GPU model on held-out kernel calls", ""]
    if manifest["kind"] == "sim_vs_measured":
        facts = ["the suite's own decode-step calls: the model's terms were built on them, so **not blind**",
                 f"spec {df['gpu_spec_name'].iloc[0]}; measured on {df['measured'].iloc[0]}"]
        lines += section("sim_vs_measured", facts, suite_table(df))
    elif manifest["kind"] == "gpu_model_blind":
        for _, r in df.iterrows():
            t, lab = trial_table(r), r["label"]
            if spec:
                t, lab = repredicted(run_dir, r["trial_id"], t, spec)
            facts = [f"**{lab}**", f"draw seed {r['seed_drawn']}, {len(t)} calls",
                     f"spec {r['gpu_spec_name']} (sha256 {r['spec_sha256']}): {r['spec_measured']}",
                     f"measured on {r['device']}",
                     f"model source {r['model_hash_predicted']} at prediction (commit {r['git_commit_predicted']}, "
                     f"{r['predicted_at']}), {r['model_hash_scored']} at scoring (commit {r['git_commit_scored']}); "
                     f"first time taken {r['first_measured_at'] or '-'}"]
            lines += section(f"Trial {r['trial_id']}", facts, t)
    else:
        raise ValueError(f"{run_dir}: a {manifest['kind']!r} run, not gpu_model_blind or sim_vs_measured")
    path = run_dir / "gpu_model_blind.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simcim.validation.blind_report", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repredict", metavar="SPEC", help="score the current model's predictions with this GPU spec "
                                                         "(bundled name or .toml) against the stored times")
    args = ap.parse_args(argv)
    try:
        path = write(args.run_dir, args.repredict)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
