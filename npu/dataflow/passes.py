"""Lower bounds on the passes a cascade makes over a rank, and what they cost.

A *pass* over rank M is one traversal of the M fibers of the data (for attention: every key of
every query row). An Einsum that reads a value produced by a full reduction over M cannot start
until that reduction has seen all of M, so if it also iterates M it starts a new pass. With M
split into M1 x M0, Einsums that iterate only M1 touch a tensor M0 times smaller (one value per
tile); they run alongside a pass or *between* passes and do not count as passes themselves.

Scheduling uses half-steps: time 2k is pass k, time 2k+1 the gap after it. A full Einsum's time
is rounded up to a pass; an M1-only or M-free Einsum may sit in a gap. Recurrences (``RM[m1+1]``)
carry their state within a pass; reading their final element (``RM[M1]``) waits for the pass end.

The consequence of more than one pass: each full-rank intermediate produced in pass k and read
element by element in a later pass must be kept for a whole M fiber per query row (on-chip footprint grows with M), or
written to DRAM and read back (traffic grows with M), or recomputed from the inputs (extra passes
over those inputs). :func:`analyze_passes` reports all three. A recurrence whose later passes read
only its final element (``RM[M,p]``) keeps one value per query row, which is not a fiber.
"""

from __future__ import annotations

import dataclasses

from simcim.npu.dataflow.einsum import Cascade, Einsum, Ref

__all__ = ["PassReport", "analyze_passes"]


@dataclasses.dataclass(frozen=True)
class PassReport:
    rank: str  # the analysed index, e.g. "m"
    passes: int  # lower bound on passes over the rank
    einsum_pass: dict[str, float]  # Einsum -> pass (x.5 = between passes k and k+1)
    full: tuple[str, ...]  # Einsums that traverse the whole rank
    passes_per_input: dict[str, int]  # input carrying the rank -> passes over it if recomputing
    cross_pass: tuple[str, ...]  # full-rank intermediates read in a later pass
    live_fibers: int  # peak full-rank fibers kept per query row across a pass gap
    spill_accesses: int  # per element: writes + later-pass reads of those intermediates

    def summary(self) -> str:
        lines = [f"passes over {self.rank}: {self.passes}"]
        for name, p in self.einsum_pass.items():
            where = f"pass {int(p)}" if p == int(p) else f"between passes {int(p)} and {int(p) + 1}"
            lines.append(f"  {name:6s} {where}{' (full traversal)' if name in self.full else ''}")
        lines.append("  passes per input: " + ", ".join(f"{k}={v}" for k, v in self.passes_per_input.items()))
        if self.cross_pass:
            lines.append(
                f"  kept across passes: {', '.join(self.cross_pass)}; live M fibers per row: "
                f"{self.live_fibers}; spill accesses per element: {self.spill_accesses}"
            )
        else:
            lines.append("  nothing of size M is kept across passes: on-chip footprint is independent of M")
        return "\n".join(lines)


def analyze_passes(cascade: Cascade, rank: str = "m") -> PassReport:
    """Pass lower bound over index ``rank`` (split into its partition if the cascade declares one)."""
    outer, inner = cascade.partitions.get(rank, (None, None))
    rank_vars = {rank} | ({outer, inner} if outer else set())
    if not any(v in rank_vars for e in cascade.einsums for v in e.iteration_vars):
        raise ValueError(f"cascade {cascade.name!r}: no Einsum iterates index {rank!r}")

    def is_full(e: Einsum) -> bool:
        vs = set(e.iteration_vars)
        return rank in vs or (outer is not None and outer in vs and inner in vs)

    def traverses(e: Einsum) -> bool:
        return bool(rank_vars & set(e.iteration_vars))

    def carries(r: Ref) -> bool:
        return bool(rank_vars & set(r.vars))

    def carries_full(r: Ref) -> bool:
        vs = set(r.vars)
        return rank in vs or (outer is not None and outer in vs and inner in vs)

    produced = {e.name: i for i, e in enumerate(cascade.einsums)}
    time: dict[str, int] = {}
    for i, e in enumerate(cascade.einsums):
        reqs = [2 if traverses(e) else 0]
        for r in e.inputs:
            j = produced.get(r.name)
            if r.name == e.name or (j is not None and j > i):
                continue  # the carried state of a recurrence
            if j is None:
                reqs.append(2 if carries(r) else 0)
                continue
            d = cascade.einsums[j]
            t = time[d.name]
            if carries(r) and any(v in rank_vars for v in d.output.vars):
                reqs.append(t)  # streamed element by element within the pass
            elif traverses(d) and t % 2 == 0:
                reqs.append(t + 1)  # a reduction over the rank: complete after the pass
            else:
                reqs.append(t)
        t = max(reqs)
        if is_full(e) and t % 2:
            t += 1
        time[e.name] = t

    full = tuple(e.name for e in cascade.einsums if is_full(e))
    passes = max((time[n] for n in full), default=0) // 2

    # passes over each rank-carrying input when intermediates are recomputed instead of kept
    need: dict[str, set[int]] = {}
    for e in cascade.einsums:
        if is_full(e):
            for r in e.inputs:
                if r.name != e.name and carries_full(r):
                    need.setdefault(r.name, set()).add(time[e.name] // 2)
    for e in reversed(cascade.einsums):
        if not is_full(e):
            continue
        for p in need.get(e.name, set()):
            for r in e.inputs:
                if r.name != e.name and carries_full(r):
                    need.setdefault(r.name, set()).add(p)
    passes_per_input = {name: len(need.get(name, ())) for name, r in cascade.inputs.items() if carries_full(r)}

    # intermediates that must outlive their pass
    cross: list[str] = []
    spans: list[tuple[int, int]] = []
    accesses = 0
    for e in cascade.einsums:
        if not carries_full(e.output):
            continue
        made = time[e.name] // 2
        # a later pass that reads only the final element (RM[M1,p]) keeps one value per row, not a fiber
        later = {
            time[c.name] // 2
            for c in cascade.consumers(e.name)
            if time[c.name] // 2 > made and any(r.name == e.name and carries(r) for r in c.inputs)
        }
        if later:
            cross.append(e.name)
            spans.append((made, max(later)))
            accesses += 1 + len(later)
    live = max((sum(1 for a, b in spans if a <= gap < b) for gap in range(1, passes)), default=0)
    return PassReport(
        rank,
        passes,
        {n: t / 2 for n, t in time.items()},
        full,
        passes_per_input,
        tuple(cross),
        live,
        accesses,
    )
