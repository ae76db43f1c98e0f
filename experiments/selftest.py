"""A tiny experiment kind for exercising the runner: cheap, seeded, optionally slow or failing.

It is what the runner's tests kill, resume and spread over Dask workers; it is also a
quick way to check an installation (``simcim run experiments/configs/selftest.toml``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from simcim.experiments.config import param
from simcim.experiments.kinds import TrialContext


@dataclasses.dataclass(frozen=True)
class Params:
    x: float = param(0.0, help="input value")
    scale: float = param(1.0, gt=0, help="noise scale")
    sleep_s: float = param(0.0, ge=0, le=60, help="seconds to sleep, to make the trial slow")
    fail_above: float | None = param(None, help="raise an error when x exceeds this")
    log_executions: bool = param(False, help="append a line to RUN_DIR/executions.log when a trial completes")


DEFAULT_METRICS = ("y",)


def run_trial(params: Params, seed: int, ctx: TrialContext) -> dict[str, float]:
    if params.sleep_s:
        time.sleep(params.sleep_s)
    if params.fail_above is not None and params.x > params.fail_above:
        raise ValueError(f"x={params.x} is above fail_above={params.fail_above}")
    rng = np.random.default_rng(seed)
    y = params.x ** 2 + params.scale * float(rng.standard_normal())
    if params.log_executions:
        line = f"{ctx.trial_id} {os.getpid()}\n"
        # O_APPEND writes of one short line are atomic, so parallel workers do not interleave
        fd = os.open(Path(ctx.run_dir) / "executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    return {"y": y, "x_squared": params.x ** 2}
