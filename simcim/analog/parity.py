"""Parity of the analog periphery with aihwkit-lightning and with aihwkit's published formulas.

One ``nn.Linear`` (random weights, Gaussian inputs), several periphery settings. For each, the error of the
analog output against the exact product, ``y_analog - x @ W^T``, is summarized (mean, std, share of tile
outputs at the ADC bound) for ``simcim.analog`` and for the anchor:

* aihwkit-lightning's ``AnalogLinear`` forward (``TorchInferenceRPUConfig``: ``inp_res = 2^b - 2`` steps,
  dynamic abs-max input range per tile, ``out_res``, per-channel ``out_bound`` and ``out_noise``), for what it
  models: DAC, ADC, saturation, output noise, tiles;
* aihwkit's formulas (``rpucuda`` ``ForwardBackwardPassIOManaged``: ``applyIrDrop``, ``PCMRead`` weight noise,
  iterative bound management), written out here in float64 NumPy, for what lightning does not model.

``python -m simcim.analog.parity [--out DIR] [--tokens M]`` prints the Markdown table and writes
``parity.csv``/``parity.md`` to DIR.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from simcim.analog.periphery import PeripheryConfig, analog_mvm
from simcim.experiments.report import write_csv


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    periphery: PeripheryConfig
    tile_rows: int = 512
    anchor: str = "lightning"  # or "formula"
    pcm_read: float = 0.0  # aihwkit w_noise with w_noise_type PCMRead


CASES = (
    Case("DAC 8 / ADC 8, bound 10", PeripheryConfig(dac_bits=8, adc_bits=8, adc_bound=10.0)),
    Case("DAC 6 / ADC 6, bound 10", PeripheryConfig(dac_bits=6, adc_bits=6, adc_bound=10.0)),
    Case("DAC 8 / ADC 10, out noise 0.04", PeripheryConfig(dac_bits=8, adc_bits=10, adc_bound=10.0, out_noise=0.04)),
    Case("DAC 6 / ADC 8, out noise 0.04", PeripheryConfig(dac_bits=6, adc_bits=8, adc_bound=10.0, out_noise=0.04)),
    Case("DAC 8 / ADC 8, bound 2 (saturating)", PeripheryConfig(dac_bits=8, adc_bits=8, adc_bound=2.0)),
    Case("DAC 8 / ADC 8, 2 tiles of 256", PeripheryConfig(dac_bits=8, adc_bits=8, adc_bound=10.0), tile_rows=256),
    Case("IR drop 1.0 (0.35 ohm, 5 uS), DAC 8 / ADC 8",
         PeripheryConfig(dac_bits=8, adc_bits=8, adc_bound=10.0, ir_drop=1.0, g_max=5.0), anchor="formula"),
    Case("PCM read noise 0.0175, DAC 8 / ADC 8", PeripheryConfig(dac_bits=8, adc_bits=8, adc_bound=10.0),
         anchor="formula", pcm_read=0.0175),
    Case("bound management, bound 2", PeripheryConfig(dac_bits=8, adc_bits=8, adc_bound=2.0,
                                                      bound_management="iterative"), anchor="formula"),
)


def problem(tokens: int, seed: int = 0, k: int = 512, n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 0.05, torch.randn(tokens, k, generator=g)


def tile_unit_scales(w: torch.Tensor, tile_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = w.shape
    s = w.reshape(n, k // tile_rows, tile_rows).abs().amax(-1)
    return (w.reshape(n, -1, tile_rows) / s[..., None]).reshape(n, k), s.t().contiguous()


def ours(case: Case, w: torch.Tensor, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and a [M, T, N] map of saturated tile outputs."""
    unit, scales = tile_unit_scales(w, case.tile_rows)
    var = case.pcm_read**2 * unit.abs() if case.pcm_read else None  # PCMRead: var = w_noise^2 |w| per weight
    cfg = dataclasses.replace(case.periphery, read_sigma=None) if var is not None else case.periphery
    y = analog_mvm(x, unit, scales, cfg, case.tile_rows, read_var=var,
                   generator=torch.Generator().manual_seed(seed))
    return y, _saturated(case, w, x, y)


