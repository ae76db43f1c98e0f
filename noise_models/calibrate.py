"""Fit a device model to a chip's measurements with scipy.

Two kinds of table are accepted (CSV, one header line):

* **measurements** -- ``g_target, g_measured, t_read`` and optionally ``device_id``: one row per read of
  one device, conductances in microsiemens, ``t_read`` in seconds after programming. The fitted model
  is the PCM-like family of ``simcim.noise_models.presets.pcm`` with free coefficients: programming-noise
  polynomial (``prog_c0..``), drift exponent mean and spread log-linear in x = G_T / g_max
  (``mu_slope, mu_offset, sigma_slope, sigma_offset``), and read-noise amplitude Q = q_coeff x^-q_exp.
* **sigma curve** -- ``g_target, sigma``: a programming-noise curve (e.g. digitized from a paper);
  the fit is a least-squares polynomial of ``degree`` in x.

The measurement fit is maximum likelihood in log space: for a device read at times t_j, with
L_j = ln((t_j + t0) / t0) and r_j^2 = ln((t_j + t0 + t_read) / (2 t_read)), the vector
y_j = ln(G_j / G_T) is taken as Gaussian with mean -mu_nu(x) L_j and covariance

    (sigma_P(x) / G_T)^2 + sigma_nu(x)^2 L_j L_k + [j = k] Q(x)^2 r_j^2,

which is the model linearised for small relative noise (exact for drift, first order for
programming and read noise). Reads of the same ``device_id`` share the programming error and the
drift exponent; that sharing is what separates programming noise from read noise, so without
device ids every row counts as its own device and the split between them is weakly determined.
The quality report maps each device's Mahalanobis distance under the fitted covariance (chi-square
with as many degrees of freedom as reads, if the model is right) to a z-score: a correct model gives
``chi2_per_dof`` near 1, z-scores with mean 0 and standard deviation 1, and a small
Kolmogorov-Smirnov statistic.

From the shell: ``python -m simcim.noise_models.calibrate MEASUREMENTS.csv [--g-max 25] [--out chip.json]``;
the saved file is then usable as a noise model name (``noise = "chip.json"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from simcim.noise_models.base import DeviceModel
from simcim.noise_models.drift import PowerLawDrift
from simcim.noise_models.programming import ProgrammingNoise
from simcim.noise_models.read import ReadNoise

MEASUREMENT_COLUMNS = ("g_target", "g_measured", "t_read")
CURVE_COLUMNS = ("g_target", "sigma")
T_READ_1F = 250e-9  # the 1/f integration constant of the PCM model; not identifiable from a few reads


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """Fitted parameters, the fit's quality, and the device model they define."""

    kind: str                      # "measurements" or "sigma_curve"
    g_max: float
    t0: float
    params: dict[str, float]
    quality: dict[str, float]
    n_rows: int
    n_devices: int

    def model(self, level: float = 1.0) -> DeviceModel:
        """The fitted device model; ``level`` scales programming and read noise as for ``pcm``."""
        p = self.params
        coeffs = tuple(p[k] for k in sorted((k for k in p if k.startswith("prog_c")),
                                            key=lambda k: int(k[6:])))
        comps: list = [ProgrammingNoise(coeffs, g_ref=self.g_max, scale=level)]
        if self.kind == "measurements":
            comps.append(PowerLawDrift(mu_slope=p["mu_slope"], mu_offset=p["mu_offset"],
                                       sigma_slope=p["sigma_slope"], sigma_offset=p["sigma_offset"],
                                       t0=self.t0))
            comps.append(ReadNoise(q_coeff=p["q_coeff"], q_exp=p["q_exp"], q_floor=1e-12, t_read=T_READ_1F,
                                   t0=self.t0, scale=level))
        return DeviceModel(name="calibrated", g_max=self.g_max, components=tuple(comps),
                           description=f"calibrated from {self.n_rows} rows ({self.kind}), noise x{level:g}")

    def report(self) -> str:
        lines = [f"calibration ({self.kind}): {self.n_rows} rows, {self.n_devices} devices, "
                 f"g_max {self.g_max:g} uS, t0 {self.t0:g} s"]
        lines += [f"  {k:14s} {v: .6g}" for k, v in self.params.items()]
        lines += [f"  quality {k:14s} {v: .4g}" for k, v in self.quality.items()]
        return "\n".join(lines)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")
        return path


