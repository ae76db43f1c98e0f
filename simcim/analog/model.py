"""Run a whole model's selected weights through the analog periphery instead of digital matmuls.

:class:`AnalogForward` programs the selected weights onto crossbars (``simcim.crossbar.program_arrays``:
the same device models, tile mapping and drift compensation as the weights forward, with the device's
read noise left for every read), writes the read-back weights into the parameters (the digital side's
view: what a ROMER copy or a redundancy average replaces), and, while active, answers every
``torch.nn.functional.linear`` whose weight is a selected matrix with :func:`analog_mvm`:

* ``nn.Linear`` layers and routers (transformers 5 routers call ``F.linear`` on their weight);
* stacked 3-D expert parameters ``[experts, out, in]``: the experts run in transformers' eager
  implementation, which calls ``F.linear`` on one expert's slice with only the tokens routed to it;
  the slice's offset in the parameter names the expert, whose matrix sits on its own tiles.

A selected weight that never reaches ``F.linear`` (an embedding lookup, a custom matmul) cannot be mapped,
and :meth:`AnalogForward.check_mapped` says which.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch
from torch.overrides import TorchFunctionMode

from simcim.analog import experts
from simcim.analog.periphery import Counters, PeripheryConfig, analog_mvm
from simcim.crossbar import (
    CrossbarConfig,
    _per_weight,
    program_arrays,
    target_seed,
    tile_scales,
    without_read_noise,
)
from simcim.noise_models.base import DeviceModel
from simcim.targets import WeightTarget

Engine = Literal["auto", "torch", "triton"]
_LINEAR = {torch.nn.functional.linear, torch._C._nn.linear}


@dataclasses.dataclass
class _Armed:
    target: WeightTarget
    scales: torch.Tensor  # [n, out, blocks], float32
    read_var: torch.Tensor | None  # [n, out, in]
    fingerprint: torch.Tensor  # [n]: each matrix's sum when programmed; a change means it was rewritten
    hits: int = 0
    cache: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # unit weights (and variances) per dtype


def _fingerprint(mats: torch.Tensor) -> torch.Tensor:
    # the same reduction at programming and before each forward: bitwise equal while the weights are unchanged
    return mats.float().sum(dim=(-2, -1))


class AnalogForward(TorchFunctionMode):
    """Context manager: the selected weights programmed for, and computed by, the analog forward.

    The parameters keep the programmed weights after the block; restore them as the weights forward does
    (``noise_injection.restored``).
    """

    def __init__(self, model: torch.nn.Module, targets: Sequence[WeightTarget], device_model: DeviceModel,
                 crossbar: CrossbarConfig, periphery: PeripheryConfig, seed: int, t_inference: float = 0.0,
                 drift_compensation: Literal["none", "column", "tile"] = "none", engine: Engine = "auto") -> None:
        super().__init__()
        if engine not in ("auto", "torch", "triton"):
            raise ValueError(f"engine {engine!r}: expected 'auto', 'torch' or 'triton'")
        for t in targets:
            if t.input_axis != -1:
                raise ValueError(f"forward 'analog': {t.name} ({t.role}) is a lookup table, not a matrix-vector "
                                 "product; leave it off the crossbars (roles/exclude) or use forward 'weights'")
        self.model, self.crossbar, self.engine = model, crossbar, engine
        self.periphery = dataclasses.replace(periphery, g_max=device_model.g_max)
        self.counters = Counters()
        self._armed: dict[int, _Armed] = {}
        self._saved_experts_impl: str | None = None
        with torch.no_grad():
            for t in targets:
                self._armed[t.param.untyped_storage().data_ptr()] = self._program(
                    t, device_model, seed, t_inference, drift_compensation)
        dev = next(model.parameters()).device
        self.generator = torch.Generator(device=dev).manual_seed(target_seed(seed, "analog forward"))

    def _program(self, t: WeightTarget, device_model: DeviceModel, seed: int, t_inference: float,
                 drift_compensation: Literal["none", "column", "tile"]) -> _Armed:
        gen = torch.Generator(device=t.param.device).manual_seed(target_seed(seed, t.name))
        if self.periphery.read_sigma is not None:  # a fixed read sigma replaces the device's read noise
            device_model = without_read_noise(device_model)
        arr = program_arrays(t.matrices(), device_model, self.crossbar, gen, t_inference, drift_compensation)
        t.param.data.copy_(t.from_matrices(arr.weights))
        return _Armed(t, arr.scales.float(), arr.read_var, _fingerprint(t.matrices()))

    # ------------------------------------------------------------------ context
    def _refresh(self, module: torch.nn.Module, args: tuple) -> None:
        """Before each forward of the model: re-map matrices rewritten since programming (a ROMER copy, a
        redundancy average) with their own max |w| as full scale. One check per forward, not per product."""
        with torch.no_grad():
            for armed in self._armed.values():
                mats = armed.target.matrices()
                fp = _fingerprint(mats)
                changed = (fp != armed.fingerprint).nonzero().flatten().tolist()
                for i in changed:
                    armed.scales[i] = tile_scales(mats[i][None].float(), self.crossbar)[0]
                if changed:
                    armed.cache.clear()
                armed.fingerprint.copy_(fp)

    def __enter__(self) -> AnalogForward:
        impl = getattr(getattr(self.model, "config", None), "_experts_implementation", None)
        if impl is not None and hasattr(self.model, "set_experts_implementation"):
            experts.register()
            self._saved_experts_impl = impl
            # grouped analog launches where the kernel runs, else one F.linear per expert on its routed tokens
            self.model.set_experts_implementation(experts.NAME)
        self._hook = self.model.register_forward_pre_hook(self._refresh)
        experts.ACTIVE.append(self)
        return super().__enter__()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._hook.remove()
        experts.ACTIVE.remove(self)
        if self._saved_experts_impl is not None:
            self.model.set_experts_implementation(self._saved_experts_impl)
            self._saved_experts_impl = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LINEAR:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            hit = self._lookup(weight)
            if hit is not None:
                x = args[0] if args else kwargs["input"]
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                return self._linear(x, weight, bias, *hit)
        return func(*args, **kwargs)

    # ------------------------------------------------------------------ grouped experts
    def armed(self, param: torch.Tensor) -> _Armed | None:
        """The programmed state of a selected stacked parameter, or None when it is not selected."""
        armed = self._armed.get(param.untyped_storage().data_ptr())
        return armed if armed is not None and armed.target.param is param else None

    def grouped_on_kernel(self, x: torch.Tensor, *armed: _Armed) -> bool:
        from simcim.analog import engines

        return all(engines.use_kernel(self.engine, x, self.periphery, self.crossbar.tile_rows, a.read_var)
                   for a in armed)

    def grouped_mvm(self, armed: _Armed, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Every expert's rows ``x[offsets[e]:offsets[e + 1]]`` through its own matrix, in one kernel launch."""
        from simcim.analog import engines

        armed.hits += 1
        with torch.no_grad():
            unit, var = self._unit(armed, torch.bfloat16)
            return engines.kernel_mvm(x, unit, armed.scales.transpose(1, 2), self.periphery, self.crossbar.tile_rows,
                                      None, self.generator, self.counters, var, offsets)

    def _unit(self, armed: _Armed, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unit weights ``w / scale`` ``[n, out, in]`` and read variances in ``dtype``, made once per programming
        (and again after a matrix is rewritten), not in every product."""
        key = str(dtype)
        if key not in armed.cache:
            mats = armed.target.matrices()
            per_weight = _per_weight(armed.scales, mats.shape[-1], self.crossbar)
            armed.cache[key] = (mats.float() / torch.where(per_weight > 0, per_weight, torch.ones_like(per_weight))
                                ).to(dtype)
            if armed.read_var is not None:
                armed.cache["var " + key] = armed.read_var.to(dtype)
        return armed.cache[key], armed.cache.get("var " + key)

    # ------------------------------------------------------------------ the product
    def _lookup(self, w: torch.Tensor | None) -> tuple[_Armed, int] | None:
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            return None
        armed = self._armed.get(w.untyped_storage().data_ptr())
        if armed is None:
            return None
        out_dim, in_dim = armed.scales.shape[1], armed.target.matrices().shape[-1]
        offset = w.storage_offset() - armed.target.param.storage_offset()
        if tuple(w.shape) != (out_dim, in_dim) or w.stride() != (in_dim, 1) or offset % (out_dim * in_dim):
            raise ValueError(f"forward 'analog': {armed.target.name} is used as a {tuple(w.shape)} matrix with "
                             f"strides {w.stride()}, not as one [out, in] = [{out_dim}, {in_dim}] matrix per slice")
        return armed, offset // (out_dim * in_dim)

    def _linear(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, armed: _Armed,
                index: int) -> torch.Tensor:
        from simcim.analog import engines

        armed.hits += 1
        with torch.no_grad():
            x2 = x.reshape(-1, x.shape[-1])
            kernel = engines.use_kernel(self.engine, x2, self.periphery, self.crossbar.tile_rows, armed.read_var)
            unit, var = self._unit(armed, torch.bfloat16 if kernel else torch.float32)
            unit, var = unit[index], var[index] if var is not None else None
            scales = armed.scales[index].t().contiguous()  # [blocks, out]
            if kernel:
                y = engines.kernel_mvm(x2, unit, scales, self.periphery, self.crossbar.tile_rows, bias,
                                       self.generator, self.counters, var)
            else:
                y = analog_mvm(x2, unit, scales, self.periphery, self.crossbar.tile_rows, var, bias, self.generator,
                               self.counters)
        return y.reshape(*x.shape[:-1], w.shape[0])

    # ------------------------------------------------------------------ checks
    @torch.no_grad()
    def check_mapped(self, input_ids: torch.Tensor) -> None:
        """Run ``input_ids [1, T]`` once and fail if a selected weight never went through ``F.linear``."""
        before = {k: a.hits for k, a in self._armed.items()}
        with self:
            self.model(input_ids=input_ids.to(next(self.model.parameters()).device))
        missed = [a.target.name for k, a in self._armed.items() if a.hits == before[k]]
        if missed:
            more = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
            raise ValueError(f"forward 'analog': {missed[0]}{more} never reaches a linear layer's matrix product "
                             "(torch.nn.functional.linear), so it cannot be mapped; leave it off the crossbars or "
                             "use forward 'weights'")