def _saturated(case: Case, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Which tile outputs sit at the ADC bound (single tile: read back from ``y``; else None)."""
    if case.tile_rows != w.shape[1] or case.periphery.bound_management != "none":
        return torch.tensor([])
    r = x.abs().amax(-1, keepdim=True)
    z = y / (r * w.abs().amax(-1)[None])
    return z.abs() >= case.periphery.adc_bound * (1 - 1e-5)


def lightning(case: Case, w: torch.Tensor, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from aihwkit_lightning.nn import AnalogLinear
    from aihwkit_lightning.simulator.configs import TorchInferenceRPUConfig, WeightClipType

    p = case.periphery
    cfg = TorchInferenceRPUConfig()
    cfg.forward.inp_res = 2**p.dac_bits - 2
    cfg.forward.out_res = 2**p.adc_bits - 2
    cfg.forward.out_bound = p.adc_bound
    cfg.forward.out_noise = p.out_noise
    cfg.forward.out_noise_per_channel = True
    cfg.clip.type = WeightClipType.LAYER_GAUSSIAN_PER_CHANNEL  # per-column w_max in the bound; clips only in training
    cfg.pre_post.input_range.enable = True
    cfg.pre_post.input_range.dynamic = True
    cfg.mapping.max_input_size = case.tile_rows
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    lin.weight.data.copy_(w)
    layer = AnalogLinear.from_digital(lin, cfg)
    layer.train(p.out_noise > 0)  # lightning draws output noise in training mode only
    torch.manual_seed(seed)
    with torch.no_grad():
        y = layer(x)
    return y, _saturated(case, w, x, y)


def formula(case: Case, w: torch.Tensor, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """aihwkit's analog forward for one tile, vector by vector semantics, float64 NumPy."""
    p = case.periphery
    rng = np.random.default_rng(seed)
    wd, xd = w.double().numpy(), x.double().numpy()
    smax = np.abs(wd).max(1)  # per-column mapping scale
    u = wd / smax[:, None]
    n_in = u.shape[1]
    dac_step, adc_step = 2.0 / (2**p.dac_bits - 2), 2.0 * p.adc_bound / (2**p.adc_bits - 2)
    out = np.empty((xd.shape[0], u.shape[0]))
    sat = np.zeros(out.shape, dtype=bool)
    for m, xv in enumerate(xd):
        amax = np.abs(xv).max() or 1.0
        reduction = 1.0
        while True:
            v = np.clip(np.round(xv / (amax * reduction) / dac_step) * dac_step, -1, 1)
            z = u @ v
            if p.ir_drop > 0:
                a = (np.abs(u) @ np.abs(v)) * n_in / p.g_ratio
                c = a * (a * (0.05 * a - 0.2) + 0.5)
                j = np.arange(n_in)
                z = z - p.ir_drop * c * (u @ (v * (1 - (1 - j / n_in) ** 2)))
            if case.pcm_read:
                z = z + case.pcm_read * np.sqrt(np.abs(u) @ (v * v)) * rng.standard_normal(z.shape)
            q = np.round(z / adc_step) * adc_step
            hit = np.abs(q) > p.adc_bound
            q = np.clip(q, -p.adc_bound, p.adc_bound)
            if p.bound_management == "none" or not hit.any() or 2 * reduction > p.max_bm_factor:
                break
            reduction *= 2
        out[m] = q * smax * amax * reduction
        sat[m] = hit
    return torch.from_numpy(out).float(), torch.from_numpy(sat)


def stats(y: torch.Tensor, ideal: torch.Tensor, sat: torch.Tensor) -> dict[str, float]:
    err = (y.double() - ideal)
    scale = float(ideal.std())
    return {"mean": float(err.mean()) / scale, "std": float(err.std()) / scale,
            "saturated": float(sat.float().mean()) if sat.numel() else math.nan}


def run(tokens: int = 2048, seed: int = 0) -> list[dict[str, object]]:
    w, x = problem(tokens, seed)
    ideal = x.double() @ w.double().t()
    rows = []
    for case in CASES:
        anchor = lightning if case.anchor == "lightning" else formula
        y_ours, sat_ours = ours(case, w, x, seed + 1)
        y_anchor, sat_anchor = anchor(case, w, x, seed + 2)
        a, b = stats(y_ours, ideal, sat_ours), stats(y_anchor, ideal, sat_anchor)
        rows.append({"setting": case.name, "anchor": "aihwkit-lightning" if case.anchor == "lightning"
                     else "aihwkit formulas", **{f"ours_{k}": v for k, v in a.items()},
                     **{f"anchor_{k}": v for k, v in b.items()},
                     "std_diff_pct": 100.0 * (a["std"] / b["std"] - 1.0)})
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    def f(v: object) -> str:
        return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| setting | anchor | mean (ours / anchor) | std (ours / anchor) | std diff | saturated (ours / anchor) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['anchor']} | {f(r['ours_mean'])} / {f(r['anchor_mean'])} | "
                     f"{f(r['ours_std'])} / {f(r['anchor_std'])} | {r['std_diff_pct']:+.1f}% | "
                     f"{f(r['ours_saturated'])} / {f(r['anchor_saturated'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="folder for parity.csv and parity.md")
    ap.add_argument("--tokens", type=int, default=2048, help="input vectors (tokens)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = run(args.tokens, args.seed)
    table = markdown(rows)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "parity.md").write_text(table + "\n")
        write_csv(args.out / "parity.csv", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