def load_calibrated(path: Path, level: float = 1.0) -> DeviceModel:
    """Rebuild the device model of a ``CalibrationResult.save`` file."""
    if not path.is_file():
        raise ValueError(f"calibrated model file not found: {path}")
    try:
        data = json.loads(path.read_text())
        result = CalibrationResult(**data)
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{path}: not a calibration result ({e})") from None
    return result.model(level)


def _read_table(csv: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str]:
    if isinstance(csv, pd.DataFrame):
        df, where = csv.copy(), "table"
    else:
        path = Path(csv)
        if not path.is_file():
            raise ValueError(f"measurement file not found: {path}")
        df, where = pd.read_csv(path, comment="#"), str(path)
    df.columns = [str(c).strip() for c in df.columns]
    return df, where


def _check_columns(df: pd.DataFrame, where: str, numeric: tuple[str, ...], positive: tuple[str, ...]) -> None:
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raw = df[col].iloc[i]
            shown = "empty or NaN" if pd.isna(raw) else (repr(raw) if isinstance(raw, str) else f"{float(raw):g}")
            # counted from the first line after the header (comment lines are not counted)
            raise ValueError(f"{where}: data row {i + 1}: column {col!r} is {shown}, expected a finite number")
        df[col] = values
        low = np.flatnonzero(values <= 0) if col in positive else np.flatnonzero(values < 0)
        if low.size:
            i = int(low[0])
            need = "> 0" if col in positive else ">= 0"
            raise ValueError(f"{where}: data row {i + 1}: column {col!r} is {values[i]:g}, expected {need}")


def calibrate(csv: str | Path | pd.DataFrame, *, g_max: float | None = None, t0: float = 20.0,
              degree: int = 2) -> CalibrationResult:
    """Fit a device model to a measurement table or a sigma-vs-conductance curve (see module doc).

    ``g_max`` defaults to the largest target conductance; ``degree`` is the programming-noise
    polynomial's degree. Every malformed row raises ``ValueError`` naming the file, row and column.
    """
    if not (isinstance(degree, int) and 0 <= degree <= 6):
        raise ValueError(f"degree must be an integer in [0, 6], got {degree!r}")
    if not (t0 > 0 and math.isfinite(t0)):
        raise ValueError(f"t0 must be a finite number of seconds > 0, got {t0}")
    df, where = _read_table(csv)
    if df.empty:
        raise ValueError(f"{where}: no rows")
    if set(CURVE_COLUMNS) <= set(df.columns) and "g_measured" not in df.columns:
        _check_columns(df, where, CURVE_COLUMNS, positive=())
        g_max = _resolve_g_max(df, g_max)
        return _fit_sigma_curve(df, g_max, t0, degree)
    missing = [c for c in MEASUREMENT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)} (a measurement table needs "
                         f"{', '.join(MEASUREMENT_COLUMNS)} [, device_id]; a curve needs "
                         f"{', '.join(CURVE_COLUMNS)})")
    _check_columns(df, where, MEASUREMENT_COLUMNS, positive=("g_target", "g_measured"))
    if "device_id" in df.columns and df["device_id"].isna().any():
        i = int(np.flatnonzero(df["device_id"].isna().to_numpy())[0])
        raise ValueError(f"{where}: data row {i + 1}: column 'device_id' is empty")
    g_max = _resolve_g_max(df, g_max)
    return _fit_measurements(df, g_max, t0, degree)


def _resolve_g_max(df: pd.DataFrame, g_max: float | None) -> float:
    if g_max is None:
        return float(df["g_target"].max())
    if not (g_max > 0 and math.isfinite(g_max)):
        raise ValueError(f"g_max must be a finite number > 0 microsiemens, got {g_max}")
    return float(g_max)


def _fit_sigma_curve(df: pd.DataFrame, g_max: float, t0: float, degree: int) -> CalibrationResult:
    x = df["g_target"].to_numpy() / g_max
    sigma = df["sigma"].to_numpy()
    if len(x) <= degree:
        raise ValueError(f"a degree-{degree} polynomial needs more than {degree} points, got {len(x)}")
    vander = np.vander(x, degree + 1, increasing=True)
    fit = optimize.lsq_linear(vander, sigma)
    pred = vander @ fit.x
    resid = sigma - pred
    r2 = 1.0 - float(resid @ resid) / float(((sigma - sigma.mean()) ** 2).sum())
    params = {f"prog_c{i}": float(c) for i, c in enumerate(fit.x)}
    quality = {"r2": r2, "rms_error_uS": float(np.sqrt(np.mean(resid ** 2))),
               "max_rel_error": float(np.max(np.abs(resid) / np.maximum(np.abs(sigma), 1e-12)))}
    return CalibrationResult("sigma_curve", g_max, t0, params, quality, len(df), len(df))


