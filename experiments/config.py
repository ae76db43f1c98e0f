"""Experiment configs: TOML files parsed into typed, validated trials.

A config file has four tables:

    [experiment]   name, kind (a registered experiment kind), seeds (a list, or a count n for 0..n-1),
                   description (optional)
    [params]       the kind's parameters; the kind's ``Params`` dataclass says which exist, their
                   types, ranges and defaults
    [sweep]        optional: each key is a parameter and its value a list; the lists are crossed
                   (grid). ``[sweep.zip]`` (or several ``[[sweep.zip]]``) holds lists of equal
                   length that are paired element-wise, then crossed with the grid.
    [report]       optional: x (swept parameter on the x axis), lines (parameter giving one line
                   per value), metrics (list), logx (bool)

Every problem is a ``ConfigError`` whose message is one line naming the file, the key and
what was expected. Each trial resolves to a canonical JSON form (all parameters, defaults
filled in, plus kind and seed); its SHA-256 prefix is the trial id.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ReportSpec",
    "Trial",
    "canonical_json",
    "load_config",
    "param",
    "parse_config",
    "trial_id",
    "validate_params",
]


class ConfigError(ValueError):
    """A config problem, reported to the user as one line (no traceback), exit status 2."""


def param(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    must_exist: bool = False,
    help: str = "",
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with validation metadata: numeric bounds, file existence, help text."""
    meta = {"ge": ge, "le": le, "gt": gt, "lt": lt, "must_exist": must_exist, "help": help}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------------------- value checking

def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        inner = " or ".join(_type_name(a) for a in args)
        return f"{inner} (or omitted)" if len(args) < len(get_args(tp)) else inner
    if origin in (list, tuple, Sequence):
        args = get_args(tp)
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin is dict:
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            Path: "a file path (string)"}.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to type ``tp``, or raise ConfigError naming ``where``."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        (inner,) = get_args(tp)[:1] or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where}: expected a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Path:
        if isinstance(value, str) and value:
            return Path(value)
    else:  # pragma: no cover - a Params class used an unsupported annotation
        raise TypeError(f"unsupported parameter type {tp!r} at {where}")
    raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def _check_bounds(value: Any, meta: Mapping[str, Any], where: str, base_dir: Path | None) -> None:
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            lo_ge, hi_le, lo_gt, hi_lt = meta.get("ge"), meta.get("le"), meta.get("gt"), meta.get("lt")
            ok = ((lo_ge is None or v >= lo_ge) and (hi_le is None or v <= hi_le)
                  and (lo_gt is None or v > lo_gt) and (hi_lt is None or v < hi_lt))
            if not ok:
                lo = f"[{lo_ge}" if lo_ge is not None else (f"({lo_gt}" if lo_gt is not None else "(-inf")
                hi = f"{hi_le}]" if hi_le is not None else (f"{hi_lt})" if hi_lt is not None else "inf)")
                raise ConfigError(f"{where}: expected a value in {lo}, {hi}, got {v!r}")
        if meta.get("must_exist") and isinstance(v, Path):
            path = v if v.is_absolute() or base_dir is None else base_dir / v
            if not path.exists():
                raise ConfigError(f"{where}: file not found: {v}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def validate_params(cls: type, raw: Mapping[str, Any], *, prefix: str = "params",
                    base_dir: Path | None = None) -> Any:
    """Build a ``cls`` dataclass instance from a raw mapping, checking keys, types and ranges."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}.{key}: unknown key (known: {known})")
    kwargs = {}
    for name, f in fields.items():
        where = f"{prefix}.{name}"
        if name in raw:
            value = _coerce(raw[name], hints[name], where)
            _check_bounds(value, f.metadata, where, base_dir)
            kwargs[name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key ({_type_name(hints[name])})")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as e:  # __post_init__ cross-field checks
        raise ConfigError(f"{prefix}: {e}") from None
    return obj


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def canonical_json(obj: Any) -> str:
    """The canonical text of a config: sorted keys, no spaces, no NaN."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def trial_id(kind: str, params: Any, seed: int) -> str:
    """Stable identifier of a trial: a hash of its kind, resolved parameters and seed."""
    text = canonical_json({"kind": kind, "params": params, "seed": seed})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- config objects

@dataclasses.dataclass(frozen=True)
class Trial:
    """One unit of work: a kind, its fully resolved parameters and a seed."""

    kind: str
    params: Any
    seed: int
    swept: tuple[str, ...] = ()

    @functools.cached_property
    def id(self) -> str:
        return trial_id(self.kind, self.params, self.seed)

    def canonical(self) -> dict[str, Any]:
        return {"kind": self.kind, "params": _jsonable(self.params), "seed": self.seed}


