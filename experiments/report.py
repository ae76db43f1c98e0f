"""Markdown reports of a run: mean ± std over seeds per configuration, and plots.

The table groups trials by every parameter that varies across the run (the swept ones),
aggregates each numeric metric over seeds, and lists failed trials. Each plot shows one
metric against the x parameter, one line per value of the ``lines`` parameter, with the
standard deviation over seeds as error bars.
"""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from simcim.experiments.store import IDENTITY_COLUMNS, load


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts with the same keys) as a CSV file with a header, creating its folder."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


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


def _mean_std(mean: float, std: float, n: int) -> str:
    # one seed has no spread to show: "± 0" would claim a spread of zero
    if n < 2:
        return _fmt(mean)
    if abs(std) <= 1e-9 * abs(mean):  # summation round-off of identical values, not a spread
        std = 0.0
    return f"{_fmt(mean)} ± {_fmt(std)}"


def markdown_table(summary: pd.DataFrame, group_by: list[str], metrics: list[str]) -> str:
    header = group_by + ["n"] + metrics
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in summary.iterrows():
        cells = [_fmt(r[c]) for c in group_by] + [str(int(r["n"]))]
        cells += [_mean_std(r[f"{m}_mean"], r[f"{m}_std"], int(r["n"])) for m in metrics]
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


MAX_SERIES_PER_PLOT = 8  # more lines than this in one panel and a legend stops being readable


@dataclasses.dataclass(frozen=True)
class AxisText:
    """What a report says about its parameters and metrics: labels with meaning and unit."""

    param_help: dict[str, str] = dataclasses.field(default_factory=dict)
    metric_help: dict[str, str] = dataclasses.field(default_factory=dict)
    seed_noun: str = "seed"

    @classmethod
    def of_kind(cls, kind: str | None) -> AxisText:
        """Help text from the kind's ``Params`` fields, its optional ``METRIC_HELP`` and ``SEED_NOUN``."""
        if not kind:
            return cls()
        try:
            from simcim.experiments.kinds import kind_module

            module = kind_module(kind)
        except Exception:  # a report of a kind not importable here still renders, with bare names
            return cls()
        helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(module.Params)}
        return cls({k: v for k, v in helps.items() if v}, dict(getattr(module, "METRIC_HELP", {})),
                   getattr(module, "SEED_NOUN", "seed"))

    @staticmethod
    def _label(name: str, text: str) -> str:
        if not text:
            return name
        return textwrap.fill(f"{name}: {text.rstrip('.')}", width=56, max_lines=3, placeholder=" ...")

    def param(self, name: str) -> str:
        return self._label(name, self.param_help.get(name, ""))

    def metric(self, name: str) -> str:
        return self._label(name, self.metric_help.get(name, ""))


def _series_label(params: list[str], key: tuple) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in zip(params, key))


