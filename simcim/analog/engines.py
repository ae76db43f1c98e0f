"""Which engine computes an analog product: the PyTorch reference or the Triton kernel.

The kernel (``simcim.kernels.analog_matmul``) covers the common periphery: abs-max input range per token
and tile or none, DAC of 2-9 bits (codes exact in bf16, its tensor-core operand), ADC of 2-16 bits, read
noise per weight (the device model's variance, in bf16, accumulated by a second product beside the first)
or a fixed sigma, output noise, unit weights in bf16. IR drop, bound management and 1-bit converters run
on the reference. ``engine="auto"`` takes the
kernel for CUDA tensors when it covers the configuration, ``"triton"`` insists on it (also on CPU under
``TRITON_INTERPRET=1``), ``"torch"`` always takes the reference.
"""

from __future__ import annotations

import torch

from simcim.analog.periphery import Counters, PeripheryConfig


def kernel_covers(cfg: PeripheryConfig, tile_rows: int, read_var: torch.Tensor | None) -> str | None:
    """None when the kernel computes this configuration, else why not."""
    if tile_rows < 16 or tile_rows & (tile_rows - 1):
        return f"tile_rows {tile_rows} is not a power of two >= 16"
    if not 2 <= cfg.dac_bits <= 9:
        return f"dac_bits {cfg.dac_bits} is outside 2-9"
    if cfg.adc_bits < 2:
        return "a 1-bit ADC"
    if cfg.ir_drop > 0:
        return "IR drop"
    if cfg.bound_management != "none":
        return "bound management"
    return None


def use_kernel(engine: str, x: torch.Tensor, cfg: PeripheryConfig, tile_rows: int,
               read_var: torch.Tensor | None) -> bool:
    if engine == "torch":
        return False
    why = kernel_covers(cfg, tile_rows, read_var)
    if engine == "triton":
        if why is not None:
            raise ValueError(f"engine 'triton': the kernel does not model {why}; use engine 'auto' or 'torch'")
        return True
    return why is None and x.is_cuda


def kernel_mvm(x: torch.Tensor, unit: torch.Tensor, scales: torch.Tensor, cfg: PeripheryConfig, tile_rows: int,
               bias: torch.Tensor | None, generator: torch.Generator, counters: Counters | None,
               read_var: torch.Tensor | None = None, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """The product through ``analog_matmul``; its Philox seed is drawn from ``generator``. With ``offsets``,
    ``unit [G, N, K]``, ``scales [G, T, N]`` and ``read_var`` hold one matrix per group of sorted rows."""
    from simcim.kernels.analog_matmul import AnalogConfig, AnalogWeights, analog_matmul

    kcfg = AnalogConfig(tile_rows=tile_rows, dac_bits=cfg.dac_bits, adc_bits=cfg.adc_bits, adc_bound=cfg.adc_bound,
                        read_noise=cfg.read_sigma or 0.0, out_noise=cfg.out_noise, input_range=cfg.input_range,
                        input_bound=cfg.input_bound, range_per_tile=True)
    var = read_var.to(torch.bfloat16).contiguous() if cfg.read_sigma is None and read_var is not None else None
    aw = AnalogWeights(unit.to(torch.bfloat16).contiguous(), scales.float().contiguous(), kcfg, var)
    seed = int(torch.randint(0, 2**31 - 2**20, (1,), generator=generator, device=generator.device))
    y = analog_matmul(x.contiguous(), aw, bias.float() if bias is not None else None, seed=seed, offsets=offsets)
    if counters is not None:
        counters.uncounted += 1  # the kernel does not count saturated conversions
    return y