@dataclasses.dataclass(frozen=True)
class ReportSpec:
    x: str | None = None
    lines: str | None = None
    metrics: tuple[str, ...] = ()
    logx: bool = False


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str
    kind: str
    seeds: tuple[int, ...]
    base: Mapping[str, Any]
    grid: Mapping[str, list[Any]]
    zips: tuple[Mapping[str, list[Any]], ...]
    report: ReportSpec
    source: str
    description: str = ""
    base_dir: Path | None = None
    replaced_axes: tuple[str, ...] = ()  # swept keys that a --set params.KEY override fixed to one value

    @property
    def swept(self) -> tuple[str, ...]:
        keys = list(self.grid)
        for z in self.zips:
            keys.extend(z)
        return tuple(keys)

    def count(self, *, sweep: bool = True) -> int:
        """How many trials :meth:`trials` expands to (before identical ones are merged)."""
        n = len(self.seeds)
        if sweep:
            for values in self.grid.values():
                n *= len(values)
            for group in self.zips:
                n *= len(next(iter(group.values())))
        return n

    def _axes(self) -> list[list[tuple[dict[str, Any], dict[str, str]]]]:
        """Each sweep axis (a grid key or a zip group) as its points: (values, where each came from)."""
        axes = [[({key: v}, {key: f"sweep.{key}[{i}]"}) for i, v in enumerate(values)]
                for key, values in self.grid.items()]
        for group in self.zips:
            keys = list(group)
            axes.append([({k: group[k][i] for k in keys}, {k: f"sweep.zip.{k}[{i}]" for k in keys})
                         for i in range(len(group[keys[0]]))])
        return axes

    def _combos(self, sweep: bool):
        """(sweep values, where each came from) for every point of the sweep, lazily."""
        if not sweep:
            yield {}, {}
            return
        for point in itertools.product(*self._axes()):
            combo: dict[str, Any] = {}
            where: dict[str, str] = {}
            for values, locs in point:
                combo.update(values)
                where.update(locs)
            yield combo, where

    def _validate(self, cls: type, raw: Mapping[str, Any], where: Mapping[str, str]) -> Any:
        try:
            return validate_params(cls, raw, base_dir=self.base_dir)
        except ConfigError as e:
            msg = str(e)
            for key, loc in where.items():  # point at the sweep entry that caused it
                if msg.startswith(f"params.{key}:") or msg.startswith(f"params.{key}["):
                    msg = loc + msg[len(f"params.{key}"):]
                    break
            raise ConfigError(f"{self.source}: {msg}") from None

    def validate_values(self) -> None:
        """Validate every swept value and every [params] value once, as a single value is validated.

        Each value of each sweep axis is checked with the first value of every other axis, so a bad
        one is refused before any trial runs, at a cost of one check per value, not per trial.
        """
        from simcim.experiments.kinds import params_class

        cls = params_class(self.kind, where=f"{self.source}: experiment.kind")
        first = next(self._combos(True))
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        axes = self._axes()
        if required <= set(self.base) or not axes:
            self._validate(cls, self.base, {})
        for axis in axes:
            for values, locs in axis:
                self._validate(cls, {**self.base, **first[0], **values}, {**first[1], **locs})

    def trials(self, *, sweep: bool = True, progress: bool = False) -> list[Trial]:
        """Expand into validated trials: every sweep combination times every seed.

        With ``progress``, a progress bar counts the expansion (a sweep of a million points takes
        a while to validate and hash).
        """
        from simcim.experiments.kinds import params_class

        cls = params_class(self.kind, where=f"{self.source}: experiment.kind")
        swept = self.swept if sweep else ()
        out: list[Trial] = []
        seen: set[str] = set()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.count(sweep=sweep), desc="expanding", unit="trial", dynamic_ncols=True,
                       mininterval=0.5)
        for combo, where in self._combos(sweep):
            params = self._validate(cls, {**self.base, **combo}, where)
            for seed in self.seeds:
                t = Trial(self.kind, params, seed, swept=swept)
                if t.id not in seen:
                    seen.add(t.id)
                    out.append(t)
            if bar is not None:
                bar.update(len(self.seeds))
        if bar is not None:
            bar.close()
        return out


_TOP = {"experiment", "params", "sweep", "report"}
_EXPERIMENT_KEYS = {"name", "kind", "seeds", "description"}
_REPORT_KEYS = {"x", "lines", "metrics", "logx"}


