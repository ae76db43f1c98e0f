"""Launch configurations of the Triton kernels: one named type per kernel path, defaults by device as data.

Each path's tuning knobs are a ``NamedTuple`` (a caller may still pass a plain tuple in field order, which
:func:`as_config` names). The measured defaults live in ``launch_defaults.toml`` beside this module, one table
per GPU model; :func:`default` returns the entry for the device a call runs on.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import NamedTuple, TypeVar

import torch

from simcim.kernels._common import interpreting

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "GemvM1Config",
    "SlicesConfig",
    "DotConfig",
    "TensorCoreConfig",
    "AttentionConfig",
    "GatherConfig",
    "KVDecodeConfig",
    "as_config",
    "default",
    "device_table",
]

DEFAULTS_PATH = Path(__file__).with_name("launch_defaults.toml")


class GemvM1Config(NamedTuple):
    """The M = 1 kernel: quantization groups per loop step (f16acc only), output rows per program, split-K ways."""

    groups_per_step: int
    block_n: int
    split_k: int
    num_warps: int
    num_stages: int


class SlicesConfig(NamedTuple):
    """M <= 8 on the CUDA cores: rows (>= M), output columns and packed words per program step."""

    block_m: int
    block_n: int
    words: int
    num_warps: int
    num_stages: int


class DotConfig(NamedTuple):
    """``x @ W^T`` on the tensor cores, any M."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


class TensorCoreConfig(NamedTuple):
    """``W x^T`` on the tensor cores for M = 2..16: ``split_k`` 0 picks the ways that give about ``programs``."""

    block_n: int
    block_k: int
    split_k: int
    num_warps: int
    num_stages: int
    programs: int = 528


class AttentionConfig(NamedTuple):
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


class GatherConfig(NamedTuple):
    """Sparse row gathers (SpMM, embedding_bag): nonzeros per step and output columns per program (capped at the
    next power of two of the row width)."""

    block_nnz: int
    block_n: int
    num_warps: int
    num_stages: int


class KVDecodeConfig(NamedTuple):
    """Quantized KV decode: ``num_splits`` 0 gives about ``programs`` programs over all kv heads; ``tiles`` which
    operand of the dots the dequantized K and V tiles are ("left" or "right")."""

    num_splits: int
    groups_per_step: int
    num_warps: int
    num_stages: int
    programs: int = 2048
    tiles: str = "right"


C = TypeVar("C", bound=tuple)


def as_config(kind: type[C], config: tuple | None, name: str = "config") -> C | None:
    """``config`` as ``kind`` (a plain tuple is read in field order); a one-line error when it does not fit."""
    if config is None or isinstance(config, kind):
        return config
    try:
        return kind(*config)
    except TypeError as e:
        raise ValueError(f"{name} must be a {kind.__name__} {kind._fields}; got {tuple(config)!r}") from e


@functools.cache
def _tables() -> dict[str, dict[str, dict]]:
    return tomllib.loads(DEFAULTS_PATH.read_text(encoding="utf-8"))


def device_table(device: torch.device | str | None = None) -> str:
    """The table of ``launch_defaults.toml`` that a call on ``device`` reads (``default`` where none is named)."""
    if interpreting():
        return "interpreter"
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda":
        return "default"
    name = torch.cuda.get_device_name(dev)
    named = [key for key in _tables() if key not in ("default", "interpreter") and name.startswith(key)]
    return max(named, key=len) if named else "default"


def default(kind: type[C], entry: str, device: torch.device | str | None = None, table: str | None = None) -> C:
    """The measured default ``entry`` for ``device`` (or from the named ``table``) as a ``kind``."""
    tables = _tables()
    table = table or device_table(device)
    values = tables.get(table, {}).get(entry) or tables["default"].get(entry)
    if values is None:
        raise KeyError(f"{DEFAULTS_PATH.name} has no entry {entry!r}")
    return kind(**values)