@dataclasses.dataclass
class _DeviceSums:
    """Per-device sums over its reads, enough to evaluate the likelihood in O(devices).

    With w_j = 1 / r_j^2 the covariance is D + U C U^T, D = Q^2 diag(r^2), U = [1, L], C = diag(vp, s^2);
    the matrix determinant lemma and the push-through identity reduce it to 2x2 algebra per device.
    """

    log_x: np.ndarray
    g_target: np.ndarray
    m: np.ndarray
    log_r2: np.ndarray
    w: np.ndarray
    wl: np.ndarray
    wll: np.ndarray
    wy: np.ndarray
    wly: np.ndarray
    wyy: np.ndarray


def _device_sums(df: pd.DataFrame, g_max: float, t0: float) -> _DeviceSums:
    if "device_id" not in df.columns:
        df = df.assign(device_id=np.arange(len(df)))
    spread = df.groupby("device_id")["g_target"].agg(["min", "max"])
    mixed = (spread["max"] - spread["min"] > 1e-9 * spread["max"]).to_numpy()
    if mixed.any():
        raise ValueError(f"device_id {spread.index[mixed][0]!r} has rows with different g_target")
    t = df["t_read"].to_numpy()
    big_l = np.log1p(t / t0)
    r2 = np.log((t + t0 + T_READ_1F) / (2 * T_READ_1F))
    y = np.log(df["g_measured"].to_numpy() / df["g_target"].to_numpy())
    w = 1.0 / r2
    terms = pd.DataFrame({"device_id": df["device_id"].to_numpy(), "g_target": df["g_target"].to_numpy(),
                          "m": 1.0, "log_r2": np.log(r2), "w": w, "wl": w * big_l, "wll": w * big_l ** 2,
                          "wy": w * y, "wly": w * big_l * y, "wyy": w * y ** 2})
    sums = terms.groupby("device_id", sort=False).agg(
        {"g_target": "first", **{k: "sum" for k in ("m", "log_r2", "w", "wl", "wll", "wy", "wly", "wyy")}})
    cols = {k: sums[k].to_numpy() for k in sums.columns}
    return _DeviceSums(log_x=np.log(cols["g_target"] / g_max), **cols)


_NAMES_TAIL = ("mu_slope", "mu_offset", "sigma_slope", "sigma_offset", "log_q", "q_exp")