def parse_config(data: Mapping[str, Any], source: str = "<config>", base_dir: Path | None = None,
                 overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Validate a parsed TOML mapping (plus dotted ``overrides`` such as ``params.level``)."""
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    # An override of a swept parameter fixes it: it replaces that sweep axis (or drops the key from
    # its zip group) instead of being overwritten by every sweep value.
    fixed = {dotted.partition(".")[2] for dotted in (overrides or {}) if dotted.startswith("params.")}
    for dotted, value in (overrides or {}).items():
        table, _, key = dotted.partition(".")
        if table not in _TOP or not key:
            raise ConfigError(f"{source}: override {dotted}: expected TABLE.KEY with TABLE one of "
                              f"{', '.join(sorted(_TOP))}")
        data.setdefault(table, {})
        if not isinstance(data[table], dict):
            raise ConfigError(f"{source}: {table}: expected a table")
        data[table][key] = value

    def err(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {msg}")

    for key in data:
        if key not in _TOP:
            raise err(key, f"unknown table (known: {', '.join(sorted(_TOP))})")
    for key in _TOP:
        if key in data and not isinstance(data[key], dict):
            raise err(key, f"expected a table, got {data[key]!r}")
    exp = data.get("experiment")
    if exp is None:
        raise err("experiment", "missing table (needs at least kind)")
    for key in exp:
        if key not in _EXPERIMENT_KEYS:
            raise err(f"experiment.{key}", f"unknown key (known: {', '.join(sorted(_EXPERIMENT_KEYS))})")
    kind = exp.get("kind")
    if not isinstance(kind, str):
        raise err("experiment.kind", f"expected a string naming an experiment kind, got {kind!r}")
    from simcim.experiments.kinds import KINDS

    if kind not in KINDS:
        raise err("experiment.kind", f"unknown kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    name = exp.get("name", Path(source).stem if source != "<config>" else kind)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\0"):
        raise err("experiment.name", f"expected a non-empty string usable as a folder name, got {name!r}")
    description = exp.get("description", "")
    if not isinstance(description, str):
        raise err("experiment.description", f"expected a string, got {description!r}")
    seeds_raw = exp.get("seeds", 1)
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool):
        if seeds_raw < 1:
            raise err("experiment.seeds", f"expected a count >= 1 or a list of integers, got {seeds_raw!r}")
        seeds = tuple(range(seeds_raw))
    elif (isinstance(seeds_raw, list) and seeds_raw
          and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds_raw)):
        if len(set(seeds_raw)) != len(seeds_raw):
            raise err("experiment.seeds", f"expected distinct seeds, got {seeds_raw!r}")
        seeds = tuple(seeds_raw)
    else:
        raise err("experiment.seeds", f"expected a count >= 1 or a non-empty list of integers >= 0, "
                                      f"got {seeds_raw!r}")

    from simcim.experiments.kinds import params_class

    cls = params_class(kind, where=f"{source}: experiment.kind")
    field_names = {f.name for f in dataclasses.fields(cls)}
    base = dict(data.get("params", {}))

    grid: dict[str, list[Any]] = {}
    zips: list[dict[str, list[Any]]] = []
    sweep = data.get("sweep", {})
    replaced: list[str] = []
    for key, value in sweep.items():
        if key == "zip":
            groups = value if isinstance(value, list) else [value]
            for gi, group in enumerate(groups):
                loc = "sweep.zip" if not isinstance(value, list) else f"sweep.zip[{gi}]"
                if not isinstance(group, dict) or not group:
                    raise err(loc, f"expected a table of equal-length lists, got {group!r}")
                replaced.extend(k for k in group if k in fixed)
                group = {k: v for k, v in group.items() if k not in fixed}
                if not group:
                    continue
                lengths = set()
                for zk, zv in group.items():
                    if zk not in field_names:
                        raise err(f"{loc}.{zk}", f"unknown parameter (known: {', '.join(sorted(field_names))})")
                    if not isinstance(zv, list) or not zv:
                        raise err(f"{loc}.{zk}", f"expected a non-empty list, got {zv!r}")
                    lengths.add(len(zv))
                if len(lengths) != 1:
                    raise err(loc, f"expected lists of equal length to pair, got lengths {sorted(lengths)}")
                zips.append(dict(group))
            continue
        if key not in field_names:
            raise err(f"sweep.{key}", f"unknown parameter (known: {', '.join(sorted(field_names))})")
        if not isinstance(value, list) or not value:
            raise err(f"sweep.{key}", f"expected a non-empty list of values, got {value!r}")
        if key in fixed:
            replaced.append(key)
            continue
        grid[key] = value
    swept_all = list(grid) + [k for z in zips for k in z]
    dup = {k for k in swept_all if swept_all.count(k) > 1}
    if dup:
        raise err(f"sweep.{sorted(dup)[0]}", "swept twice (grid and zip, or two zip groups)")

    rep = data.get("report", {})
    for key in rep:
        if key not in _REPORT_KEYS:
            raise err(f"report.{key}", f"unknown key (known: {', '.join(sorted(_REPORT_KEYS))})")
    for key in ("x", "lines"):
        if key in rep and (not isinstance(rep[key], str) or rep[key] not in field_names):
            raise err(f"report.{key}", f"expected the name of a parameter, got {rep[key]!r}")
    metrics = rep.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise err("report.metrics", f"expected a list of metric names, got {metrics!r}")
    logx = rep.get("logx", False)
    if not isinstance(logx, bool):
        raise err("report.logx", f"expected true or false, got {logx!r}")
    report = ReportSpec(x=rep.get("x"), lines=rep.get("lines"), metrics=tuple(metrics), logx=logx)

    cfg = ExperimentConfig(name=name, kind=kind, seeds=seeds, base=base, grid=grid, zips=tuple(zips),
                           report=report, source=source, description=description, base_dir=base_dir,
                           replaced_axes=tuple(replaced))
    cfg.validate_values()  # every value now, before anything runs; trials() checks the combinations
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a TOML experiment config; every problem is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e}") from None
    return parse_config(data, source=str(path), base_dir=path.parent, overrides=overrides)


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``TABLE.KEY=VALUE`` (VALUE in TOML syntax; a bare word is taken as a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text}: expected TABLE.KEY=VALUE")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed

