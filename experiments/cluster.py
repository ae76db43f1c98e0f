"""Where a sweep's trials run: in this process, on a local Dask cluster (one worker per process or
one per GPU), on an existing Dask scheduler, or on Slurm jobs started through dask-jobqueue.

Every choice is validated and the cluster is reached before the run folder is touched, so a bad
``--gpus``, cluster file or scheduler address is one line (exit status 2) and leaves nothing behind.
Workers never need to see the run folder: they send each trial's record and artifacts back to the
client, which stores them (see ``simcim.experiments.runner``).

A cluster file holds one ``[slurm]`` table; its keys are the fields of :class:`SlurmConfig`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simcim.experiments.config import ConfigError, param, tomllib, validate_params

THREADS_ENV = "SIMCIM_TORCH_THREADS"
PROBE_TIMEOUT_S = 5.0  # a scheduler that exists accepts a TCP connection well within this
CONNECT_TIMEOUT_S = 10.0
_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


def walltime_seconds(text: str) -> int:
    """Seconds in a Slurm walltime written ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    m = _WALLTIME.match(text)
    if m is None:
        raise ValueError(f"walltime {text!r}: expected HH:MM:SS or D-HH:MM:SS")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclasses.dataclass(frozen=True)
class SlurmConfig:
    """Slurm jobs that each run one Dask worker, which runs one trial at a time."""

    jobs: int = param(1, ge=1, le=10000, help="Slurm jobs to keep running, one Dask worker each; a job that "
                                              "ends (walltime, scancel, node failure) is replaced")
    cores: int = param(1, ge=1, le=1024, help="CPU cores per job (sbatch --cpus-per-task); torch in the "
                                              "worker uses all of them")
    memory: str = param("4GB", help="memory per job, e.g. '16GB' (sbatch --mem); the worker's memory limit")
    gpus: int = param(0, ge=0, le=64, help="GPUs per job (sbatch --gres=gpu:N); trials with device = 'auto' "
                                           "use them")
    walltime: str = param("01:00:00", help="time limit per job, HH:MM:SS or D-HH:MM:SS (sbatch --time); "
                                           "workers retire shortly before it, handing their work back")
    partition: str | None = param(None, help="Slurm partition (sbatch --partition); default: the cluster's")
    account: str | None = param(None, help="account to charge (sbatch --account)")
    job_extra: list[str] = param(default_factory=list, help="extra sbatch options, one per #SBATCH line, "
                                                            "e.g. ['--qos=high', '--constraint=h100']")
    prologue: list[str] = param(default_factory=list, help="shell lines run in the job before the worker "
                                                           "starts, e.g. ['module load cuda']")
    python: str | None = param(None, help="Python interpreter on the nodes that has simcim installed "
                                          "(default: this one, which then must exist on the nodes)")
    local_directory: str | None = param(None, help="worker scratch folder on the node (default: the "
                                                   "node's temp folder)")
    log_directory: str | None = param(None, help="folder for the jobs' Slurm output files (default: the "
                                                 "folder sbatch runs in)")
    interface: str | None = param(None, help="network interface the scheduler and workers listen on, "
                                             "e.g. 'ib0' (default: the host's address)")

    def __post_init__(self) -> None:
        from dask.utils import parse_bytes

        try:
            ok = parse_bytes(self.memory) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"memory {self.memory!r}: expected an amount such as '16GB' or '512MB'")
        walltime_seconds(self.walltime)
        for line in self.job_extra:
            if not line.startswith("-"):
                raise ValueError(f"job_extra {line!r}: expected an sbatch option starting with '-'")

    def lifetime(self) -> tuple[int, int]:
        """(lifetime, stagger) seconds: workers retire in [lifetime - stagger, lifetime + stagger],
        which ends before the walltime so that their trials move to other workers unharmed."""
        wall = walltime_seconds(self.walltime)
        margin = min(max(wall // 12, 60), 600, wall // 2)
        return wall - margin, margin // 2


def load_cluster_file(path: Path) -> SlurmConfig:
    """Read a cluster file (one ``[slurm]`` table), every problem a one-line ConfigError."""
    where = f"--cluster {path}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: cannot read it ({e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    unknown = sorted(set(data) - {"slurm"})
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]}: unknown table (known: slurm)")
    if not isinstance(data.get("slurm"), dict):
        raise ConfigError(f"{where}: slurm: missing table (a cluster file holds a [slurm] table)")
    try:
        return validate_params(SlurmConfig, data["slurm"], prefix="slurm")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_devices(value: str, count: int | None = None, visible: str | None = None) -> list[str]:
    """The device each ``--gpus`` worker is pinned to, as CUDA_VISIBLE_DEVICES entries.

    ``value`` is N or 'all'; ``count`` is how many GPUs this process sees and ``visible`` its own
    CUDA_VISIBLE_DEVICES (default: read them), whose entries are handed out in order.
    """
    text = value.strip().lower()
    if text == "all":
        wanted = None
    elif text.isdigit() and int(text) >= 1:
        wanted = int(text)
    else:
        raise ConfigError(f"--gpus: expected a number of GPUs >= 1 or 'all', got {value!r}")
    count = cuda_device_count() if count is None else count
    if count == 0:
        raise ConfigError(f"--gpus {value}: no CUDA GPU is visible on this machine")
    if wanted is not None and wanted > count:
        raise ConfigError(f"--gpus {value}: this machine has {count} CUDA GPU{'s' if count > 1 else ''}")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    ids = ids[:count] if len(ids) >= count else [str(i) for i in range(count)]
    return ids[:wanted] if wanted is not None else ids


