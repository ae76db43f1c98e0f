"""Sweeps on clusters: workers that cannot see the run folder, --gpus pinning, --scheduler and
--cluster errors. The Slurm end-to-end test is tests/test_cluster_slurm.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import simcim
from simcim.experiments import cluster
from simcim.experiments.cli import main
from simcim.experiments.config import ConfigError, load_config
from simcim.experiments.kinds import KINDS
from simcim.experiments.store import remove_stale_temp_files, stored_status, write_artifacts

# A kind that writes a nested artifact, logs each execution in the worker's working folder, can look
# at a path it is given and can fail: what a trial on a machine of its own does.
PROBE_KIND = '''
import dataclasses
import os
import time

from simcim.experiments.config import param


@dataclasses.dataclass(frozen=True)
class Params:
    x: float = param(0.0, help="input")
    fail_above: float = param(1e9, help="raise when x is above this")
    sleep_s: float = param(0.0, ge=0, help="seconds to sleep")
    peek: str = param("", help="a folder the trial tries to list")
    die_at: float = param(-1.0, help="at this x (seed 0) the trial kills its worker process")


def run_trial(params, seed, ctx):
    time.sleep(params.sleep_s)
    if params.x == params.die_at and seed == 0:
        os._exit(3)
    with open("executions.log", "a") as fh:  # the worker's working folder
        fh.write(ctx.trial_id + "\\n")
    (ctx.artifact_dir / "nested").mkdir()
    (ctx.artifact_dir / "nested" / "value.txt").write_text(f"{ctx.trial_id} {params.x}")
    if params.x > params.fail_above:
        raise RuntimeError("probe failure")
    blocked = False
    if params.peek:
        try:
            os.listdir(params.peek)
        except PermissionError:
            blocked = True
    return {"y": 2 * params.x, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "pid": os.getpid(),
            "cwd": os.getcwd(), "peek_blocked": blocked}
'''

# Loaded by each worker: registers the probe kind and, where SIMCIM_PROBE_FORBID names a folder,
# refuses every file operation under it (open, mkdir, rename, listdir, ...), as if it were not mounted.
PRELOAD = '''
import os
import sys

from simcim.experiments.kinds import KINDS

KINDS["probe"] = "simcim_probe_kind"
FORBID = os.environ.get("SIMCIM_PROBE_FORBID")
EVENTS = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.listdir", "os.scandir",
          "os.chdir", "os.truncate", "os.chmod", "os.link", "os.symlink", "shutil.rmtree", "tempfile.mkstemp",
          "tempfile.mkdtemp"}


def guard(event, args):
    if event not in EVENTS:
        return
    for arg in args[:2]:
        if isinstance(arg, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(arg))
            if path == FORBID or path.startswith(FORBID + os.sep):
                raise PermissionError(f"this worker cannot see {path}")


if FORBID:
    sys.addaudithook(guard)
'''

PROBE_SWEEP = """
[experiment]
name = "probe"
kind = "probe"
seeds = 2

[params]
fail_above = 2.5
sleep_s = {sleep}
peek = "{peek}"

