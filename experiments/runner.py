"""Run trials serially or on Dask, storing each as soon as it finishes, skipping stored ones.

Resumability comes from the store: a trial is done exactly when its file exists with status
"ok"; the file is renamed into place atomically by the process that ran the trial. A run
killed at any moment (kill -9 included) loses at most the trials that were in flight, and a
re-run computes only what is not stored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from simcim.experiments.config import ExperimentConfig, Trial
from simcim.experiments.kinds import TrialContext, kind_module
from simcim.experiments.store import make_record, remove_stale_temp_files, stored_status, trial_path, write_record

THREADS_ENV = "SIMCIM_TORCH_THREADS"


@dataclasses.dataclass
class RunSummary:
    run_dir: Path
    total: int
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def line(self) -> str:
        return (f"{self.total} trials: {self.skipped} already stored, {self.ok} ran ok, {self.failed} failed"
                f" -> {self.run_dir}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def execute_trial(trial: Trial, run_dir: str | Path) -> dict[str, Any]:
    """Run one trial and store its result (ok or failed). Runs in the worker process."""
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    run_dir = Path(run_dir)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    t0 = time.perf_counter()
    try:
        module = kind_module(trial.kind)
        metrics = module.run_trial(trial.params, trial.seed, TrialContext(run_dir, trial.id))
        if not isinstance(metrics, dict):
            raise TypeError(f"run_trial of kind {trial.kind!r} returned {type(metrics).__name__}, not a dict")
        status, error = "ok", None
    except Exception as exc:  # a failing trial is recorded and does not stop the others
        metrics, status, error = None, "failed", _one_line(exc)
        err_dir = run_dir / "errors"
        err_dir.mkdir(parents=True, exist_ok=True)
        (err_dir / f"{trial.id}.txt").write_text(traceback.format_exc())
    wall = time.perf_counter() - t0
    record = make_record(trial, status=status, metrics=metrics, error=error, wall_time_s=wall, started_at=started)
    write_record(run_dir, record)
    return {"trial_id": trial.id, "status": status, "error": error, "wall_time_s": wall}


def stored_status_of(run_dir: Path, tid: str) -> str | None:
    import pyarrow.parquet as pq

    path = trial_path(run_dir, tid)
    try:
        return pq.read_table(path, columns=["status"]).column("status")[0].as_py()
    except (OSError, KeyError, IndexError):
        return None


def write_run_manifest(config: ExperimentConfig, run_dir: Path, sweep: bool) -> None:
    """What the report needs to know about the run: name, kind, swept keys, report spec."""
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": config.name,
        "kind": config.kind,
        "description": config.description,
        "source": config.source,
        "swept": list(config.swept) if sweep else [],
        "seeds": list(config.seeds),
        "report": dataclasses.asdict(config.report),
    }
    tmp = run_dir / ".experiment.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, run_dir / "experiment.json")
    src = Path(config.source)
    if src.is_file():
        (run_dir / "config.toml").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")


def run_trials(trials: Sequence[Trial], run_dir: str | Path, *, workers: int = 0, scheduler: str | None = None,
               progress: bool = True, description: str = "trials") -> RunSummary:
    """Run every trial not already stored in ``run_dir``; serial, on a LocalCluster, or on ``scheduler``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(run_dir)
    stored = stored_status(run_dir)
    todo = [t for t in trials if stored.get(t.id) != "ok"]
    summary = RunSummary(run_dir=run_dir, total=len(trials), skipped=len(trials) - len(todo))
    if not todo:
        return summary
    bar = tqdm(total=len(todo), desc=description, unit="trial", disable=not progress, dynamic_ncols=True)

    def account(res: dict[str, Any]) -> None:
        if res["status"] == "ok":
            summary.ok += 1
        else:
            summary.failed += 1
            summary.errors[res["trial_id"]] = res["error"]
        bar.set_postfix(failed=summary.failed, refresh=False)
        bar.update(1)

    try:
        if workers <= 0 and scheduler is None:
            for t in todo:
                account(execute_trial(t, run_dir))
        else:
            _run_dask(todo, run_dir, workers, scheduler, account)
    finally:
        bar.close()
    return summary


def _run_dask(todo: Sequence[Trial], run_dir: Path, workers: int, scheduler: str | None, account) -> None:
    from dask.distributed import Client, LocalCluster, as_completed
    from distributed.client import FutureCancelledError

    cluster = None
    if scheduler is None:
        cores = os.cpu_count() or 1
        # each worker is one process with one task at a time; torch inside it gets its share of cores
        os.environ.setdefault(THREADS_ENV, str(max(1, cores // workers)))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(scheduler, timeout="20s")
    try:
        futures = {client.submit(execute_trial, t, str(run_dir), key=f"trial-{t.id}", pure=False): t for t in todo}
        for fut in as_completed(futures):
            t = futures[fut]
            try:
                account(fut.result())
            except (Exception, FutureCancelledError) as exc:  # e.g. KilledWorker: the trial's worker died
                if stored_status_of(run_dir, t.id) == "ok":  # it finished before its worker went away
                    account({"trial_id": t.id, "status": "ok", "error": None})
                    continue
                err = _one_line(exc)
                record = make_record(t, status="failed", metrics=None, error=err, wall_time_s=0.0,
                                     started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"))
                write_record(run_dir, record)
                account({"trial_id": t.id, "status": "failed", "error": err})
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
