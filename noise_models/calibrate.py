"""Fit a device model to a chip's measurements with scipy.

Two kinds of table are accepted (CSV, one header line):

* **measurements** -- ``g_target, g_measured, t_read`` and optionally ``device_id``: one row per read of
  one device, conductances in microsiemens, ``t_read`` in seconds after programming. The fitted model
  is the PCM-like family of ``noise_models.presets.pcm`` with free coefficients: programming-noise
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
The quality report whitens each device's residuals with the fitted covariance: a correct model
gives z-scores with mean 0 and standard deviation 1 (and a small Kolmogorov-Smirnov statistic).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from noise_models.base import DeviceModel
from noise_models.drift import PowerLawDrift
from noise_models.programming import ProgrammingNoise
from noise_models.read import ReadNoise

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
            # row numbers as a spreadsheet shows them: header is row 1
            raise ValueError(f"{where}: row {i + 2}: column {col!r} is {df[col].iloc[i]!r}, "
                             f"expected a finite number")
        df[col] = values
        low = np.flatnonzero(values <= 0) if col in positive else np.flatnonzero(values < 0)
        if low.size:
            i = int(low[0])
            need = "> 0" if col in positive else ">= 0"
            raise ValueError(f"{where}: row {i + 2}: column {col!r} is {values[i]:g}, expected {need}")


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
        _check_columns(df, where, CURVE_COLUMNS, positive=("g_target",))
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
        raise ValueError(f"{where}: row {i + 2}: column 'device_id' is empty")
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
class _Group:
    """Devices read at the same set of times: y is (devices, reads)."""

    y: np.ndarray
    log_x: np.ndarray
    g_target: np.ndarray
    big_l: np.ndarray
    r2: np.ndarray


def _groups(df: pd.DataFrame, g_max: float, t0: float) -> list[_Group]:
    if "device_id" not in df.columns:
        df = df.assign(device_id=np.arange(len(df)))
    df = df.sort_values(["device_id", "t_read"], kind="stable")
    spread = df.groupby("device_id")["g_target"].agg(["min", "max"])
    if (spread["max"] - spread["min"] > 1e-9 * spread["max"]).any():
        dev = spread.index[(spread["max"] - spread["min"] > 1e-9 * spread["max"]).to_numpy()][0]
        raise ValueError(f"device_id {dev!r} has rows with different g_target")
    times = df.groupby("device_id")["t_read"].apply(lambda s: tuple(np.round(s.to_numpy(), 9)))
    out = []
    for key, ids in times.groupby(times).groups.items():
        sub = df[df["device_id"].isin(ids)]
        m = len(key)
        gt = sub["g_target"].to_numpy().reshape(-1, m)[:, 0]
        y = np.log(sub["g_measured"].to_numpy().reshape(-1, m) / gt[:, None])
        t = np.asarray(key, dtype=float)
        out.append(_Group(y=y, log_x=np.log(gt / g_max), g_target=gt, big_l=np.log1p(t / t0),
                          r2=np.log((t + t0 + T_READ_1F) / (2 * T_READ_1F))))
    return out


_NAMES_TAIL = ("mu_slope", "mu_offset", "sigma_slope", "sigma_offset", "log_q", "q_exp")


def _unpack(theta: np.ndarray, degree: int) -> tuple[np.ndarray, ...]:
    return theta[:degree + 1], *theta[degree + 1:]


def _cov_mean(theta: np.ndarray, grp: _Group, g_max: float, degree: int) -> tuple[np.ndarray, np.ndarray]:
    coeffs, mu_a, mu_b, s_a, s_b, log_q, q_exp = _unpack(theta, degree)
    x = np.exp(grp.log_x)
    sig_p = np.abs(np.polynomial.polynomial.polyval(x, coeffs)) + 1e-9
    vp = (sig_p / grp.g_target) ** 2
    mu = mu_a * grp.log_x + mu_b
    s_nu = np.abs(s_a * grp.log_x + s_b)
    q2 = np.exp(2 * log_q - 2 * q_exp * grp.log_x)
    big_l = grp.big_l
    cov = (vp[:, None, None] + (s_nu ** 2)[:, None, None] * np.outer(big_l, big_l)[None]
           + q2[:, None, None] * np.diag(grp.r2)[None])
    mean = -mu[:, None] * big_l[None, :]
    return cov, mean


def _nll(theta: np.ndarray, groups: list[_Group], g_max: float, degree: int) -> float:
    total = 0.0
    for grp in groups:
        cov, mean = _cov_mean(theta, grp, g_max, degree)
        chol = np.linalg.cholesky(cov)
        resid = (grp.y - mean)[..., None]
        z = np.linalg.solve(chol, resid)[..., 0]
        logdet = 2 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum()
        total += 0.5 * (float((z ** 2).sum()) + logdet + z.size * math.log(2 * math.pi))
    return total


def _fit_measurements(df: pd.DataFrame, g_max: float, t0: float, degree: int) -> CalibrationResult:
    groups = _groups(df, g_max, t0)
    n_dev = sum(len(g.y) for g in groups)
    # starting point: drift mean by linear least squares of y = -(a ln x + b) L, noise from the spread
    lx = np.concatenate([np.repeat(g.log_x, g.y.shape[1]) for g in groups])
    big_l = np.concatenate([np.tile(g.big_l, len(g.y)) for g in groups])
    y = np.concatenate([g.y.ravel() for g in groups])
    design = np.stack([-lx * big_l, -big_l], axis=1)
    (mu_a, mu_b) = np.linalg.lstsq(design, y, rcond=None)[0] if big_l.any() else (0.0, 0.0)
    spread = float(np.std(y - design @ np.array([mu_a, mu_b])))
    coeffs0 = np.zeros(degree + 1)
    coeffs0[0] = spread * g_max / 2
    theta0 = np.concatenate([coeffs0, [mu_a, mu_b, 0.0, 0.01, math.log(max(spread, 1e-4) / 4), 0.5]])
    bounds = ([(None, None)] * (degree + 1)
              + [(-1, 1), (-1, 1), (-1, 1), (-1, 1), (-20, 2), (-2, 4)])
    scale = max(sum(g.y.size for g in groups), 1)
    res = optimize.minimize(lambda th: _nll(th, groups, g_max, degree) / scale, theta0,
                            method="L-BFGS-B", bounds=bounds,
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000, "maxcor": 30})
    theta = res.x
    names = [f"prog_c{i}" for i in range(degree + 1)] + list(_NAMES_TAIL)
    params = dict(zip(names, map(float, theta)))
    params["q_coeff"] = math.exp(params.pop("log_q"))
    # the likelihood sees only |sigma|; choose the sign that makes the fitted lines positive on the data
    mid_lx = float(np.mean(lx))
    if params["sigma_slope"] * mid_lx + params["sigma_offset"] < 0:
        params["sigma_slope"], params["sigma_offset"] = -params["sigma_slope"], -params["sigma_offset"]
    x_mid = math.exp(mid_lx)
    if sum(params[f"prog_c{i}"] * x_mid ** i for i in range(degree + 1)) < 0:
        for i in range(degree + 1):
            params[f"prog_c{i}"] = -params[f"prog_c{i}"]
    # quality: whitened residuals should be standard normal
    zs = []
    for grp in groups:
        cov, mean = _cov_mean(theta, grp, g_max, degree)
        z = np.linalg.solve(np.linalg.cholesky(cov), (grp.y - mean)[..., None])[..., 0]
        zs.append(z.ravel())
    z = np.concatenate(zs)
    quality = {"nll_per_read": float(res.fun), "z_mean": float(z.mean()), "z_std": float(z.std()),
               "ks_statistic": float(stats.kstest(z, "norm").statistic),
               "converged": float(res.success)}
    return CalibrationResult("measurements", g_max, t0, params, quality, len(df), n_dev)