[sweep]
x = [0.0, 1.0, 2.0, 3.0]
"""


@pytest.fixture
def probe_kind(tmp_path, monkeypatch) -> Path:
    """The probe kind, registered here and (through the preload file) in every worker; returns the preload."""
    lib = tmp_path / "kindlib"
    lib.mkdir()
    (lib / "simcim_probe_kind.py").write_text(PROBE_KIND)
    (lib / "probe_preload.py").write_text(PRELOAD)
    monkeypatch.syspath_prepend(str(lib))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setitem(KINDS, "probe", "simcim_probe_kind")
    return lib / "probe_preload.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_worker_without_the_run_folder_sends_everything_to_the_client(tmp_path, probe_kind, monkeypatch):
    from dask.distributed import Client, LocalCluster

    client_dir, worker_dir = tmp_path / "client", tmp_path / "worker"
    client_dir.mkdir()
    worker_dir.mkdir()
    cfg = client_dir / "probe.toml"
    cfg.write_text(PROBE_SWEEP.format(sleep=0.0, peek=client_dir))
    monkeypatch.chdir(client_dir)
    env = dict(os.environ, SIMCIM_PROBE_FORBID=str(client_dir))
    with LocalCluster(n_workers=0, processes=True, dashboard_address=":0") as sched:
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", sched.scheduler_address, "--nworkers", "1",
             "--nthreads", "1", "--preload", str(probe_kind), "--local-directory", str(worker_dir / "scratch"),
             "--no-dashboard"],
            cwd=worker_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            with Client(sched.scheduler_address) as c:
                c.wait_for_workers(1, timeout=60)
            rc = main(["sweep", str(cfg), "--out", str(client_dir / "run"), "--scheduler", sched.scheduler_address,
                       "--no-progress"])
        finally:
            worker.terminate()
            worker.wait(30)
    assert rc == 1  # two trials fail by design
    trials = load_config(cfg).trials()
    run = client_dir / "run"
    df = simcim.load(run, include_failed=True)
    assert sorted(df["trial_id"]) == sorted(t.id for t in trials)  # every trial stored once, on the client
    ok = df[df["status"] == "ok"]
    assert len(ok) == 6 and (ok["cwd"] == str(worker_dir)).all() and ok["peek_blocked"].all()
    assert (df.loc[df["status"] == "failed", "error"] == "RuntimeError: probe failure").all()
    for t in trials:  # artifacts of every trial, failed ones included, and tracebacks of the failed
        assert (run / "artifacts" / t.id / "nested" / "value.txt").read_text() == f"{t.id} {t.params.x}"
        assert (run / "errors" / f"{t.id}.txt").is_file() == (t.params.x > 2.5)
    assert "probe failure" in (run / "errors" / f"{trials[-1].id}.txt").read_text()
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".*"))  # only complete files are visible
    executions = (worker_dir / "executions.log").read_text().split()
    assert sorted(executions) == sorted(t.id for t in trials)  # each computed once, on the worker
    assert not list(worker_dir.rglob("*.parquet")) and not list(worker_dir.rglob("value.txt"))


def test_unreachable_scheduler_is_one_line_at_once_and_leaves_no_run_folder(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nkind = "selftest"\n')
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--scheduler", address, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and time.monotonic() - t0 < 8
    assert len(err.splitlines()) == 1 and address in err and "no Dask scheduler" in err
    assert not (tmp_path / "run").exists()
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--scheduler", "tcp://nohost:xx"]) == 2
    assert not (tmp_path / "run").exists()


def test_a_port_where_no_scheduler_listens_is_one_line(tmp_path, capsys):
    # e.g. the dashboard's port given instead of the scheduler's: something answers, but not Dask
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"

    def answer_http():
        for _ in range(20):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 64)

    threading.Thread(target=answer_http, daemon=True).start()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nkind = "selftest"\n')
    try:
        rc = main(["run", str(cfg), "--out", str(tmp_path / "run"), "--scheduler", address, "--no-progress"])
    finally:
        server.close()
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and address in err and "no Dask scheduler answered" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("gpus", "count", "message"), [
    ("1", 0, "no CUDA GPU is visible"),
    ("all", 0, "no CUDA GPU is visible"),
    ("3", 2, "this machine has 2 CUDA GPUs"),
    ("0", 2, "expected a number of GPUs >= 1 or 'all'"),
    ("two", 2, "expected a number of GPUs >= 1 or 'all'"),
])
def test_bad_gpus_is_one_line_exit_2(tmp_path, monkeypatch, capsys, gpus, count, message):
    monkeypatch.setattr(cluster, "cuda_device_count", lambda: count)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nkind = "selftest"\n')
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--gpus", gpus]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("simcim: error: --gpus") and message in err
    assert not (tmp_path / "run").exists()


def test_gpu_devices_hand_out_the_visible_devices_in_order():
    assert cluster.gpu_devices("all", count=4, visible="") == ["0", "1", "2", "3"]
    assert cluster.gpu_devices("2", count=4, visible="") == ["0", "1"]
    assert cluster.gpu_devices("all", count=2, visible="3,5") == ["3", "5"]  # this process was given 3 and 5
    assert cluster.gpu_devices("1", count=2, visible="GPU-aa, GPU-bb") == ["GPU-aa"]
    specs = cluster.worker_specs(["3", "5"], cores=16, memory=64 * 2**30)
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs.values()] == ["3", "5"]
    assert all(s["options"]["nthreads"] == 1 and s["options"]["memory_limit"] == 32 * 2**30 for s in specs.values())
    assert all(s["options"]["env"][cluster.THREADS_ENV] == "8" for s in specs.values())
    assert not any("CUDA_VISIBLE_DEVICES" in s["options"]["env"] for s in cluster.worker_specs([None, None]).values())


def test_gpus_all_runs_one_worker_pinned_to_each_gpu(tmp_path, probe_kind, monkeypatch):
    import dask

    monkeypatch.setattr(cluster, "cuda_device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "probe.toml"
    cfg.write_text(PROBE_SWEEP.format(sleep=0.5, peek="").replace("fail_above = 2.5", "fail_above = 9.0"))
    with dask.config.set({"distributed.worker.preload": [str(probe_kind)]}):
        rc = main(["sweep", str(cfg), "--out", str(tmp_path / "run"), "--gpus", "all", "--no-progress"])
    assert rc == 0
    df = simcim.load(tmp_path / "run")
    assert len(df) == 8
    assert set(df["gpu"]) == {"0", "1"}  # both workers ran trials, each with only its own GPU visible
    assert df.groupby("pid")["gpu"].nunique().eq(1).all() and df["pid"].nunique() == 2


def test_a_trial_that_kills_its_worker_is_recorded_failed_and_every_trial_stored_once(tmp_path, probe_kind,
                                                                                      monkeypatch):
    import dask

    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "probe.toml"
    cfg.write_text(PROBE_SWEEP.format(sleep=0.0, peek="").replace("fail_above = 2.5", "die_at = 1.0"))
    # no retries: the first worker death marks the trial as killing workers (and, at times, a trial that was
    # handed to the same worker); one task on a worker at a time keeps that to few
    with dask.config.set({"distributed.worker.preload": [str(probe_kind)],
                          "distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}):
        rc = main(["sweep", str(cfg), "--out", str(tmp_path / "run"), "--workers", "2", "--no-progress"])
    assert rc == 1
    df = simcim.load(tmp_path / "run", include_failed=True)
    assert len(df) == 8 and df["trial_id"].is_unique
    killer = (df["x"] == 1.0) & (df["seed"] == 0)
    assert killer.sum() == 1 and df.loc[killer, "error"].str.startswith("KilledWorker").all()
    failed = df[df["status"] == "failed"]
    assert failed["error"].str.startswith("KilledWorker").all() and len(failed) <= 3


@pytest.mark.parametrize(("text", "message"), [
    ("[slurm]\njobs = 0\n", "slurm.jobs: expected a value in [1, 10000], got 0"),
    ("[slurm]\nqueue = 'gpu'\n", "slurm.queue: unknown key"),
    ("[slurm]\nmemory = 'lots'\n", "memory 'lots': expected an amount such as '16GB'"),
    ("[slurm]\nwalltime = '90 minutes'\n", "walltime '90 minutes': expected HH:MM:SS or D-HH:MM:SS"),
    ("[slurm]\njob_extra = ['qos=high']\n", "job_extra 'qos=high': expected an sbatch option"),
    ("[slurm]\ngpus = -1\n", "slurm.gpus: expected a value in [0, 64]"),
    ("[pbs]\njobs = 2\n", "pbs: unknown table (known: slurm)"),
    ("jobs = 2\n", "jobs: unknown table"),
    ("[slurm\n", "not valid TOML"),
])
def test_bad_cluster_file_is_one_line_exit_2(tmp_path, capsys, text, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nkind = "selftest"\n')
    (tmp_path / "slurm.toml").write_text(text)
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--cluster", str(tmp_path / "slurm.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--cluster {tmp_path / 'slurm.toml'}" in err and message in err, err
    assert not (tmp_path / "run").exists()


def test_cluster_file_off_a_slurm_submit_host_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[experiment]\nkind = "selftest"\n')
    (tmp_path / "slurm.toml").write_text("[slurm]\njobs = 2\n")
    assert main(["run", str(cfg), "--out", str(tmp_path / "run"), "--cluster", str(tmp_path / "slurm.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "simcim: error: --cluster: sbatch is not on PATH: run the sweep on a Slurm login (submit) node"
    assert not (tmp_path / "run").exists()


def test_cluster_file_fields_and_worker_lifetime(tmp_path):
    path = tmp_path / "slurm.toml"
    path.write_text("[slurm]\njobs = 4\ncores = 8\nmemory = '32GB'\ngpus = 1\nwalltime = '1-00:00:00'\n"
                    "partition = 'gpu'\njob_extra = ['--qos=high']\n")
    cfg = cluster.load_cluster_file(path)
    assert (cfg.jobs, cfg.cores, cfg.gpus, cfg.partition, cfg.job_extra) == (4, 8, 1, "gpu", ["--qos=high"])
    assert cfg.lifetime() == (86400 - 600, 300)  # retires 5-15 minutes before a day's walltime
    assert cluster.SlurmConfig(walltime='01:00:00').lifetime() == (3300, 150)
    assert cluster.SlurmConfig(walltime="00:05:00").lifetime() == (240, 30)
    with pytest.raises(ConfigError, match="file not found"):
        cluster.load_cluster_file(tmp_path / "missing.toml")


def test_artifacts_replace_an_earlier_attempt_and_dead_writers_leftovers_go(tmp_path):
    write_artifacts(tmp_path, "ab12", {"a.txt": b"first", "sub/b.txt": b"first"})
    final = write_artifacts(tmp_path, "ab12", {"a.txt": b"second"})
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file()) == ["a.txt"]
    assert (final / "a.txt").read_bytes() == b"second"
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask  # as a folder made by mkdir, not mkdtemp's 0700
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace(".", "_")
    leftover = tmp_path / "artifacts" / f".cd34.{host}.{dead.pid}.x1y2.tmp"
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "half").write_bytes(b"half")
    assert remove_stale_temp_files(tmp_path) == [leftover]
    assert not leftover.exists() and final.is_dir() and set(stored_status(tmp_path)) == set()
