"""Traces from files: ChampSim binary traces, plain text / CSV address lists, and our own ``.npz``.

**ChampSim** (``read_champsim``): the 64-byte little-endian ``input_instr`` records of
ChampSim's trace format (instruction pointer; branch and taken flags; 2 destination and 4
source register ids; 2 destination and 4 source memory addresses), raw or xz / gzip
compressed. Each record becomes up to three of our instructions:

* its non-zero source addresses: one LOAD, one lane each;
* its non-zero destination addresses: one STORE;
* a record without memory operands that reads a register holding loaded data: one COMPUTE
  (the in-order core waits there for the loads before it, as it would to use their data);
  other register-only records are dropped (they do not touch memory and do not wait).

Dependences come from the registers: a register written by a load holds that load's data,
and a register written by a register-only record holds the data of the newest load among
its sources. A load or store whose source registers hold loaded data depends on the newest
such load (``inst_dep``), with ``producer`` the first lane of that load: this is the index
chain NVR follows. ChampSim traces carry no data values, so the memory image is empty and
IMP, which learns ``address = base + value * scale`` from index values, has nothing to
learn from (it issues no indirect prefetches on these traces).

**Text / CSV** (``read_text``): one access a line, ``R|W ADDRESS [PC]`` separated by blanks
or commas, addresses and PCs in decimal or ``0x`` hex; ``C`` alone is a compute instruction
(it waits for the loads before it). ``#`` starts a comment; a first line naming the columns
(``op,address,pc``) is skipped. No dependences: loads overlap up to the MSHR limit.

``read_trace`` picks the reader from the file's content (the ``.npz`` zip header, the xz
or gzip magic, printable text, or 64-byte records).
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import numba
import numpy as np

from simcim.npu.trace import COMPUTE, LOAD, STORE, Trace, empty_arrays

CHAMPSIM_RECORD = np.dtype([("ip", "<u8"), ("is_branch", "u1"), ("branch_taken", "u1"),
                            ("dst_reg", "u1", 2), ("src_reg", "u1", 4),
                            ("dst_mem", "<u8", 2), ("src_mem", "<u8", 4)])
assert CHAMPSIM_RECORD.itemsize == 64
XZ_MAGIC, GZ_MAGIC, ZIP_MAGIC = b"\xfd7zXZ\x00", b"\x1f\x8b", b"PK\x03\x04"
FIRST_REGISTER = 1  # register id 0 means "no register" in ChampSim records


def sniff(path: str | Path) -> str:
    """What a trace file holds: "npz", "champsim", "champsim.xz", "champsim.gz", "text", or "unknown"."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4096)
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if head.startswith(XZ_MAGIC) or head.startswith(GZ_MAGIC):
        inner = _content_kind(_decompress(path, 4096), None)
        return f"{inner}.{'xz' if head.startswith(XZ_MAGIC) else 'gz'}" if inner != "unknown" else "unknown"
    return _content_kind(head, path.stat().st_size)


def _content_kind(head: bytes, size: int | None) -> str:
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    if head and (size is None or size % CHAMPSIM_RECORD.itemsize == 0):
        return "champsim"
    return "unknown"


def _decompress(path: Path, size: int = -1) -> bytes:
    """The decompressed content of an xz or gzip file (its first ``size`` bytes when given)."""
    with path.open("rb") as f:
        opener = lzma.open if f.read(6) == XZ_MAGIC else gzip.open
    try:
        with opener(path, "rb") as f:
            return f.read(size)
    except (lzma.LZMAError, OSError, EOFError) as e:
        raise ValueError(f"trace file {path}: cannot decompress ({e})") from None


