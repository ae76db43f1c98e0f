"""A sweep through Slurm (`simcim sweep --cluster`), against a real slurmctld and slurmd.

`bash .ci/slurm.sh` installs and starts a single-node Slurm on localhost (as root); without a
controller that answers, the test is skipped and says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

import simcim
from simcim.experiments.config import load_config
from simcim.experiments.store import stored_status


def _why_no_slurm() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return "Slurm is not installed (no sbatch): `bash .ci/slurm.sh` installs and starts a one-node Slurm"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"scontrol ping failed ({e})"
    if "UP" not in ping.stdout:
        return "no Slurm controller answers `scontrol ping`: `bash .ci/slurm.sh` starts a one-node Slurm"
    try:
        import dask_jobqueue  # noqa: F401
    except ImportError:
        return "dask-jobqueue is not installed"
    return None


WHY = _why_no_slurm()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(WHY is not None, reason=WHY or "")]

SWEEP = """
[experiment]
name = "slurm"
kind = "selftest"
seeds = 2

[params]
sleep_s = 1.0
log_executions = true

[sweep]
x = [0.0, 1.0, 2.0, 3.0, 4.0]
"""


def _our_jobs(tag: str, state: str = "") -> list[str]:
    cmd = ["squeue", "-h", "-o", "%i %k"] + (["-t", state] if state else [])
    lines = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.splitlines()
    return [line.split()[0] for line in lines if line.split()[1:] == [tag]]


def test_slurm_sweep_stores_every_trial_once_when_slurm_kills_a_worker_job(tmp_path):
    cfg = tmp_path / "slurm_sweep.toml"
    cfg.write_text(SWEEP)
    tag = f"simcim-test-{os.getpid()}-{time.monotonic_ns()}"
    cluster_file = tmp_path / "slurm.toml"
    cluster_file.write_text(f'[slurm]\njobs = 1\ncores = 1\nmemory = "1GB"\nwalltime = "00:10:00"\n'
                            f'job_extra = ["--comment={tag}"]\nlog_directory = "{tmp_path / "logs"}"\n')
    out = tmp_path / "run"
    expected = {t.id for t in load_config(cfg).trials()}
    log = (tmp_path / "sweep.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "simcim.experiments.cli", "sweep", str(cfg), "--out", str(out),
                             "--cluster", str(cluster_file), "--no-progress"],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT="2s"))
    try:
        deadline = time.monotonic() + 120
        while len(stored_status(out)) < 2:
            assert proc.poll() is None, (tmp_path / "sweep.log").read_text()
            assert time.monotonic() < deadline, "no trial stored within 120 s"
            time.sleep(0.1)
        running = _our_jobs(tag, "R")
        assert running, "no worker job of this sweep is running"
        stored_before = set(stored_status(out))
        # as at walltime: the only worker's job ends mid-trial; the sweep can finish only on its replacement
        subprocess.run(["scancel", running[0]], check=True, timeout=20)
        rc = proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for job in _our_jobs(tag):
            subprocess.run(["scancel", job], timeout=20)
        log.close()
    assert rc == 0, (tmp_path / "sweep.log").read_text()
    status = stored_status(out)
    assert set(status) == expected and set(status.values()) == {"ok"}  # nothing lost
    df = simcim.load(out)
    assert len(df) == len(expected) and df["trial_id"].is_unique
    executions = (out / "executions.log").read_text().split()[::2]
    assert all(executions.count(tid) == 1 for tid in stored_before)  # stored before the kill: not run again
    assert set(executions) == expected
    assert len(list((tmp_path / "logs").glob("*.err"))) >= 2  # Slurm output of the killed job and its replacement


def test_a_job_slurm_refuses_is_one_line_before_anything_runs(tmp_path, capsys):
    from simcim.experiments.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nkind = "selftest"\n')
    (tmp_path / "slurm.toml").write_text('[slurm]\npartition = "no-such-partition"\n')
    rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--cluster", str(tmp_path / "slurm.toml")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "sbatch refuses the worker job" in err and "partition" in err
    assert not (tmp_path / "run").exists()
