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
import math
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
    # Randomness that belongs to the device rather than to one read (each device's drift exponent).
    # When given, such draws come from it, so reads of one programmed chip at several times share
    # them while their read noise stays independent; when None they come from ``generator``.
    device_generator: torch.Generator | None = None


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


# 4 Mi elements: each float32 temporary of a chunk is 16 MiB, so a component's few temporaries stay
# small next to a model's weights, and each op still runs long enough to hide its launch cost.
DEFAULT_CHUNK_ELEMS = 1 << 22


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def check_time(t_inference: float) -> float:
    t = float(t_inference)
    if not (t >= 0 and math.isfinite(t)):
        raise ValueError(f"t_inference must be a finite number of seconds >= 0, got {t_inference}")
    return t


@dataclasses.dataclass(frozen=True)
class DeviceModel:
    """An ordered composition of components with the device's conductance range.

    Tensors are processed in flat chunks of ``chunk_elems`` elements, computed in float32 whatever
    the storage dtype, so peak extra memory is the output (none when ``out`` is the input) plus a
    few chunk-sized temporaries. On a CUDA tensor whose stage holds only programming noise, drift
    and read noise (the PCM chain), one fused Triton kernel does the whole pass instead (see
    ``simcim.noise_models.fused``); it draws from the same distributions but not the same random numbers.
    Results depend on the seed, the device and ``chunk_elems``.
    """

    name: str
    g_max: float
    components: tuple[NoiseComponent, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not (self.g_max > 0):
            raise ValueError(f"g_max must be > 0 microsiemens, got {self.g_max}")
        for c in self.components:
            if not isinstance(c, NoiseComponent):
                raise ValueError(f"components must be NoiseComponent instances, got {type(c).__name__}")

    @property
    def is_identity(self) -> bool:
        return all(c.is_identity for c in self.components)

    def program(self, g_target: torch.Tensor, generator: torch.Generator, *,
                out: torch.Tensor | None = None, chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> torch.Tensor:
        """Conductances just after programming (program-stage components only)."""
        return self._run(("program",), g_target, g_target, 0.0, generator, out, chunk_elems)

    def read(self, g_programmed: torch.Tensor, g_target: torch.Tensor, t_inference: float,
             generator: torch.Generator, *, device_generator: torch.Generator | None = None,
             out: torch.Tensor | None = None, chunk_elems: int = DEFAULT_CHUNK_ELEMS) -> torch.Tensor:
        """Conductances read ``t_inference`` seconds after programming (read-stage components).

        To follow one chip instance through time, pass each read a ``device_generator`` in the same
        state (e.g. freshly seeded with the chip's seed): every read then sees the same drift
        exponents, while read noise comes fresh from ``generator``.
        """
        return self._run(("read",), g_programmed, g_target, t_inference, generator, out, chunk_elems,
                         device_generator)

    def apply(self, g_target: torch.Tensor, generator: torch.Generator, t_inference: float = 0.0, *,
              out: torch.Tensor | None = None, chunk_elems: int = DEFAULT_CHUNK_ELEMS,
              fused: bool = True) -> torch.Tensor:
        """Program then read: the conductances a chip instance shows at ``t_inference``.

        ``out`` may be ``g_target`` itself (in place, no output allocation). ``fused=False`` forces
        the chunked torch path on a GPU (for comparison; the fused kernel is the fast one).
        """
        return self._run(("program", "read"), g_target, g_target, t_inference, generator, out,
                         chunk_elems, fused=fused)

    def _run(self, stages: tuple[Stage, ...], g_in: torch.Tensor, g_target: torch.Tensor,
             t_inference: float, generator: torch.Generator, out: torch.Tensor | None,
             chunk_elems: int, device_generator: torch.Generator | None = None,
             fused: bool = True) -> torch.Tensor:
        t = check_time(t_inference)
        if not g_in.is_floating_point():
            raise ValueError(f"conductances must be a floating-point tensor, got {g_in.dtype}")
        if g_target.shape != g_in.shape or g_target.device != g_in.device:
            raise ValueError(f"g_target {tuple(g_target.shape)} on {g_target.device} does not match the "
                             f"conductances {tuple(g_in.shape)} on {g_in.device}")
        if not (isinstance(chunk_elems, int) and chunk_elems >= 1):
            raise ValueError(f"chunk_elems must be a positive integer, got {chunk_elems!r}")
        if out is None:
            out = torch.empty(g_in.shape, dtype=g_in.dtype, device=g_in.device)
        elif out.shape != g_in.shape or out.device != g_in.device or out.dtype != g_in.dtype:
            raise ValueError(f"out {tuple(out.shape)} {out.dtype} on {out.device} does not match the "
                             f"conductances {tuple(g_in.shape)} {g_in.dtype} on {g_in.device}")
        elif not out.is_contiguous():
            raise ValueError("out must be contiguous")
        active = [c for c in self.components if c.stage in stages and not c.is_identity]
        if fused and out.is_cuda and active:
            from simcim.noise_models.fused import fusable, run_fused

            if fusable(active):
                return run_fused(active, g_in, g_target, t, self.g_max, generator, out, device_generator)
        src, tgt, dst = g_in.reshape(-1), g_target.reshape(-1), out.view(-1)
        in_place_target = _shares_memory(out, g_target)
        # float32 output not overlapping the targets: work directly in it (no temporary, no copy back)
        direct = out.dtype == torch.float32 and not in_place_target
        for start in range(0, src.numel(), chunk_elems):
            sl = slice(start, start + chunk_elems)
            target = tgt[sl].to(torch.float32, copy=in_place_target)
            if not (float(target.min()) >= 0):  # NaN fails this too
                bad = ~(target >= 0)
                i = start + int(bad.nonzero()[0, 0])
                raise ValueError(f"g_target must be finite and >= 0 microsiemens; element {i} (flat index) "
                                 f"is {float(tgt[i])}")
            if direct:
                g = dst[sl]
                if not _shares_memory(g, src) or g.data_ptr() != src[sl].data_ptr():
                    g.copy_(src[sl])
            else:
                g = src[sl].to(torch.float32, copy=True)
            ctx = NoiseContext(g_max=self.g_max, generator=generator, g_target=target, t_inference=t,
                               device_generator=device_generator)
            result = g
            for c in active:
                result = c.apply(result, ctx)
            if not direct or result.data_ptr() != g.data_ptr():
                dst[sl].copy_(result)
        return out
