"""Registry of experiment kinds.

A kind is a module exposing

    Params                      a dataclass of the kind's parameters (fields built with
                                ``simcim.experiments.config.param`` carry bounds and help text)
    run_trial(params, seed, ctx) -> dict[str, float | int | str | list]
                                runs one trial and returns its metrics
    DEFAULT_METRICS             (optional) the metrics a report shows first

Modules are imported only when a config names their kind, so a kind whose optional
dependencies are missing does not break the others.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

KINDS: dict[str, str] = {
    "noise_injection": "simcim.noise_injection",
    "moe_noise": "simcim.moe.experiment",
    "npu_sim": "simcim.npu.experiment",
    "fusemax": "simcim.npu.dataflow.experiment",
    "sim_vs_measured": "simcim.validation.experiment",
    "gpu_model_blind": "simcim.validation.blind",
    "selftest": "simcim.experiments.selftest",
}


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What a trial may use besides its parameters: a folder for artifacts and its id."""

    run_dir: Path
    trial_id: str

    @property
    def artifact_dir(self) -> Path:
        path = self.run_dir / "artifacts" / self.trial_id
        path.mkdir(parents=True, exist_ok=True)
        return path


def kind_module(kind: str, where: str = "experiment.kind") -> ModuleType:
    from simcim.experiments.config import ConfigError

    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    try:
        return importlib.import_module(KINDS[kind])
    except ModuleNotFoundError as e:
        raise ConfigError(f"{where}: kind {kind!r} is not available here ({e})") from None


def params_class(kind: str, where: str = "experiment.kind") -> Any:
    return kind_module(kind, where).Params
