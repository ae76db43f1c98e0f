"""The ``simcim`` command line: run, sweep, report, quickstart, info."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
import typing
from pathlib import Path

from simcim.experiments.config import ConfigError, _type_name, load_config, parse_override

RESULTS_ENV = "SIMCIM_RESULTS"
LARGE_SWEEP = 10_000  # from this many trials on, the CLI warns and shows the expansion's progress


def results_root() -> Path:
    return Path(os.environ.get(RESULTS_ENV, "results"))


def bundled_config(name: str) -> Path:
    return Path(__file__).resolve().parent / "configs" / name


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="run folder (default: $SIMCIM_RESULTS or ./results, then the "
                                            "experiment name)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override a config value, e.g. --set params.level=0.05 (VALUE in TOML syntax)")
    p.add_argument("--model", help="shortcut for --set params.model=PATH: a local Hugging Face checkpoint folder")
    par = p.add_mutually_exclusive_group()
    par.add_argument("--workers", type=int, default=0, metavar="N",
                     help="run trials in parallel on a local Dask cluster of N worker processes")
    par.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run trials on an existing Dask cluster")
    par.add_argument("--gpus", metavar="N|all", help="run trials on a local Dask cluster of one worker per GPU, "
                                                     "each pinned to its own GPU (device = 'auto' uses it)")
    par.add_argument("--cluster", type=Path, metavar="FILE", help="run trials on Slurm jobs described by FILE's "
                                                                  "[slurm] table (docs/sweeps.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load(args: argparse.Namespace, config: Path):
    overrides = dict(parse_override(o) for o in args.overrides)
    if args.model:
        overrides["params.model"] = args.model
    return load_config(config, overrides)


def _run(args: argparse.Namespace, config: Path, sweep: bool) -> int:
    from simcim.experiments.cluster import choose, dask_client
    from simcim.experiments.runner import run_trials, write_run_manifest
    from simcim.experiments.store import damaged_trial_files

    cfg = _load(args, config)
    if args.workers < 0:
        raise ConfigError(f"--workers: expected N >= 1, got {args.workers}")
    for key in cfg.replaced_axes if sweep else ():
        print(f"simcim: --set params.{key} fixes {key}: it replaces that sweep axis", file=sys.stderr)
    count = cfg.count(sweep=sweep)
    large = count >= LARGE_SWEEP
    if large:
        print(f"simcim: warning: {config} expands to {count:,} trials; checking and hashing them first",
              file=sys.stderr, flush=True)
    trials = cfg.trials(sweep=sweep, progress=large and not args.no_progress)
    run_dir = args.out or results_root() / cfg.name
    for path in damaged_trial_files(run_dir):
        print(f"simcim: warning: {path} is damaged (unreadable); its trial is recomputed", file=sys.stderr)
    choice = choose(workers=args.workers, scheduler=args.scheduler, gpus=args.gpus, cluster_file=args.cluster)
    with dask_client(choice) as client:  # reached before the run folder is touched
        write_run_manifest(cfg, run_dir, sweep)
        t0 = time.perf_counter()
        summary = run_trials(trials, run_dir, client=client, progress=not args.no_progress, description=cfg.name)
    print(summary.line() + f" in {time.perf_counter() - t0:.1f}s")
    for tid, err in list(summary.errors.items())[:10]:
        print(f"  failed {tid}: {err}", file=sys.stderr)
    return 0 if summary.failed == 0 else 1


def cmd_run(args: argparse.Namespace) -> int:
    return _run(args, args.config, sweep=False)


def cmd_sweep(args: argparse.Namespace) -> int:
    return _run(args, args.config, sweep=True)


def cmd_report(args: argparse.Namespace) -> int:
    from simcim.experiments.report import write_report

    if not (args.run_dir / "trials").is_dir():
        raise ConfigError(f"{args.run_dir}: not a run folder (no trials/ inside)")
    try:
        path, table = write_report(args.run_dir, args.metrics or None)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    print(table)
    print(f"report: {path}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from simcim.experiments.report import write_report

    config = bundled_config("quickstart.toml")
    args.out = args.out or results_root() / "quickstart"
    t0 = time.perf_counter()
    print(f"simcim quickstart: the bundled MoE model under Gaussian weight noise on simulated crossbars "
          f"({config})", flush=True)
    rc = _run(args, config, sweep=True)
    try:
        path, table = write_report(args.out)
    except ValueError as e:  # nothing to report: every trial failed
        print(f"simcim: error: quickstart has no result to report ({e}); the trials' errors are in "
              f"{args.out / 'errors'}", file=sys.stderr)
        return rc or 1
    print(table)
    print(f"report: {path}  ({time.perf_counter() - t0:.0f}s in all)")
    return rc


def cmd_info(args: argparse.Namespace) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from simcim.experiments.kinds import KINDS, kind_module

    if args.kind:
        module = kind_module(args.kind, where="--kind")
        hints = typing.get_type_hints(module.Params)
        print(f"parameters of kind {args.kind!r} ([params] table):")
        for f in dataclasses.fields(module.Params):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
            print(f"  {f.name} = {default!r}  # {_type_name(hints[f.name])}. {f.metadata.get('help', '')}")
        return 0
    print(f"simcim {_version('simcim')}  (python {platform.python_version()}, {platform.platform()})")
    for pkg in ("torch", "transformers", "triton", "numpy", "pandas", "dask", "numba"):
        try:
            print(f"  {pkg:<13}{version(pkg)}")
        except PackageNotFoundError:
            print(f"  {pkg:<13}not installed")
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            print(f"GPU {i}: {prop.name}, {prop.total_memory / 2**30:.0f} GiB")
    else:
        print("GPU: none (CPU only; Triton kernels fall back to their PyTorch references)")
    print(f"results go to: {results_root().resolve()}  (set ${RESULTS_ENV} or --out to change)")
    print(f"experiment kinds: {', '.join(sorted(KINDS))}  (simcim info --kind NAME lists parameters)")
    from simcim.noise_models.presets import PRESETS

    print(f"noise models: {', '.join(sorted(PRESETS))}")
    print(f"bundled configs: {bundled_config('')}")
    return 0


def _version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(pkg)
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="simcim",
        description="Simulate LLMs on memristive compute-in-memory crossbars, NPU memory systems and "
                    "attention accelerators; sweep parameters; store and report results.",
        epilog="Start with `simcim quickstart`. Configs are TOML files (see experiments/configs/).")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run one config's trials (every seed), without expanding [sweep]",
                       description="Run the trials of CONFIG (one per seed; [sweep] is ignored). Stored trials "
                                   "are skipped, so an interrupted run resumes where it stopped.")
    p.add_argument("config", type=Path, help="a TOML experiment config")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="run every trial of a config's [sweep] (grid and zip) x seeds",
                       description="Expand CONFIG's [sweep] table into trials and run those not yet stored in "
                                   "the run folder. Re-running resumes; a failing trial is recorded and the "
                                   "others go on.")
    p.add_argument("config", type=Path, help="a TOML experiment config with a [sweep] table")
    _add_run_options(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="write RUN_DIR/report.md with tables and plots",
                       description="Summarize a run folder: mean ± std over seeds per configuration, one "
                                   "PNG plot per metric (metric vs the swept parameter, one line per method).")
    p.add_argument("run_dir", type=Path, help="a run folder (holding trials/)")
    p.add_argument("--metrics", nargs="+", help="metrics to show (default: the config's [report] metrics)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("quickstart", help="the bundled model under crossbar noise, 0-10%%, 3 seeds, with report",
                       description="Sweep Gaussian weight noise from 0 to 10%% on the bundled MoE model's "
                                   "crossbar-mapped weights (3 simulated chips each), print the perplexity "
                                   "table and write the report. CPU only, a few minutes.")
    _add_run_options(p)
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("info", help="versions, GPU, where results go, kinds and noise models",
                       description="Print versions, the GPU if any, the results folder, experiment kinds and "
                                   "noise-model presets; with --kind, the parameters of one kind.")
    p.add_argument("--kind", help="list the [params] of this experiment kind")
    p.set_defaults(func=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"simcim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("simcim: interrupted; finished trials are stored, re-run to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
