"""Reproduce the published PCM statistics with the ``pcm`` preset, as Markdown tables.

    python -m simcim.noise_models.reproduce [--devices 200000] [--seed 0]

Each "published" value is the IBM model's formula with the coefficients of Nandakumar et al. (ICECS
2019) / Joshi et al. (Nat. Commun. 2020), the same numbers aihwkit's PCMLikeNoiseModel uses; each
"ours" value is measured on conductances sampled from ``device_model("pcm", 1.0)``: programming noise
as the sample sigma of G - G_T right after programming, drift exponents recovered by a least-squares
log-log fit of each device's reads at 1 min .. 1 year (one chip followed through time), read noise as
the relative sigma of a read with programming noise and drift switched off.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from simcim.noise_models.base import DeviceModel
from simcim.noise_models.presets import PCM_DRIFT, PCM_G_MAX_US, PCM_PROG_COEFFS, PCM_READ, pcm
from simcim.noise_models.read import ReadNoise

TIMES = (60.0, 3600.0, 86400.0, 2.592e6, 3.1536e7)  # 1 min, 1 h, 1 day, 30 days, 1 year
HOUR, DAY, YEAR = 3600.0, 86400.0, 3.1536e7


def published_prog_sigma(x: float) -> float:
    return max(sum(c * x ** i for i, c in enumerate(PCM_PROG_COEFFS)), 0.0)


def published_nu(x: float) -> tuple[float, float]:
    lx = math.log(max(x, 1e-7))
    d = PCM_DRIFT
    mu = min(max(d["mu_slope"] * lx + d["mu_offset"], d["mu_min"]), d["mu_max"])
    sd = min(max(d["sigma_slope"] * lx + d["sigma_offset"], d["sigma_min"]), d["sigma_max"])
    return mu, sd


def published_read_rel(x: float, t: float) -> float:
    r = PCM_READ
    q = min(r["q_coeff"] / max(max(x, 1e-7) ** r["q_exp"], r["q_floor"]), r["q_max"])
    return q * math.sqrt(math.log((t + r["t0"] + r["t_read"]) / (2 * r["t_read"])))


def programming_table(n: int, seed: int) -> list[str]:
    model = pcm(1.0)
    rows = ["| G_T (uS) | x = G_T/g_max | published sigma_P (uS) | ours (uS) | ours / published |",
            "|---:|---:|---:|---:|---:|"]
    for i, g_t in enumerate((0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 22.5, 25.0)):
        target = torch.full((n,), g_t, dtype=torch.float64)
        g = model.program(target, torch.Generator().manual_seed(seed + 100 * i))
        ours = float((g - g_t).std())
        pub = published_prog_sigma(g_t / PCM_G_MAX_US)
        rows.append(f"| {g_t:g} | {g_t / PCM_G_MAX_US:.2f} | {pub:.4f} | {ours:.4f} | {ours / pub:.4f} |")
    return rows


JOSHI_CURVE = Path(__file__).resolve().parent.parent / "tests" / "data" / "pcm_prog_sigma_joshi2020_fig3b.csv"


def digitization_table(curve: Path, n: int, seed: int) -> list[str]:
    """The preset's programming noise beside an independent digitization of Joshi 2020 Fig. 3(b)."""
    from simcim.noise_models.calibrate import calibrate

    fit = calibrate(curve, g_max=PCM_G_MAX_US).model(1.0).components[0]
    model = pcm(1.0)
    rows = ["| G_T (uS) | Nandakumar 2019 / aihwkit sigma_P | Joshi 2020 Fig. 3(b) points (CrossSim fit) "
            "| our calibration from those points | ours sampled from the preset |",
            "|---:|---:|---:|---:|---:|"]
    import pandas as pd

    points = pd.read_csv(curve, comment="#")
    for i, (g_t, sigma) in enumerate(zip(points["g_target"], points["sigma"])):
        target = torch.full((n,), float(g_t), dtype=torch.float64)
        sampled = float((model.program(target, torch.Generator().manual_seed(seed + 7 * i)) - g_t).std())
        calibrated = float(fit.sigma(torch.tensor([float(g_t)]), PCM_G_MAX_US)[0])
        rows.append(f"| {g_t:g} | {published_prog_sigma(g_t / PCM_G_MAX_US):.4f} | {sigma:.3g} "
                    f"| {calibrated:.4f} | {sampled:.4f} |")
    return rows