def _quad_logdet(theta: np.ndarray, d: _DeviceSums, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Per device: the Mahalanobis form of its residuals and the log-determinant of their covariance."""
    coeffs, (mu_a, mu_b, s_a, s_b, log_q, q_exp) = theta[:degree + 1], theta[degree + 1:]
    x = np.exp(d.log_x)
    vp = ((np.abs(np.polynomial.polynomial.polyval(x, coeffs)) + 1e-9) / d.g_target) ** 2
    mu = mu_a * d.log_x + mu_b
    s2 = (s_a * d.log_x + s_b) ** 2
    q2 = np.exp(2 * log_q - 2 * q_exp * d.log_x)
    # residual e = y + mu L; sums of w e, w L e, w e^2 from the precomputed moments
    we = d.wy + mu * d.wl
    wle = d.wly + mu * d.wll
    wee = d.wyy + 2 * mu * d.wly + mu ** 2 * d.wll
    k11, k12, k22 = d.w / q2, d.wl / q2, d.wll / q2
    b1, b2 = we / q2, wle / q2
    m11, m12, m21, m22 = 1 + vp * k11, vp * k12, s2 * k12, 1 + s2 * k22
    # det M written without cancellation: k11 k22 - k12^2 = (sum w sum w L^2 - (sum w L)^2) / q^4 >= 0
    gram = np.maximum(d.w * d.wll - d.wl ** 2, 0.0) / q2 ** 2
    det = 1 + vp * k11 + s2 * k22 + vp * s2 * gram
    c1, c2 = vp * b1, s2 * b2
    z1 = (m22 * c1 - m12 * c2) / det
    z2 = (m11 * c2 - m21 * c1) / det
    quad = wee / q2 - (b1 * z1 + b2 * z2)
    logdet = d.m * np.log(q2) + d.log_r2 + np.log(det)
    return quad, logdet


def _nll(theta: np.ndarray, d: _DeviceSums, degree: int) -> float:
    with np.errstate(all="ignore"):  # the optimizer may probe extreme parameters; those score +inf
        quad, logdet = _quad_logdet(theta, d, degree)
        total = 0.5 * float(np.sum(quad + logdet + d.m * math.log(2 * math.pi)))
    return total if math.isfinite(total) else 1e300


def _fit_measurements(df: pd.DataFrame, g_max: float, t0: float, degree: int) -> CalibrationResult:
    d = _device_sums(df, g_max, t0)
    # starting point: drift mean by weighted least squares of y = -(a ln x + b) L, noise from the spread
    lx_rows = np.log(df["g_target"].to_numpy() / g_max)
    big_l = np.log1p(df["t_read"].to_numpy() / t0)
    y = np.log(df["g_measured"].to_numpy() / df["g_target"].to_numpy())
    design = np.stack([-lx_rows * big_l, -big_l], axis=1)
    mu_a, mu_b = np.linalg.lstsq(design, y, rcond=None)[0] if big_l.any() else (0.0, 0.0)
    spread = float(np.std(y - design @ np.array([mu_a, mu_b])))
    coeffs0 = np.zeros(degree + 1)
    coeffs0[0] = spread * g_max / 2
    theta0 = np.concatenate([coeffs0, [mu_a, mu_b, 0.0, 0.01, math.log(max(spread, 1e-4) / 4), 0.5]])
    bounds = [(None, None)] * (degree + 1) + [(-1, 1), (-1, 1), (-1, 1), (-1, 1), (-20, 2), (-2, 4)]
    n_reads = len(df)
    res = optimize.minimize(lambda th: _nll(th, d, degree) / n_reads, theta0, method="L-BFGS-B",
                            bounds=bounds,
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000, "maxcor": 30})
    theta = res.x
    names = [f"prog_c{i}" for i in range(degree + 1)] + list(_NAMES_TAIL)
    params = dict(zip(names, map(float, theta)))
    params["q_coeff"] = math.exp(params.pop("log_q"))
    # the likelihood sees only |sigma|; choose the sign that makes the fitted lines positive on the data
    mid_lx = float(np.mean(d.log_x))
    if params["sigma_slope"] * mid_lx + params["sigma_offset"] < 0:
        params["sigma_slope"], params["sigma_offset"] = -params["sigma_slope"], -params["sigma_offset"]
    x_mid = math.exp(mid_lx)
    if sum(params[f"prog_c{i}"] * x_mid ** i for i in range(degree + 1)) < 0:
        for i in range(degree + 1):
            params[f"prog_c{i}"] = -params[f"prog_c{i}"]
    # quality: each device's Mahalanobis form is chi-square with m degrees of freedom under the model;
    # mapped through its CDF and the normal quantile it becomes a z-score that should be N(0, 1)
    quad, _ = _quad_logdet(theta, d, degree)
    z = stats.norm.ppf(np.clip(stats.chi2.cdf(quad, d.m), 1e-15, 1 - 1e-15))
    # drift is identifiable only from reads at two or more times, the programming/read split only from
    # repeated reads of one device: say how much of each the table holds
    quality = {"distinct_read_times": float(df["t_read"].nunique()),
               "reads_per_device": float(d.m.mean()),
               "nll_per_read": float(res.fun), "chi2_per_dof": float(quad.sum() / d.m.sum()),
               "z_mean": float(z.mean()), "z_std": float(z.std()),
               "ks_statistic": float(stats.kstest(z, "norm").statistic), "converged": float(res.success)}
    return CalibrationResult("measurements", g_max, t0, params, quality, len(df), len(d.m))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fit a device model to a measurement table or a sigma curve.")
    ap.add_argument("csv", type=Path)
    ap.add_argument("--g-max", type=float, default=None, help="uS; default: the largest target")
    ap.add_argument("--t0", type=float, default=20.0, help="seconds from programming to the first read")
    ap.add_argument("--degree", type=int, default=2, help="programming-noise polynomial degree")
    ap.add_argument("--out", type=Path, default=None, help="write the fit as JSON (a loadable noise model)")
    args = ap.parse_args(argv)
    try:
        result = calibrate(args.csv, g_max=args.g_max, t0=args.t0, degree=args.degree)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    print(result.report())
    if args.out is not None:
        print(f"wrote {result.save(args.out)}")


if __name__ == "__main__":
    main()
