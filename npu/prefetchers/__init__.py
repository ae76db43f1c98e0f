"""Prefetchers, one module each, behind one interface (like ChampSim's prefetcher modules).

A prefetcher module defines ``NAME``, a frozen ``Config`` dataclass, and

    make_state(cfg, trace_arrays, width, line_bits) -> (state, params)   int64 arrays
    budget(cfg, width) -> {"entries": int, "bytes": int}                 hardware storage
    operate(H, tr, state, params, i, t, lines, hits, n)                  JIT-compiled

``operate`` runs after the core issues instruction ``i`` at cycle ``t``; ``lines[:n]`` are the
distinct cache lines it touched and ``hits[:n]`` whether each hit in the NPU-side level. It
issues prefetches with ``simcim.npu.cache.prefetch_access(H, line, cycle)``. ``ID`` below is the
number the simulator's dispatch (``simcim.npu.core._prefetch``) switches on.
"""

from __future__ import annotations

from types import ModuleType

from simcim.npu.prefetchers import imp, next_line, none, nvr, stream, stride

PREFETCHERS: dict[str, ModuleType] = {m.NAME: m for m in (none, next_line, stride, stream, imp, nvr)}
ID: dict[str, int] = {name: k for k, name in enumerate(PREFETCHERS)}


def get(name: str) -> ModuleType:
    if name not in PREFETCHERS:
        raise ValueError(f"prefetcher: unknown {name!r} (known: {', '.join(PREFETCHERS)})")
    return PREFETCHERS[name]
