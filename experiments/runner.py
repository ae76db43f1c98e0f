"""Run trials serially or on Dask, storing each as soon as it finishes, skipping stored ones.

Resumability comes from the store: a trial is done exactly when its file exists with status
"ok". Workers never write into the run folder, so they need not see it (no shared filesystem):
a worker runs the trial with a scratch folder for its artifacts and sends back the record, the
artifact files and any traceback; this process (the client) writes them, artifacts first and the
record last, each atomically (temp name, fsync, rename). One writer makes "stored once" hold by
construction. A run killed at any moment (kill -9 included) loses at most the trials that were in
flight, and a re-run computes only what is not stored. A trial whose worker dies is retried by
Dask on another worker and recorded as failed when workers keep dying under it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from simcim.experiments.cluster import THREADS_ENV, ClusterChoice, dask_client
from simcim.experiments.config import ExperimentConfig, Trial
from simcim.experiments.kinds import TrialContext, kind_module
from simcim.experiments.store import (
    make_record,
    remove_stale_temp_files,
    stored_status,
    write_artifacts,
    write_record,
)


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


@dataclasses.dataclass
class TrialOutcome:
    """What a worker sends back for one trial: everything the client stores."""

    record: dict[str, Any]
    artifacts: dict[str, bytes]  # path relative to the trial's artifact folder -> content
    traceback: str | None = None

    @property
    def summary(self) -> dict[str, Any]:
        rec = self.record
        return {"trial_id": rec["trial_id"], "status": rec["status"], "error": rec["error"],
                "wall_time_s": rec["wall_time_s"]}


@dataclasses.dataclass(frozen=True)
class ScratchContext(TrialContext):
    """The worker's view of a trial: artifacts go to a local scratch folder, not into the run folder."""

    scratch: Path = Path()

    @property
    def artifact_dir(self) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        return self.scratch


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _scratch_root() -> str | None:
    """The Dask worker's own folder when running on one (removed with the worker), else the temp folder."""
    if "distributed" in sys.modules:
        from distributed import get_worker

        try:
            return get_worker().local_directory
        except ValueError:  # not inside a worker
            return None
    return None


def _read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def compute_trial(trial: Trial, run_dir: str | Path) -> TrialOutcome:
    """Run one trial and return its outcome (ok or failed) without storing it. Runs on the worker.

    ``run_dir`` is the client's run folder, passed on as ``TrialContext.run_dir`` for reference; the
    trial's artifacts are collected from a scratch folder on the worker.
    """
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    scratch = Path(tempfile.mkdtemp(prefix=f"simcim-{trial.id}-", dir=_scratch_root()))
    started = _now()
    t0 = time.perf_counter()
    tb = None
    try:
        ctx = ScratchContext(Path(run_dir), trial.id, scratch / "artifacts")
        try:
            module = kind_module(trial.kind)
            metrics = module.run_trial(trial.params, trial.seed, ctx)
            if not isinstance(metrics, dict):
                raise TypeError(f"run_trial of kind {trial.kind!r} returned {type(metrics).__name__}, not a dict")
            status, error = "ok", None
        except Exception as exc:  # a failing trial is recorded and does not stop the others
            metrics, status, error, tb = None, "failed", _one_line(exc), traceback.format_exc()
        wall = time.perf_counter() - t0
        artifacts = _read_tree(ctx.scratch) if ctx.scratch.is_dir() else {}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = make_record(trial, status=status, metrics=metrics, error=error, wall_time_s=wall, started_at=started)
    return TrialOutcome(record, artifacts, tb)


def store_outcome(run_dir: Path, outcome: TrialOutcome) -> dict[str, Any]:
    """Write a trial's artifacts, traceback and record into the run folder; the record goes last."""
    tid = outcome.record["trial_id"]
    if outcome.artifacts:
        write_artifacts(run_dir, tid, outcome.artifacts)
    if outcome.traceback is not None:
        err_dir = run_dir / "errors"
        err_dir.mkdir(parents=True, exist_ok=True)
        tmp = err_dir / f".{tid}.{os.getpid()}.txt.tmp"
        tmp.write_text(outcome.traceback)
        os.replace(tmp, err_dir / f"{tid}.txt")
    write_record(run_dir, outcome.record)
    return outcome.summary


def execute_trial(trial: Trial, run_dir: str | Path) -> dict[str, Any]:
    """Run one trial here and store it in ``run_dir``."""
    return store_outcome(Path(run_dir), compute_trial(trial, Path(run_dir).absolute()))


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
               client: Any = None, progress: bool = True, description: str = "trials") -> RunSummary:
    """Run every trial not already stored in ``run_dir``: on ``client`` (a connected Dask client) when
    given, else serially, on a local cluster of ``workers`` processes, or on ``scheduler``."""
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
        if client is not None:
            _run_dask(client, todo, run_dir, account)
        else:
            with dask_client(ClusterChoice(workers=workers, scheduler=scheduler)) as own:
                if own is None:
                    for t in todo:
                        account(execute_trial(t, run_dir))
                else:
                    _run_dask(own, todo, run_dir, account)
    finally:
        bar.close()
    return summary


def _run_dask(client: Any, todo: Sequence[Trial], run_dir: Path,
              account: Callable[[dict[str, Any]], None]) -> None:
    from dask.distributed import as_completed

    where = str(run_dir.absolute())
    futures = {client.submit(compute_trial, t, where, key=f"trial-{t.id}", pure=False): t for t in todo}
    for fut in as_completed(futures):
        t = futures.pop(fut)
        try:
            outcome = fut.result()
        except Exception as exc:  # KilledWorker (workers kept dying under it), a cancelled future, ...
            record = make_record(t, status="failed", metrics=None, error=_one_line(exc), wall_time_s=0.0,
                                 started_at=_now())
            outcome = TrialOutcome(record, {})
        fut.release()  # the worker may drop the result now that it is stored here
        account(store_outcome(run_dir, outcome))
