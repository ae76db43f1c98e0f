"""The results store: one Parquet file per finished trial, in ``RUN_DIR/trials/``.

Why Parquet files and not DuckDB: a trial's result is stored by the sweep's client as soon as it
arrives (workers on other hosts send it back). One small file per trial, written to a temporary
name, fsynced and atomically renamed, needs no lock, no server and no database, and a
kill at any moment leaves either the whole file or none. A store of thousands of trials loads
with pyarrow in well under a second, and DuckDB can still query the folder directly
(``SELECT * FROM 'RUN_DIR/trials/*.parquet'``).

A trial file holds one row: identity (trial_id, kind, seed, status, error), provenance
(wall_time_s, started_at, simcim_version, git_commit, host), the canonical config as JSON,
each parameter as its own column and each metric as its own column. Failed trials are stored
too (status "failed", the error text), so they are visible; re-running retries them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from simcim.experiments.config import Trial, _jsonable

TRIALS_DIR = "trials"
ARTIFACTS_DIR = "artifacts"
IDENTITY_COLUMNS = ("trial_id", "kind", "seed", "status", "error", "wall_time_s", "started_at",
                    "simcim_version", "git_commit", "host", "config_json")


@lru_cache(maxsize=1)
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("simcim")
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the simcim source tree, with '+dirty' when it has uncommitted changes."""
    src = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def trial_path(run_dir: Path, tid: str) -> Path:
    return Path(run_dir) / TRIALS_DIR / f"{tid}.parquet"


def _cell(value: Any) -> Any:
    value = _jsonable(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def make_record(trial: Trial, *, status: str, metrics: dict[str, Any] | None, error: str | None,
                wall_time_s: float, started_at: str) -> dict[str, Any]:
    params = _jsonable(trial.params)
    rec: dict[str, Any] = {
        "trial_id": trial.id,
        "kind": trial.kind,
        "seed": trial.seed,
        "status": status,
        "error": error,
        "wall_time_s": wall_time_s,
        "started_at": started_at,
        "simcim_version": package_version(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "config_json": json.dumps(trial.canonical(), sort_keys=True),
    }
    for key, value in params.items():
        if key in rec:
            raise ValueError(f"parameter name {key!r} collides with a store column")
        rec[key] = _cell(value)
    for key, value in (metrics or {}).items():
        if key in rec:
            raise ValueError(f"metric {key!r} collides with a parameter or store column of the same name")
        rec[key] = _cell(value)
    return rec


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write one trial row atomically (temp file, fsync, rename). Returns the final path."""
    final = trial_path(run_dir, record["trial_id"])
    final.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([record])
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(record["trial_id"]), suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)
    return final


def write_artifacts(run_dir: Path, tid: str, files: dict[str, bytes]) -> Path:
    """Put a trial's artifact files (relative path -> content) in ``RUN_DIR/artifacts/TRIAL/`` at once.

    They are written into a temp folder that is renamed into place, replacing what an earlier attempt
    of the trial left; the trial's record, written after them, is what marks them complete.
    """
    final = Path(run_dir) / ARTIFACTS_DIR / tid
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f"{_temp_prefix(tid)}{secrets.token_hex(4)}.tmp"
    tmp.mkdir()  # unlike mkdtemp's 0700, the folder gets the umask's permissions, as the run folder does
    try:
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final.parent)
    return final


def _temp_prefix(tid: str) -> str:
    # host and pid in the name let a later sweep tell a dead writer's leftover from a live write
    return f".{tid}.{_host_tag()}.{os.getpid()}."


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _host_tag() -> str:
    return socket.gethostname().replace(".", "_") or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a killed worker whose orphan nobody reaps (a container's PID 1 that does not wait) stays a zombie
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    return True


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files (and artifact temp folders) that writers on this host left when killed.

    A SIGKILL between mkstemp and the rename leaves ``.TRIAL.HOST.PID.XXXX.tmp`` behind; it is
    never read as a result, but it would pile up over resumed sweeps. Only files whose writer ran
    on this host and is no longer alive are removed: another host's in-flight write is left alone.
    """
    removed: list[Path] = []
    host = _host_tag()
    for f in (*Path(run_dir).glob(f"{TRIALS_DIR}/.*.tmp"), *Path(run_dir).glob(f"{ARTIFACTS_DIR}/.*.tmp")):
        parts = f.name[1:].split(".")
        if len(parts) < 5 or parts[1] != host or not parts[2].isdigit():
            continue
        if _pid_alive(int(parts[2])):  # this process and live writers keep theirs
            continue
        with contextlib.suppress(FileNotFoundError):
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()
            removed.append(f)
    return removed


DAMAGED = "damaged"


class DamagedTrialWarning(UserWarning):
    """A trial file in the store cannot be read (truncated or corrupted); its trial is not loaded."""


def _read_trial(path: Path, columns: list[str] | None = None) -> pa.Table:
    table = pq.read_table(path, columns=columns)
    if table.num_rows != 1:
        raise pa.ArrowInvalid(f"expected one row, found {table.num_rows}")
    return table


def stored_status(run_dir: Path) -> dict[str, str]:
    """trial_id -> status for every trial file in the store; ``DAMAGED`` for one that cannot be read.

    A damaged trial is not "ok", so a resumed sweep recomputes it (and overwrites the file).
    """
    out = {}
    folder = Path(run_dir) / TRIALS_DIR
    if not folder.is_dir():
        return out
    for f in folder.glob("*.parquet"):
        try:
            status = _read_trial(f, columns=["status"]).column("status")[0].as_py()
        except (OSError, pa.ArrowException, KeyError, IndexError):
            status = DAMAGED
        out[f.stem] = status
    return out


def damaged_trial_files(run_dir: Path) -> list[Path]:
    """The trial files of a run that cannot be read."""
    return sorted(trial_path(run_dir, tid) for tid, status in stored_status(run_dir).items() if status == DAMAGED)


def load(run_dir: str | Path, *, include_failed: bool = False) -> pd.DataFrame:
    """All stored trials of a run as one DataFrame (one row per trial)."""
    folder = Path(run_dir) / TRIALS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{run_dir}: no results store here (expected a {TRIALS_DIR}/ folder)")
    tables = []
    for f in sorted(folder.glob("*.parquet")):
        try:
            tables.append(_read_trial(f))
        except (OSError, pa.ArrowException) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            warnings.warn(f"{f}: damaged trial file left out ({reason}); re-running the sweep recomputes it",
                          DamagedTrialWarning, stacklevel=2)
    if not tables:
        return pd.DataFrame(columns=list(IDENTITY_COLUMNS))
    table = pa.concat_tables(tables, promote_options="permissive")
    df = table.to_pandas()
    if not include_failed:
        df = df[df["status"] == "ok"]
    return df.sort_values(["started_at", "trial_id"]).reset_index(drop=True)
