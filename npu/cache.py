"""Set-associative, write-back cache hierarchy with MSHRs and a prefetch queue, over a DRAM model.

The hierarchy state is a tuple of flat numpy arrays so that JIT-compiled code can carry it
(and be cached on disk): level ``l`` owns slots ``OFF[l] .. OFF[l] + sets*ways`` of the
``tags/meta/ready/flags`` arrays. Level 0 is the cache closest to the NPU (the NPU-side cache,
or L2 when the NPU has none); the levels after it are L2 and the optional LLC.

Timing is carried per line: a line is installed when its miss is *issued*, with ``ready`` the
cycle its data arrives, so a later access to a line still in flight waits for it (an MSHR
merge) and a demand hit on a prefetched line that has not arrived is a *late* prefetch.
Policies: fills go into every level on the way (non-inclusive, like ChampSim's default),
dirty victims are written back to the next level (or DRAM), write misses allocate. A
writeback that hits in the next level marks the line dirty but does not move it in the
replacement order (as ChampSim); one that misses there is inserted like a fill.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

from simcim.npu.dram import DRAMConfig, dram_access, make_dram

# lcfg columns
LAT, NSETS, WAYS, OFF, POLICY = 0, 1, 2, 3, 4
POLICIES = {"lru": 0, "srrip": 1}
FLAG_DIRTY, FLAG_PF = 1, 2
# stats columns (per level)
N_STATS = 12
D_ACC, D_HIT, D_MISS, PF_ISSUED, PF_USEFUL, PF_LATE, PF_USELESS, WB_OUT, PF_ACC, PF_MISS, PF_DROPPED, ST_MISS = (
    range(N_STATS))
STAT_NAMES = ("demand_accesses", "demand_hits", "demand_misses", "prefetches_filled", "prefetches_useful",
              "prefetches_late", "prefetches_useless", "writebacks", "prefetch_lookups", "prefetch_misses",
              "prefetches_dropped", "store_misses")
# misc slots
M_CLOCK = 0
SRRIP_MAX = 3


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """One cache level. ``size_kib = 0`` means the level is absent."""

    name: str
    size_kib: float
    ways: int
    latency: int
    policy: str = "lru"
    line_bytes: int = 64

    def __post_init__(self) -> None:
        if self.size_kib < 0:
            raise ValueError(f"{self.name}: size_kib must be >= 0, got {self.size_kib}")
        if self.ways < 1:
            raise ValueError(f"{self.name}: ways must be >= 1, got {self.ways}")
        if self.latency < 0:
            raise ValueError(f"{self.name}: latency must be >= 0, got {self.latency}")
        if self.policy not in POLICIES:
            raise ValueError(f"{self.name}: unknown policy {self.policy!r} (known: {', '.join(POLICIES)})")
        if self.size_kib and self.sets < 1:
            raise ValueError(f"{self.name}: {self.size_kib} KiB is smaller than one set of {self.ways} "
                             f"ways x {self.line_bytes} B lines")
        if self.size_kib and self.sets * self.ways * self.line_bytes != round(self.size_kib * 1024):
            raise ValueError(f"{self.name}: {self.size_kib} KiB is not a whole number of sets of "
                             f"{self.ways} x {self.line_bytes} B")

    @property
    def sets(self) -> int:
        return int(round(self.size_kib * 1024)) // (self.ways * self.line_bytes)


@dataclasses.dataclass(frozen=True)
class HierarchyConfig:
    levels: tuple[CacheConfig, ...]
    dram: DRAMConfig = DRAMConfig()
    mshrs: int = 16           # outstanding demand misses from the NPU (level 0)
    prefetch_queue: int = 64  # outstanding prefetches (a separate queue, so prefetches cannot starve demand)
    line_bytes: int = 64

    def __post_init__(self) -> None:
        present = [lv for lv in self.levels if lv.size_kib > 0]
        if not present:
            raise ValueError("hierarchy: at least one cache level must have size_kib > 0")
        if self.mshrs < 1 or self.prefetch_queue < 1:
            raise ValueError(f"hierarchy: mshrs and prefetch_queue must be >= 1, got {self.mshrs}, "
                             f"{self.prefetch_queue}")
        if self.line_bytes < 4 or self.line_bytes & (self.line_bytes - 1):
            raise ValueError(f"hierarchy: line_bytes must be a power of two >= 4, got {self.line_bytes}")
        for lv in present:
            if lv.line_bytes != self.line_bytes:
                raise ValueError(f"{lv.name}: line_bytes {lv.line_bytes} differs from the hierarchy's "
                                 f"{self.line_bytes}")

    @property
    def present(self) -> tuple[CacheConfig, ...]:
        return tuple(lv for lv in self.levels if lv.size_kib > 0)

    @property
    def line_bits(self) -> int:
        return int(math.log2(self.line_bytes))


def make_hierarchy(cfg: HierarchyConfig) -> tuple:
    """Fresh (empty, cold) hierarchy state for the JIT-compiled access functions."""
    levels = cfg.present
    lcfg = np.zeros((len(levels), 5), np.int64)
    off = 0
    for i, lv in enumerate(levels):
        lcfg[i] = (lv.latency, lv.sets, lv.ways, off, POLICIES[lv.policy])
        off += lv.sets * lv.ways
    tags = np.full(off, -1, np.int64)
    meta = np.zeros(off, np.int64)
    ready = np.zeros(off, np.int64)
    flags = np.zeros(off, np.int8)
    stats = np.zeros((len(levels), N_STATS), np.int64)
    slots, banks, dcfg, dstats = make_dram(cfg.dram, cfg.line_bytes)
    mshr = np.zeros(cfg.mshrs, np.int64)
    pfq = np.zeros(cfg.prefetch_queue, np.int64)
    misc = np.zeros(4, np.int64)
    return (tags, meta, ready, flags, lcfg, stats, slots, dcfg, dstats, mshr, pfq, misc, banks)


@numba.njit(cache=True)
def lookup(H: tuple, lvl: int, line: int) -> int:
    """Slot holding ``line`` at level ``lvl``, or -1."""
    tags = H[0]
    lcfg = H[4]
    ways = lcfg[lvl, WAYS]
    base = lcfg[lvl, OFF] + (line % lcfg[lvl, NSETS]) * ways
    for w in range(ways):
        if tags[base + w] == line:
            return base + w
    return -1


@numba.njit(cache=True)
def _touch(H, lvl, s):
    if H[4][lvl, POLICY] == 0:
        H[11][M_CLOCK] += 1
        H[1][s] = H[11][M_CLOCK]
    else:
        H[1][s] = 0


@numba.njit(cache=True)
def _victim(H, lvl, line):
    tags, meta, lcfg = H[0], H[1], H[4]
    ways = lcfg[lvl, WAYS]
    base = lcfg[lvl, OFF] + (line % lcfg[lvl, NSETS]) * ways
    for w in range(ways):
        if tags[base + w] == -1:
            return base + w
    if lcfg[lvl, POLICY] == 0:
        best = base
        for w in range(1, ways):
            if meta[base + w] < meta[best]:
                best = base + w
        return best
    while True:  # SRRIP: first line predicted to be re-referenced in the distant future
        for w in range(ways):
            if meta[base + w] >= SRRIP_MAX:
                return base + w
        for w in range(ways):
            meta[base + w] += 1


@numba.njit(cache=True)
def _set_inserted(H, lvl, s, line, ready_t, flag):
    H[0][s] = line
    H[2][s] = ready_t
    H[3][s] = flag
    if H[4][lvl, POLICY] == 0:
        H[11][M_CLOCK] += 1
        H[1][s] = H[11][M_CLOCK]
    else:
        H[1][s] = SRRIP_MAX - 1


@numba.njit(cache=True)
def _writeback(H, lvl, line, t):
    """Write a dirty line evicted from level ``lvl - 1`` into level ``lvl`` (or DRAM)."""
    tags, flags, lcfg, stats = H[0], H[3], H[4], H[5]
    nlev = lcfg.shape[0]
    while lvl < nlev:
        stats[lvl - 1, WB_OUT] += 1
        s = lookup(H, lvl, line)
        if s >= 0:
            flags[s] |= FLAG_DIRTY
            return
        v = _victim(H, lvl, line)
        old = tags[v]
        old_flags = flags[v]
        if old != -1 and old_flags & FLAG_PF:
            stats[lvl, PF_USELESS] += 1
        _set_inserted(H, lvl, v, line, t, FLAG_DIRTY)
        if old == -1 or not (old_flags & FLAG_DIRTY):
            return
        line = old
        lvl += 1
    stats[nlev - 1, WB_OUT] += 1
    dram_access(H[6], H[12], H[7], H[8], line, t, True)


@numba.njit(cache=True)
def _fill(H, lvl, line, ready_t, flag, t):
    """Install ``line`` at level ``lvl``, evicting (and writing back) a victim."""
    tags, flags, stats = H[0], H[3], H[5]
    v = _victim(H, lvl, line)
    old = tags[v]
    if old != -1:
        if flags[v] & FLAG_PF:
            stats[lvl, PF_USELESS] += 1
        if flags[v] & FLAG_DIRTY:
            _writeback(H, lvl + 1, old, t)
    _set_inserted(H, lvl, v, line, ready_t, flag)


@numba.njit(cache=True)
def _walk_below(H, line, t, is_prefetch, is_write):
    """Look ``line`` up in levels 1.. from cycle ``t``; return (data ready cycle, level that had it)."""
    lcfg, stats, ready = H[4], H[5], H[2]
    nlev = lcfg.shape[0]
    tt = t
    for lvl in range(1, nlev):
        tt += lcfg[lvl, LAT]
        if is_prefetch:
            stats[lvl, PF_ACC] += 1
        else:
            stats[lvl, D_ACC] += 1
        s = lookup(H, lvl, line)
        if s >= 0:
            if not is_prefetch:
                stats[lvl, D_HIT] += 1
            _touch(H, lvl, s)
            return max(tt, ready[s]), lvl
        if is_prefetch:
            stats[lvl, PF_MISS] += 1
        else:
            stats[lvl, D_MISS] += 1
            if is_write:
                stats[lvl, ST_MISS] += 1
    return dram_access(H[6], H[12], H[7], H[8], line, tt, False), nlev


@numba.njit(cache=True)
def _take(heap, t):
    """Cycle a request arriving at ``t`` gets an entry of an MSHR-like queue.

    ``heap`` is a binary min-heap of the cycles at which the entries free up; the request
    takes the earliest-free entry (the root), and ``_put`` then records when it frees.
    """
    return max(t, heap[0])


@numba.njit(cache=True)
def _put(heap, done):
    """Replace the root (the entry just taken) with its new free cycle and restore the heap."""
    n = len(heap)
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and heap[c + 1] < heap[c]:
            c += 1
        if heap[c] >= done:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = done


@numba.njit(cache=True)
def demand_access(H: tuple, line: int, t: int, is_write: bool) -> int:
    """A demand access to ``line`` at cycle ``t``; returns the cycle its data is available."""
    ready, flags, lcfg, stats = H[2], H[3], H[4], H[5]
    t0 = t + lcfg[0, LAT]
    stats[0, D_ACC] += 1
    s = lookup(H, 0, line)
    if s >= 0:
        stats[0, D_HIT] += 1
        r = ready[s]
        if flags[s] & FLAG_PF:
            stats[0, PF_USEFUL] += 1
            if r > t0:
                stats[0, PF_LATE] += 1
            flags[s] &= ~FLAG_PF
        if is_write:
            flags[s] |= FLAG_DIRTY
        _touch(H, 0, s)
        return max(t0, r)
    stats[0, D_MISS] += 1
    if is_write:
        stats[0, ST_MISS] += 1
    mshr = H[9]
    start = _take(mshr, t0)
    done, hit_lvl = _walk_below(H, line, start, False, is_write)
    _put(mshr, done)
    for lvl in range(hit_lvl - 1, -1, -1):
        _fill(H, lvl, line, done, FLAG_DIRTY if (is_write and lvl == 0) else 0, start)
    return done


@numba.njit(cache=True)
def prefetch_access(H: tuple, line: int, t: int) -> int:
    """Prefetch ``line`` into level 0 from cycle ``t``; returns its ready cycle.

    A line already present is not requested again; it only moves up the replacement order.
    """
    ready, lcfg, stats = H[2], H[4], H[5]
    s = lookup(H, 0, line)
    if s >= 0:
        # already there (or in flight): no request, but the line is about to be used, so it is
        # refreshed in the replacement order like an access would
        stats[0, PF_DROPPED] += 1
        _touch(H, 0, s)
        return ready[s]
    pfq = H[10]
    start = _take(pfq, t + lcfg[0, LAT])
    done, hit_lvl = _walk_below(H, line, start, True, False)
    _put(pfq, done)
    for lvl in range(hit_lvl - 1, 0, -1):
        _fill(H, lvl, line, done, 0, start)
    _fill(H, 0, line, done, FLAG_PF, start)
    stats[0, PF_ISSUED] += 1
    return done


@numba.njit(cache=True)
def line_ready(H: tuple, line: int) -> int:
    """Cycle at which ``line`` is (or will be) in level 0, or -1 if it is not there."""
    s = lookup(H, 0, line)
    return H[2][s] if s >= 0 else -1
