"""Markdown reports of a run: mean ± std over seeds per configuration, and plots.

The table groups trials by every parameter that varies across the run (the swept ones),
aggregates each numeric metric over seeds, and lists failed trials. Each plot shows one
metric against the x parameter, one line per value of the ``lines`` parameter, with the
standard deviation over seeds as error bars.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from simcim.experiments.store import IDENTITY_COLUMNS, load


def _manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "experiment.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"name": run_dir.name, "kind": None, "swept": [], "report": {}}


def _param_columns(df: pd.DataFrame) -> list[str]:
    if df.empty:
        return []
    params = json.loads(df["config_json"].iloc[0])["params"]
    return [c for c in params if c in df.columns]


def _hashable(v: Any) -> Any:
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        return json.dumps(list(v.tolist() if hasattr(v, "tolist") else v))
    return v


def summarize(df: pd.DataFrame, group_by: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per configuration: n seeds, and mean and std of each metric."""
    work = df.copy()
    for c in group_by:
        work[c] = work[c].map(_hashable)
    rows = []
    groups = work.groupby(group_by, dropna=False, sort=True) if group_by else [((), work)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(group_by, key))
        row["n"] = len(g)
        for m in metrics:
            vals = pd.to_numeric(g[m], errors="coerce")
            row[f"{m}_mean"] = float(vals.mean())
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.4g}"
    return str(x)


def markdown_table(summary: pd.DataFrame, group_by: list[str], metrics: list[str]) -> str:
    header = group_by + ["n"] + metrics
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in summary.iterrows():
        cells = [_fmt(r[c]) for c in group_by] + [str(int(r["n"]))]
        cells += [f"{_fmt(r[f'{m}_mean'])} ± {_fmt(r[f'{m}_std'])}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def numeric_metrics(df: pd.DataFrame) -> list[str]:
    params = set(_param_columns(df))
    out = []
    for c in df.columns:
        if c in IDENTITY_COLUMNS or c in params:
            continue
        if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            out.append(c)
    return out


def plot_metric(summary: pd.DataFrame, x: str, lines: list[str], metric: str, path: Path, logx: bool,
                title: str) -> None:
    """``metric`` against ``x``; one line per combination of the ``lines`` parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    groups = summary.groupby(lines, sort=True) if lines else [((), summary)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v}" for k, v in zip(lines, key)) or None
        g = g.sort_values(x)
        ax.errorbar(pd.to_numeric(g[x], errors="coerce"), g[f"{metric}_mean"], yerr=g[f"{metric}_std"],
                    marker="o", capsize=3, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(run_dir: str | Path, metrics: list[str] | None = None) -> tuple[Path, str]:
    """Write ``RUN_DIR/report.md`` and its PNG plots; return the path and the main table."""
    run_dir = Path(run_dir)
    manifest = _manifest(run_dir)
    everything = load(run_dir, include_failed=True)
    df = everything[everything["status"] == "ok"]
    failed = everything[everything["status"] != "ok"]
    if df.empty:
        raise ValueError(f"{run_dir}: no successful trials to report ({len(failed)} failed)")
    spec = manifest.get("report") or {}
    params = _param_columns(df)
    varying = [c for c in params if df[c].map(_hashable).nunique(dropna=False) > 1]
    swept = [c for c in manifest.get("swept", []) if c in params]
    group_by = list(dict.fromkeys(swept + varying))
    all_metrics = numeric_metrics(df)
    wanted = metrics or list(spec.get("metrics") or [])
    for m in wanted:
        if m not in all_metrics:
            raise ValueError(f"metric {m!r} is not a numeric metric of this run (known: {', '.join(all_metrics)})")
    shown = wanted or all_metrics[:4]
    summary = summarize(df, group_by, shown)
    table = markdown_table(summary, group_by, shown)

    x = spec.get("x") or next((c for c in group_by if pd.api.types.is_numeric_dtype(df[c])), None)
    # the [report] lines parameter first, then every other varying parameter, so no line mixes settings
    line_params = [c for c in [spec.get("lines")] + group_by if c and c != x and c in group_by]
    line_params = list(dict.fromkeys(line_params))
    out = [f"# {manifest.get('name', run_dir.name)}", ""]
    if manifest.get("description"):
        out += [manifest["description"], ""]
    out += [f"Kind `{manifest.get('kind')}`; {len(df)} successful trials, {len(failed)} failed; "
            f"seeds {sorted(df['seed'].unique().tolist())}; simcim {df['simcim_version'].iloc[0]}, "
            f"commit {df['git_commit'].iloc[0]}.", "", "Mean ± standard deviation over seeds.", "", table, ""]
    if x is not None:
        for m in shown:
            png = run_dir / f"plot_{m}.png"
            plot_metric(summary, x, line_params, m, png,
                        bool(spec.get("logx")), f"{manifest.get('name', '')}: {m}")
            out += [f"![{m} vs {x}]({png.name})", ""]
    if not failed.empty:
        out += ["## Failed trials", "", "| trial | seed | error |", "|---|---|---|"]
        for _, r in failed.iterrows():
            out.append(f"| {r['trial_id']} | {r['seed']} | {str(r['error']).replace('|', '/')} |")
        out.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(out), encoding="utf-8")
    return path, table
