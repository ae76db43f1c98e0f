"""The runner: stores every trial at once, resumes after kill -9, records failures, Dask == serial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import simcim
from simcim.experiments.cli import main
from simcim.experiments.config import load_config
from simcim.experiments.runner import run_trials
from simcim.experiments.store import remove_stale_temp_files, stored_status, write_record

SLOW = """
[experiment]
name = "slow"
kind = "selftest"
seeds = 2

[params]
sleep_s = {sleep}
log_executions = true

[sweep]
x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""


def executions(run_dir: Path) -> list[str]:
    log = run_dir / "executions.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_serial_run_stores_and_rerun_skips(tmp_path):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(SLOW.format(sleep=0.0))
    trials = load_config(cfg_path).trials()
    s1 = run_trials(trials, tmp_path / "run", progress=False)
    assert (s1.ok, s1.skipped) == (12, 0)
    s2 = run_trials(trials, tmp_path / "run", progress=False)
    assert (s2.ok, s2.skipped) == (0, 12)
    assert sorted(executions(tmp_path / "run")) == sorted(t.id for t in trials)  # each computed once
    df = simcim.load(tmp_path / "run")
    assert len(df) == 12 and df["trial_id"].is_unique
    for col in ("seed", "wall_time_s", "simcim_version", "git_commit", "config_json", "x", "y"):
        assert col in df.columns
    assert df["y"].notna().all()


def test_failing_trial_is_recorded_and_others_go_on(tmp_path):
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text(SLOW.format(sleep=0.0).replace("log_executions = true", "fail_above = 3.5"))
    rc = main(["sweep", str(cfg_path), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 1
    everything = simcim.load(tmp_path / "run", include_failed=True)
    failed = everything[everything["status"] == "failed"]
    assert len(failed) == 4 and len(everything) == 12
    assert failed["error"].str.contains("is above fail_above").all()
    assert (tmp_path / "run" / "errors").is_dir()
    assert len(simcim.load(tmp_path / "run")) == 8


def _start_sweep(cfg: Path, out: Path, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "simcim.experiments.cli", "sweep", str(cfg), "--out", str(out), "--no-progress"]
    if workers:
        cmd += ["--workers", str(workers)]
    # its own session, so that kill -9 of the group takes the Dask scheduler and workers too
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_sweep_resumes_without_loss_or_repeat(tmp_path, workers):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SLOW.format(sleep=0.4))
    out = tmp_path / "run"
    expected = {t.id for t in load_config(cfg).trials()}
    proc = _start_sweep(cfg, out, workers)
    deadline = time.monotonic() + 120
    while len(stored_status(out)) < 3:
        assert proc.poll() is None, "sweep ended before it could be killed"
        assert time.monotonic() < deadline, "no trial stored in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and every worker process, mid-trial
    proc.wait()
    time.sleep(0.5)
    done_before = set(stored_status(out))
    assert 3 <= len(done_before) < len(expected)
    runs_before = len(executions(out))

    rc = main(["sweep", str(cfg), "--out", str(out), "--no-progress"])
    assert rc == 0
    status = stored_status(out)
    assert set(status) == expected and set(status.values()) == {"ok"}  # nothing lost
    rerun = executions(out)[runs_before:]
    assert not set(rerun) & done_before  # nothing stored before the kill was computed again
    assert sorted(rerun) == sorted(expected - done_before)  # the rest computed exactly once
    assert not list(out.glob("trials/*.tmp"))  # no half-written results are visible as results
    df = simcim.load(out)
    assert len(df) == len(expected) and df["trial_id"].is_unique


def test_only_dead_local_writers_temp_files_are_removed(tmp_path):
    trials = tmp_path / "trials"
    write_record(tmp_path, {"trial_id": "ab12", "status": "ok"})  # creates the folder, leaves no temp file
    assert not list(trials.glob(".*.tmp"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exited, not yet reaped: a zombie
    deadline = time.monotonic() + 30
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    host = os.uname().nodename.replace(".", "_")
    names = {
        "dead": f".ab12.{host}.{dead.pid}.x1y2.tmp",
        "zombie": f".ab12.{host}.{zombie.pid}.x1y2.tmp",
        "alive": f".ab12.{host}.{os.getppid()}.x1y2.tmp",
        "mine": f".ab12.{host}.{os.getpid()}.x1y2.tmp",
        "foreign": f".ab12.otherhost.{dead.pid}.x1y2.tmp",
        "unnamed": ".ab12.x1y2.tmp",
    }
    for name in names.values():
        (trials / name).write_bytes(b"half")
    removed = remove_stale_temp_files(tmp_path)
    zombie.wait()
    assert sorted(p.name for p in removed) == sorted([names["dead"], names["zombie"]])
    kept = sorted(v for k, v in names.items() if k not in ("dead", "zombie"))
    assert sorted(p.name for p in trials.glob(".*.tmp")) == kept
    assert set(stored_status(tmp_path)) == {"ab12"}


def test_dask_local_cluster_matches_serial(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(SLOW.format(sleep=0.0))
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "serial"), "--no-progress"]) == 0
    assert main(["sweep", str(cfg), "--out", str(tmp_path / "dask"), "--workers", "2", "--no-progress"]) == 0
    a = simcim.load(tmp_path / "serial").set_index("trial_id").sort_index()
    b = simcim.load(tmp_path / "dask").set_index("trial_id").sort_index()
    assert list(a.index) == list(b.index)
    assert (a["y"] == b["y"]).all()
    assert b["host"].notna().all()


def test_existing_scheduler(tmp_path):
    from dask.distributed import LocalCluster

    cfg = tmp_path / "c.toml"
    cfg.write_text(SLOW.format(sleep=0.0))
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster:
        rc = main(["sweep", str(cfg), "--out", str(tmp_path / "remote"), "--scheduler", cluster.scheduler_address,
                   "--no-progress"])
    assert rc == 0 and len(simcim.load(tmp_path / "remote")) == 12