def plot_metric(summary: pd.DataFrame, x: str, lines: list[str], metric: str, path: Path, logx: bool,
                title: str, text: AxisText | None = None) -> int:
    """``metric`` against ``x``; one line per combination of the ``lines`` parameters.

    When that makes more than ``MAX_SERIES_PER_PLOT`` lines, the first ``lines`` parameter stays
    as the lines and the others become a grid of panels (facets) sharing the y axis. A
    non-numeric ``x`` is plotted at evenly spaced, labelled positions. Returns the number of panels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = text or AxisText()
    n_series = int(summary[lines].drop_duplicates().shape[0]) if lines else 1
    series, facets = (lines[:1], lines[1:]) if n_series > MAX_SERIES_PER_PLOT else (lines, [])
    panels = list(summary.groupby(facets, sort=True)) if facets else [((), summary)]
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1.5, 3.2 * nrows + 0.8), dpi=110,
                             sharey=True, squeeze=False)
    numeric_x = bool(pd.to_numeric(summary[x], errors="coerce").notna().all())
    categories = [] if numeric_x else list(dict.fromkeys(summary[x].map(_fmt)))
    max_n = int(summary["n"].max())
    handles: dict[str, Any] = {}
    for ax, (fkey, panel) in zip(axes.flat, panels):
        groups = list(panel.groupby(series, sort=True)) if series else [((), panel)]
        for i, (key, g) in enumerate(groups):
            key = key if isinstance(key, tuple) else (key,)
            g = g.sort_values(x)
            if numeric_x:
                xs, style = pd.to_numeric(g[x]), "-"
            else:  # categories: no line between unrelated cases, series side by side at each
                dodge = (i - (len(groups) - 1) / 2) * 0.6 / max(len(groups), 1)
                xs, style = g[x].map(_fmt).map(categories.index) + dodge, "none"
            yerr = g[f"{metric}_std"].where(g["n"] > 1) if max_n > 1 else None
            # the legend's title names a single lines parameter, so its entries are the values alone
            label = _fmt(key[0]) if len(series) == 1 else _series_label(series, key)
            h = ax.errorbar(xs, g[f"{metric}_mean"], yerr=yerr, marker="o", capsize=3, linestyle=style,
                            label=label or None)
            handles.setdefault(label, h)
        if facets:
            fkey = fkey if isinstance(fkey, tuple) else (fkey,)
            ax.set_title(_series_label(facets, fkey), fontsize=9)
        if not numeric_x:
            ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
        else:
            if logx:
                ax.set_xscale("log")
            ticks = sorted(pd.to_numeric(summary[x]).unique())
            if len(ticks) <= 8:  # a few swept values: tick exactly those, not matplotlib's round numbers
                ax.set_xticks(ticks, [_fmt(float(t)) for t in ticks], rotation=30 if len(ticks) > 6 else 0,
                              fontsize=8)
                ax.minorticks_off()
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel(text.param(x), fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel(text.metric(metric), fontsize=9)
    note = (f"error bars: ±1 standard deviation over the {text.seed_noun}s of each point (up to {max_n})"
            if max_n > 1 else f"one {text.seed_noun} a point: no error bars")
    fig.suptitle(f"{title}\n{note}", fontsize=10)
    if series and any(handles):
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
                   fontsize=8, title=", ".join(series), title_fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return len(panels)


def series_params(df: pd.DataFrame, x: str | None, lines: str | None, group_by: list[str]) -> list[str]:
    """The parameters whose values make a plot's separate lines (or panels).

    The [report] ``lines`` parameter first, then every other varying parameter, so no line mixes
    settings; a parameter paired with x (one value at each x, as a [sweep.zip] makes) is part of
    what x names, not a setting of its own.
    """
    def paired_with_x(c: str) -> bool:
        per_x = df.groupby(df[x].map(_hashable))[c].agg(lambda v: v.map(_hashable).nunique(dropna=False))
        return bool((per_x <= 1).all())

    out = [c for c in [lines] + group_by
           if c and c != x and c in group_by and (c == lines or x is None or not paired_with_x(c))]
    return list(dict.fromkeys(out))


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
    line_params = series_params(df, x, spec.get("lines"), group_by)
    out = [f"# {manifest.get('name', run_dir.name)}", ""]
    if manifest.get("description"):
        out += [manifest["description"], ""]
    text = AxisText.of_kind(manifest.get("kind"))
    seeds = sorted(df["seed"].unique().tolist())
    spread = (f"Mean ± standard deviation over the {text.seed_noun}s (seeds) of each row (n)."
              if int(summary["n"].max()) > 1 else f"One {text.seed_noun} (seed) a row: values, no spread.")
    out += [f"Kind `{manifest.get('kind')}`; {len(df)} successful trials, {len(failed)} failed; "
            f"seeds {seeds}; simcim {df['simcim_version'].iloc[0]}, "
            f"commit {df['git_commit'].iloc[0]}.", "", spread, "", table, ""]
    described = [c for c in group_by if c in text.param_help]
    if described:
        out += ["Parameters: " + "; ".join(f"`{c}`: {text.param_help[c]}" for c in described), ""]
    if x is not None:
        for m in shown:
            png = run_dir / f"plot_{m}.png"
            plot_metric(summary, x, line_params, m, png,
                        bool(spec.get("logx")), f"{manifest.get('name', '')}: {m}", text)
            out += [f"![{m} vs {x}]({png.name})", ""]
    if not failed.empty:
        out += ["## Failed trials", "", "| trial | seed | error |", "|---|---|---|"]
        for _, r in failed.iterrows():
            out.append(f"| {r['trial_id']} | {r['seed']} | {str(r['error']).replace('|', '/')} |")
        out.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(out), encoding="utf-8")
    return path, table
