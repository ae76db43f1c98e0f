"""The analog (CIM) matmul beside bf16 matmul and aihwkit-lightning."""

# The timed lambdas are called inside each loop iteration that defines them, so late binding is harmless.
# ruff: noqa: B023

from __future__ import annotations

import sys

import torch

from simcim.kernels.bench.harness import Env, Row, bench, finish, flop_frac
from simcim.kernels.testing import rel_err


def _aihwkit_lightning_linear(w: torch.Tensor, cfg, env: Env):
    """aihwkit-lightning's Triton analog linear with the closest configuration, or None and why."""
    import os

    os.environ["AIHWKIT_USE_TRITON"] = "1"
    # its kernel reads a module-level float (FLOAT32_TINY), which triton 3.6 refuses unless this is set
    os.environ.setdefault("TRITON_ALLOW_NON_CONSTEXPR_GLOBALS", "1")
    try:
        from aihwkit_lightning.nn import AnalogLinear as AHLinear
        from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig
    except Exception as e:  # not installed, or it does not import here
        return None, f"aihwkit-lightning unavailable: {type(e).__name__}: {e}"
    rpu = TorchInferenceRPUConfig()
    rpu.forward.inp_res = 2 * cfg.dac_levels
    rpu.forward.out_res = 2 * cfg.adc_levels
    rpu.forward.out_bound = 10.0
    rpu.forward.out_noise = 0.02
    rpu.forward.out_noise_per_channel = True
    rpu.mapping.max_input_size = cfg.tile_rows
    rpu.pre_post.input_range.enable = True
    rpu.pre_post.input_range.dynamic = True
    # fp16: with bf16 operands its kernel fails to compile on triton 3.6 ("Both operands must be same
    # dtype. Got fp16 and bf16"); the tensor-core rate of fp16 and bf16 is the same
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=env.device, dtype=torch.float16)
    lin.weight.data.copy_(w)
    try:
        mod = AHLinear.from_digital(lin, rpu).to(env.device)
        mod.train()  # its output noise is applied in training mode only
    except Exception as e:
        return None, f"aihwkit-lightning AnalogLinear failed: {type(e).__name__}: {e}"
    return mod, "fp16; inp_res/out_res 8-bit, out_noise 0.02 per channel, dynamic input range, 512-row tiles"


def bench_analog(env: Env) -> list[Row]:
    from simcim.kernels.analog_matmul import AnalogConfig, analog_matmul, analog_matmul_reference, program_weights

    rows: list[Row] = []
    shapes = tuple((d, d, d) for d in env.analog_sizes) if not env.tiny else ((64, 96, 128),)
    for m, n, k in shapes:
        case = f"M{m} N{n} K{k} tiles512 dac8 adc8"
        x = torch.randn(m, k, device=env.device, dtype=torch.bfloat16)
        w = torch.randn(n, k, device=env.device, dtype=torch.bfloat16) * 0.02
        flops = 2 * m * n * k
        ms = bench(lambda: x @ w.t(), env)
        rows.append(
            Row(
                "analog",
                case,
                "bf16 matmul",
                ms,
                tflops=flops / ms / 1e9,
                roofline_frac=flop_frac(flops / ms / 1e9, env),
            )
        )
        for noisy in (False, True):
            cfg = AnalogConfig(
                tile_rows=512 if not env.tiny else 32,
                dac_bits=8,
                adc_bits=8,
                adc_bound=16.0,
                read_noise=0.02 if noisy else 0.0,
                out_noise=0.01 if noisy else 0.0,
            )
            aw = program_weights(w, cfg)
            candidates = [
                (128, 256, 64, 8, 3, True),
                (128, 256, 64, 8, 3, False),
                (128, 128, 64, 8, 4, True),
                (128, 128, 64, 8, 4, False),
                (128, 128, 64, 4, 4, True),
                (128, 128, 128, 8, 3, True),
            ]
            best: tuple[float, tuple | None] = (float("inf"), None)
            for c in candidates if env.cuda else [None]:
                try:
                    t = bench(lambda c=c: analog_matmul(x, aw, seed=1, config=c), env)
                except Exception as e:
                    print(f"  analog config {c} failed: {type(e).__name__}", file=sys.stderr)
                    continue
                best = min(best, (t, c))
            ms, c = best
            note = f"config={c}"
            err = float("nan")
            if not noisy:
                rs = slice(0, 256)
                err = rel_err(analog_matmul(x[rs], aw, config=c), analog_matmul_reference(x[rs], aw))
            rows.append(
                Row(
                    "analog",
                    case,
                    f"triton analog{' +read noise' if noisy else ' (noise off)'}",
                    ms,
                    tflops=flops / ms / 1e9,
                    roofline_frac=flop_frac(flops / ms / 1e9, env),
                    rel_err=err,
                    note=note,
                )
            )
        if env.cuda:
            mod, why = _aihwkit_lightning_linear(w, cfg, env)
            if mod is not None:
                try:
                    xh = x.half()
                    with torch.no_grad():
                        ms = bench(lambda: mod(xh), env)
                    rows.append(
                        Row(
                            "analog",
                            case,
                            "aihwkit-lightning TritonLinear",
                            ms,
                            tflops=flops / ms / 1e9,
                            roofline_frac=flop_frac(flops / ms / 1e9, env),
                            note=why,
                        )
                    )
                except Exception as e:
                    why = f"aihwkit-lightning forward failed: {type(e).__name__}: {' '.join(str(e).split())[-700:]}"
                    mod = None
            if mod is None:
                print(f"  {why}", file=sys.stderr)
                rows.append(Row("analog", case, "aihwkit-lightning TritonLinear", float("nan"), note=why))
        finish(rows, "bf16 matmul", case)
    return rows
