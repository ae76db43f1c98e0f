"""The interface every device-physics component implements.

A component takes conductances (in microsiemens) and returns conductances, drawing any
randomness from the explicit ``torch.Generator`` it is handed, so that the same seed gives
bitwise-identical results on the same device. Components work in place where they can
(the returned tensor may be the input). They are composed, in order, into a ``DeviceModel``.

Two stages exist because real chips have two moments: ``program`` components act once,
when the target conductance is written (programming noise, faults, finite levels,
device-to-device variation); ``read`` components act at inference time ``t_inference``
seconds after programming (drift, read noise).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import torch

Stage = Literal["program", "read"]


@dataclasses.dataclass
class NoiseContext:
    """What a component may need besides the conductances it transforms.

    ``g_target`` is the conductance the mapping asked for (same shape as the tensor being
    transformed), so that read-stage effects whose statistics depend on the programmed
    state (drift exponent, 1/f amplitude) can use it after programming noise has moved ``g``.
    """

    g_max: float
    generator: torch.Generator
    g_target: torch.Tensor | None = None
    t_inference: float = 0.0


class NoiseComponent(ABC):
    """One physical effect: conductance in, conductance out."""

    stage: ClassVar[Stage] = "program"

    @abstractmethod
    def apply(self, g: torch.Tensor, ctx: NoiseContext) -> torch.Tensor:
        """Transform ``g`` (microsiemens), in place where possible; return the result."""

    @property
    def is_identity(self) -> bool:
        """True when this component, as configured, cannot change any conductance."""
        return False


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """An ordered composition of components with the device's conductance range."""

    name: str
    g_max: float
    components: tuple[NoiseComponent, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not (self.g_max > 0):
            raise ValueError(f"g_max must be > 0 microsiemens, got {self.g_max}")

    @property
    def is_identity(self) -> bool:
        return all(c.is_identity for c in self.components)

    def program(self, g_target: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Conductances just after programming (program-stage components only)."""
        g = g_target.clone()
        ctx = NoiseContext(g_max=self.g_max, generator=generator, g_target=g_target)
        for c in self.components:
            if c.stage == "program" and not c.is_identity:
                g = c.apply(g, ctx)
        return g

    def read(self, g_programmed: torch.Tensor, g_target: torch.Tensor, t_inference: float,
             generator: torch.Generator) -> torch.Tensor:
        """Conductances read ``t_inference`` seconds after programming (read-stage components)."""
        g = g_programmed.clone()
        ctx = NoiseContext(g_max=self.g_max, generator=generator, g_target=g_target,
                           t_inference=t_inference)
        for c in self.components:
            if c.stage == "read" and not c.is_identity:
                g = c.apply(g, ctx)
        return g

    def apply(self, g_target: torch.Tensor, generator: torch.Generator,
              t_inference: float = 0.0) -> torch.Tensor:
        """Program then read: the conductances a chip instance shows at ``t_inference``."""
        g = self.program(g_target, generator)
        if any(c.stage == "read" for c in self.components):
            g = self.read(g, g_target, t_inference, generator)
        return g