@dataclasses.dataclass(frozen=True)
class ClusterChoice:
    """Where trials run; all empty means serially in this process."""

    workers: int = 0
    scheduler: str | None = None
    gpus: tuple[str, ...] = ()
    slurm: SlurmConfig | None = None

    @property
    def serial(self) -> bool:
        return not (self.workers or self.scheduler or self.gpus or self.slurm)


def choose(*, workers: int = 0, scheduler: str | None = None, gpus: str | None = None,
           cluster_file: Path | None = None) -> ClusterChoice:
    """Validate the command line's cluster options (at most one is given)."""
    if workers < 0:
        raise ConfigError(f"--workers: expected N >= 1, got {workers}")
    return ClusterChoice(workers=workers, scheduler=scheduler,
                         gpus=tuple(gpu_devices(gpus)) if gpus is not None else (),
                         slurm=load_cluster_file(cluster_file) if cluster_file is not None else None)


@contextlib.contextmanager
def dask_client(choice: ClusterChoice) -> Iterator[Any]:
    """A connected ``distributed.Client`` for ``choice`` (None when serial); closes what it started."""
    if choice.serial:
        yield None
        return
    from dask.distributed import Client

    if choice.scheduler is not None:
        client = _connect(choice.scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    if choice.slurm is not None:
        cluster = _slurm_cluster(choice.slurm)
    elif choice.gpus:
        cluster = local_cluster(list(choice.gpus))
    else:
        cluster = local_cluster([None] * choice.workers)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def _connect(address: str) -> Any:
    """A client of the scheduler at ``address``, or a one-line ConfigError within seconds."""
    from dask.distributed import Client
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    where = f"--scheduler {address}"
    try:
        scheme, location = parse_address(address)
        if scheme == "tcp":
            host, port = parse_host_port(location)
            # a refused or unroutable address fails here at once, not after Dask's connect retries
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: not a scheduler address such as tcp://HOST:8786 ({e})") from None
    except OSError as e:
        raise ConfigError(f"{where}: no Dask scheduler reachable there ({e.strerror or e})") from None
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except Exception as e:  # silence, or something else listening there (a dashboard's HTTP port, a proxy)
        text = str(e).strip().splitlines()
        raise ConfigError(f"{where}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:.0f}s "
                          f"({type(e).__name__}{': ' + text[0][:160] if text else ''})") from None


def worker_specs(devices: list[str | None], *, cores: int | None = None,
                 memory: int | None = None) -> dict[str, dict[str, Any]]:
    """SpecCluster worker specs: one single-threaded Nanny per entry of ``devices``, pinned to that
    CUDA device when it is not None, with torch threads and memory split evenly between workers."""
    from distributed import Nanny
    from distributed.system import MEMORY_LIMIT

    n = len(devices)
    threads = str(max(1, (cores or os.cpu_count() or 1) // n))
    specs = {}
    for i, dev in enumerate(devices):
        env = {THREADS_ENV: os.environ.get(THREADS_ENV, threads)}
        if dev is not None:
            env["CUDA_VISIBLE_DEVICES"] = dev  # the worker's "cuda" (device = "auto") is this GPU
        name = f"gpu{dev}" if dev is not None else f"cpu{i}"
        specs[name] = {"cls": Nanny, "options": {"nthreads": 1, "env": env,
                                                 "memory_limit": (memory or MEMORY_LIMIT) // n}}
    return specs


def local_cluster(devices: list[str | None]) -> Any:
    """A cluster on this machine with one worker process per entry of ``devices``."""
    from distributed import Scheduler, SpecCluster

    scheduler = {"cls": Scheduler, "options": {"dashboard_address": ":0", "host": "127.0.0.1"}}
    return SpecCluster(workers=worker_specs(devices), scheduler=scheduler, silence_logs=logging.ERROR,
                       name="simcim-local")


def _slurm_cluster(cfg: SlurmConfig) -> Any:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ConfigError("--cluster: Slurm needs the dask-jobqueue package (pip install dask-jobqueue)") from None
    if shutil.which("sbatch") is None:
        raise ConfigError("--cluster: sbatch is not on PATH: run the sweep on a Slurm login (submit) node")
    lifetime, stagger = cfg.lifetime()
    directives = ([f"--gres=gpu:{cfg.gpus}"] if cfg.gpus else []) + list(cfg.job_extra)
    try:
        cluster = SLURMCluster(
            cores=1, processes=1, job_cpu=cfg.cores,  # one trial at a time, torch on every booked core
            memory=cfg.memory, walltime=cfg.walltime, queue=cfg.partition, account=cfg.account,
            job_extra_directives=directives,
            job_script_prologue=[*cfg.prologue, f"export {THREADS_ENV}={cfg.cores}"],
            worker_extra_args=["--lifetime", f"{lifetime}s", "--lifetime-stagger", f"{stagger}s"],
            python=cfg.python or sys.executable, local_directory=cfg.local_directory,
            log_directory=cfg.log_directory, interface=cfg.interface, name="simcim-slurm", job_name="simcim-worker",
            scheduler_options={"dashboard_address": ":0"},
        )
    except (OSError, ValueError) as e:
        raise ConfigError(f"--cluster: could not start the Slurm cluster's scheduler ({e})") from None
    # a wrong partition, account or GPU request is refused now, not by jobs that fail out of sight
    check = subprocess.run(["sbatch", "--test-only"], input=cluster.job_script(), text=True, capture_output=True)
    if check.returncode != 0:
        cluster.close()
        reason = (check.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise ConfigError(f"--cluster: sbatch refuses the worker job: {reason}")
    # jobs that end (walltime, scancel) are replaced; trials they held run again elsewhere
    cluster.adapt(minimum_jobs=cfg.jobs, maximum_jobs=cfg.jobs)
    return cluster
