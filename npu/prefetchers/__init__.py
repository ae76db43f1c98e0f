"""Prefetchers, one module each, found by name (like ChampSim's prefetcher modules).

A prefetcher module defines ``NAME``, a frozen ``Config`` dataclass, and

    make_state(cfg, trace_arrays, width, line_bits) -> (state, params)   int64 arrays: 2-D, 1-D
    budget(cfg, width) -> {"entries": int, "bytes": int}                 hardware storage
    operate(H, tr, state, params, i, t, lines, hits, n)                  ``numba.njit``-compiled

``operate`` runs after the core issues instruction ``i`` at cycle ``t``; ``lines[:n]`` are the
distinct cache lines it touched and ``hits[:n]`` whether each hit in the NPU-side level. It
issues prefetches with ``simcim.npu.cache.prefetch_access(H, line, cycle)``.

A new prefetcher is one module plus one ``register(module)`` call (the built-in ones are
registered below; a module elsewhere, a test for instance, registers itself the same way).
The core calls ``operate`` through a compiled function pointer, so adding one recompiles
nothing else. An unknown name or a module missing a hook is an error.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

import numba.core.registry

HOOKS = ("NAME", "Config", "make_state", "budget", "operate")
PREFETCHERS: dict[str, ModuleType] = {}


def register(module: ModuleType) -> ModuleType:
    """Make ``module`` available as prefetcher ``module.NAME``; returns it."""
    where = getattr(module, "__name__", repr(module))
    missing = [h for h in HOOKS if not hasattr(module, h)]
    if missing:
        raise ValueError(f"prefetcher module {where}: missing {', '.join(missing)}")
    name = module.NAME
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"prefetcher module {where}: NAME must be an identifier string, got {name!r}")
    if not dataclasses.is_dataclass(module.Config):
        raise ValueError(f"prefetcher module {where}: Config must be a dataclass")
    if not isinstance(module.operate, numba.core.registry.CPUDispatcher):
        raise ValueError(f"prefetcher module {where}: operate must be compiled with numba.njit")
    if PREFETCHERS.get(name, module) is not module:
        raise ValueError(f"prefetcher {name!r} is already registered by {PREFETCHERS[name].__name__}")
    PREFETCHERS[name] = module
    return module


def unregister(name: str) -> None:
    get(name)
    del PREFETCHERS[name]


def get(name: str) -> ModuleType:
    if name not in PREFETCHERS:
        raise ValueError(f"prefetcher: unknown {name!r} (known: {', '.join(PREFETCHERS)})")
    return PREFETCHERS[name]


def _register_builtins() -> None:
    from simcim.npu.prefetchers import imp, next_line, none, nvr, stream, stride

    for m in (none, next_line, stride, stream, imp, nvr):
        register(m)


_register_builtins()