def drift_table(n: int, seed: int) -> list[str]:
    drift_only = DeviceModel("pcm_drift", PCM_G_MAX_US, (pcm(1.0).components[1],))
    big_l = torch.tensor([math.log1p(t / PCM_DRIFT["t0"]) for t in TIMES], dtype=torch.float64)
    rows = ["| x = G_T/g_max | published mu_nu, sigma_nu | expected mean, sd of nu = abs(N) | ours mean, sd "
            "| mean G(1 day)/G_T published | ours | mean G(1 year)/G_T published | ours |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, x in enumerate((0.01, 0.05, 0.1, 0.25, 0.5, 1.0)):
        g_t = x * PCM_G_MAX_US
        target = torch.full((n,), g_t, dtype=torch.float64)
        logs = []
        for t in TIMES:
            g = drift_only.read(target, target, t, torch.Generator().manual_seed(seed + 1),
                                device_generator=torch.Generator().manual_seed(seed + 100 * i))
            logs.append(torch.log(g / g_t))
        y = torch.stack(logs)
        nu = -(big_l[:, None] * y).sum(0) / (big_l ** 2).sum()
        mu, sd = published_nu(x)
        # E[G(t)/G_T] for nu ~ |N(mu, sd)|: folded-normal average of exp(-nu L), by quadrature
        z = torch.linspace(-8, 8, 4001, dtype=torch.float64)
        w = torch.exp(-z ** 2 / 2)
        w /= w.sum()

        nu_folded = (mu + sd * z).abs()
        folded_mean = float((w * nu_folded).sum())
        folded_sd = math.sqrt(max(float((w * nu_folded ** 2).sum()) - folded_mean ** 2, 0.0))

        def expected_ratio(t: float, nu_folded: torch.Tensor = nu_folded, w: torch.Tensor = w) -> float:
            return float((w * torch.exp(-nu_folded * math.log1p(t / PCM_DRIFT["t0"]))).sum())

        ours_day = float(y[TIMES.index(DAY)].exp().mean())
        ours_year = float(y[TIMES.index(YEAR)].exp().mean())
        rows.append(f"| {x:g} | {mu:.4f}, {sd:.4f} | {folded_mean:.4f}, {folded_sd:.4f} "
                    f"| {float(nu.mean()):.4f}, {float(nu.std()):.4f} "
                    f"| {expected_ratio(DAY):.4f} | {ours_day:.4f} | {expected_ratio(YEAR):.4f} "
                    f"| {ours_year:.4f} |")
    return rows


def read_table(n: int, seed: int) -> list[str]:
    read_only = DeviceModel("pcm_read", PCM_G_MAX_US, (ReadNoise(**PCM_READ),))
    rows = ["| x = G_T/g_max | t | published sigma_R/G | ours |", "|---:|---:|---:|---:|"]
    for i, x in enumerate((0.05, 0.25, 1.0)):
        g_t = x * PCM_G_MAX_US
        target = torch.full((n,), g_t, dtype=torch.float64)
        for j, (name, t) in enumerate((("0 (t0 = 20 s)", 0.0), ("1 hour", HOUR), ("1 day", DAY),
                                       ("1 year", YEAR))):
            g = read_only.read(target, target, t, torch.Generator().manual_seed(seed + 100 * i + j))
            ours = float((g / g_t - 1).std())
            rows.append(f"| {x:g} | {name} | {published_read_rel(x, t):.4f} | {ours:.4f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=200_000, help="devices sampled per table row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--curve", type=Path, default=JOSHI_CURVE,
                    help="a digitized sigma-vs-conductance curve (CSV: g_target, sigma) to compare with")
    args = ap.parse_args(argv)
    if args.devices < 100:
        raise SystemExit(f"--devices must be >= 100, got {args.devices}")
    print(f"Programming noise ({args.devices} devices per row)\n")
    print("\n".join(programming_table(args.devices, args.seed)))
    if args.curve.is_file():
        print(f"\nProgramming noise, second digitization ({args.curve.name})\n")
        print("\n".join(digitization_table(args.curve, args.devices, args.seed)))
    print(f"\nDrift (log-log fit over reads at 1 min, 1 h, 1 day, 30 days, 1 year; {args.devices} devices)\n")
    print("\n".join(drift_table(args.devices, args.seed)))
    print(f"\nRead (1/f) noise ({args.devices} devices per row)\n")
    print("\n".join(read_table(args.devices, args.seed)))


if __name__ == "__main__":
    main()