def read_trace(path: str | Path) -> Trace:
    """Any trace file we can read, by content."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"trace file not found: {path}")
    kind = sniff(path)
    if kind == "npz":
        return Trace.load(path)
    if kind.startswith("champsim"):
        return read_champsim(path)
    if kind.startswith("text"):
        return read_text(path)
    raise ValueError(f"trace file {path}: not a simcim .npz, a ChampSim binary trace (64-byte records, raw, "
                     ".xz or .gz) or a text/CSV list of 'R|W address [pc]'")


# ----------------------------------------------------------------------------- ChampSim


def read_champsim(path: str | Path, max_records: int | None = None) -> Trace:
    path = Path(path)
    raw = _decompress(path) if sniff(path).endswith((".xz", ".gz")) else path.read_bytes()
    if len(raw) % CHAMPSIM_RECORD.itemsize:
        raise ValueError(f"trace file {path}: {len(raw)} bytes is not a whole number of 64-byte ChampSim records")
    rec = np.frombuffer(raw, CHAMPSIM_RECORD)
    if max_records is not None:
        rec = rec[:max_records]
    if len(rec) == 0:
        raise ValueError(f"trace file {path}: no ChampSim records")
    for field in ("src_mem", "dst_mem"):
        if np.any(rec[field] >= 1 << 63):
            raise ValueError(f"trace file {path}: a {field} address is >= 2**63, not a ChampSim trace we can read")
    _, pc_ids = np.unique(rec["ip"], return_inverse=True)
    src_mem, dst_mem = rec["src_mem"].astype(np.int64), rec["dst_mem"].astype(np.int64)
    src_reg, dst_reg = rec["src_reg"].astype(np.int64), rec["dst_reg"].astype(np.int64)
    n_inst, n_lane = _champsim_count(src_mem, dst_mem, src_reg, dst_reg)
    kind, pc, start, dep, addr, producer, value, ctrl = empty_arrays(n_inst, n_lane)
    _champsim_lower(pc_ids.astype(np.int64), src_mem, dst_mem, src_reg, dst_reg, kind, pc, start, dep, addr,
                    producer)
    if n_lane == 0:
        raise ValueError(f"trace file {path}: its {len(rec)} ChampSim records have no memory operands")
    return Trace(kind, pc, start, dep, addr, producer, value, name=f"champsim:{path.name}", inst_ctrl=ctrl)


@numba.njit(cache=True)
def _champsim_walk(src_mem, dst_mem, src_reg, dst_reg, emit, pc_ids, kind, pc, start, dep, addr, producer):
    """One pass over the records; with ``emit`` it fills the arrays. Returns (instructions, lanes)."""
    reg = np.full(256, -1, np.int64)  # the load whose data each register holds
    i = 0
    a = 0
    for r in range(src_mem.shape[0]):
        d = -1
        for s in range(4):
            g = src_reg[r, s]
            if g >= FIRST_REGISTER and reg[g] > d:
                d = reg[g]
        has_load = False
        for q in range(4):
            if src_mem[r, q] != 0:
                has_load = True
        has_store = False
        for q in range(2):
            if dst_mem[r, q] != 0:
                has_store = True
        for op in range(2):
            if (op == 0 and not has_load) or (op == 1 and not has_store):
                continue
            if emit:
                kind[i] = LOAD if op == 0 else STORE
                pc[i] = pc_ids[r]
                start[i] = a
                dep[i] = d
            lanes = src_mem[r] if op == 0 else dst_mem[r]
            for q in range(lanes.shape[0]):
                if lanes[q] != 0:
                    if emit:
                        addr[a] = lanes[q]
                        producer[a] = start[d] if d >= 0 else -1
                    a += 1
            if op == 0:
                for q in range(2):
                    if dst_reg[r, q] >= FIRST_REGISTER:
                        reg[dst_reg[r, q]] = i
            i += 1
        if not has_load and not has_store:
            if d >= 0:
                if emit:
                    kind[i] = COMPUTE
                    pc[i] = pc_ids[r]
                    start[i] = a
                    dep[i] = -1
                i += 1
            for q in range(2):
                if dst_reg[r, q] >= FIRST_REGISTER:
                    reg[dst_reg[r, q]] = d
        elif has_store and not has_load:
            for q in range(2):
                if dst_reg[r, q] >= FIRST_REGISTER:
                    reg[dst_reg[r, q]] = d
    if emit:
        start[i] = a
    return i, a


def _champsim_count(src_mem, dst_mem, src_reg, dst_reg) -> tuple[int, int]:
    z64, z8, z32 = np.zeros(1, np.int64), np.zeros(1, np.int8), np.zeros(1, np.int32)
    return _champsim_walk(src_mem, dst_mem, src_reg, dst_reg, False, z64, z8, z32, z64, z64, z64, z64)


def _champsim_lower(pc_ids, src_mem, dst_mem, src_reg, dst_reg, kind, pc, start, dep, addr, producer) -> None:
    _champsim_walk(src_mem, dst_mem, src_reg, dst_reg, True, pc_ids, kind, pc, start, dep, addr, producer)


def write_champsim(trace: Trace, path: str | Path, compression: str = "") -> Path:
    """Write ``trace`` as ChampSim records ("", "xz" or "gz" compression); returns the path written.

    Each LOAD or STORE becomes one record per 4 (loads) or 2 (stores) lanes, each COMPUTE one
    register-only record. Registers carry the dependences: instruction ``i``'s loads write
    register ``1 + i % 24`` and a dependent instruction reads its producer's register, so a
    producer is found again by ``read_champsim`` while fewer than 24 loads separate the two.
    """
    if compression not in ("", "xz", "gz"):
        raise ValueError(f"compression must be '', 'xz' or 'gz', got {compression!r}")
    kinds, starts, deps = trace.inst_kind, trace.inst_start, trace.inst_dep
    rows = []
    last_loads: list[int] = []
    for i in range(trace.n_instructions):
        k = int(kinds[i])
        lanes = trace.addr[starts[i]:starts[i + 1]].astype(np.uint64)
        ip = 0x400000 + 4 * int(trace.inst_pc[i])
        src = [_register(int(deps[i]))] if deps[i] >= 0 else []
        if k == COMPUTE:
            rows.append((ip, 0, 0, (0, 0), _pad([_register(j) for j in last_loads[-4:]], 4), (0, 0), (0, 0, 0, 0)))
            last_loads = []
            continue
        per = 4 if k == LOAD else 2
        for g in range(0, max(len(lanes), 1), per):
            mem = _pad(lanes[g:g + per].tolist(), per)
            if k == LOAD:
                rows.append((ip, 0, 0, (_register(i), 0), _pad(src, 4), (0, 0), mem))
            else:
                rows.append((ip, 0, 0, (0, 0), _pad(src, 4), mem, (0, 0, 0, 0)))
        if k == LOAD:
            last_loads.append(i)
    data = np.array(rows, CHAMPSIM_RECORD).tobytes()
    path = Path(path)
    if compression == "xz":
        data = lzma.compress(data, format=lzma.FORMAT_XZ)
    elif compression == "gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _register(inst: int) -> int:
    reg = FIRST_REGISTER + inst % 24
    return reg + 1 if reg >= 6 else reg  # ChampSim's register 6 is the stack pointer: skip it


def _pad(values: list[int], n: int) -> tuple[int, ...]:
    return tuple(values) + (0,) * (n - len(values))


# ----------------------------------------------------------------------------- text / CSV


def read_text(path: str | Path) -> Trace:
    path = Path(path)
    raw = _decompress(path) if sniff(path).endswith((".xz", ".gz")) else path.read_bytes()
    kinds: list[int] = []
    addrs: list[int] = []
    pcs: list[int] = []
    for no, line in enumerate(raw.decode("ascii").splitlines(), 1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields or (no == 1 and fields[0].lower() in ("op", "type", "rw")):
            continue
        op = fields[0].upper()
        try:
            if op == "C" and len(fields) == 1:
                kinds.append(COMPUTE)
                addrs.append(-1)
                pcs.append(0)
                continue
            if op not in ("R", "W") or not 2 <= len(fields) <= 3:
                raise ValueError
            a = int(fields[1], 0)
            p = int(fields[2], 0) if len(fields) == 3 else 0
            if a < 0 or a >= 1 << 63 or p < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path}:{no}: expected 'R|W address [pc]' or 'C', got {line.strip()!r}") from None
        kinds.append(LOAD if op == "R" else STORE)
        addrs.append(a)
        pcs.append(p)
    kind = np.array(kinds, np.int8)
    mem = kind != COMPUTE
    if not mem.any():
        raise ValueError(f"trace file {path}: no accesses")
    start = np.concatenate([[0], np.cumsum(mem)]).astype(np.int64)
    _, pc_ids = np.unique(np.array(pcs, np.int64), return_inverse=True)
    lanes = int(mem.sum())
    return Trace(kind, pc_ids.astype(np.int32), start, np.full(len(kind), -1, np.int64),
                 np.array(addrs, np.int64)[mem], np.full(lanes, -1, np.int64), np.zeros(lanes, np.int64),
                 name=f"text:{path.name}")
