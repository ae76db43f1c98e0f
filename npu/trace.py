"""Vector-instruction memory traces of sparse DNN kernels, with the index dependence runahead follows.

A trace is the instruction stream of an in-order vector unit running one kernel. Every
instruction has a kind (load, store, compute), a static program counter, and a slice of
*lanes* (one byte address each). A load lane that reads an index records the index value it
loaded; a lane whose address was computed from an index records which earlier lane produced
it (``producer``, a global lane number). ``inst_dep`` is the same dependence at instruction
level: the instruction whose data this one needs before it can compute its addresses.
``inst_ctrl`` is the control dependence: the load whose data (a loop bound) decides that the
instruction runs at all.

Every workload is lowered through one kernel shape, the CSR gather-reduce that SpMV, SpMM,
pruned-weight matmul, embedding bags and GNN aggregation all share::

    for each output row r:
        load rowptr[r], rowptr[r+1]                      (pc ROWPTR)
        for each chunk of <= width indices of row r:
            load idx[j:j+w]                              (pc INDEX,  values = column ids)
            load val[j:j+w]            if weighted       (pc VALUE)
            for each vector of the gathered rows:        (feat elements per index)
                load table[idx[j] * feat + c ...]        (pc GATHER, producer = the idx lane)
                compute                                  (pc FMA)
        store out[r, :]                                  (pc STORE)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numba
import numpy as np
import scipy.sparse as sp

LOAD, STORE, COMPUTE = 0, 1, 2
PC_ROWPTR, PC_INDEX, PC_VALUE, PC_GATHER, PC_FMA, PC_STORE = 0, 1, 2, 3, 4, 5
ELEM_BYTES = 4  # int32 indices and fp32 values
# Each array lives in its own 4 GiB region so no two arrays ever share a cache line.
BASE_ROWPTR, BASE_INDEX, BASE_VALUE, BASE_TABLE, BASE_OUT = (k << 32 for k in range(1, 6))

_TRACE_FIELDS = ("inst_kind", "inst_pc", "inst_start", "inst_dep", "addr", "producer", "value")


@dataclasses.dataclass
class Trace:
    """A vector-instruction trace. Lane arrays are indexed by ``inst_start[i]:inst_start[i+1]``."""

    inst_kind: np.ndarray   # int8 [n_inst]: LOAD, STORE or COMPUTE
    inst_pc: np.ndarray     # int32 [n_inst]
    inst_start: np.ndarray  # int64 [n_inst + 1]
    inst_dep: np.ndarray    # int64 [n_inst]: instruction producing this one's indices, -1 if none
    addr: np.ndarray        # int64 [n_lanes]: byte address of each lane
    producer: np.ndarray    # int64 [n_lanes]: lane whose loaded value this address came from, -1 if none
    value: np.ndarray       # int64 [n_lanes]: value loaded by index lanes (0 elsewhere)
    name: str = ""
    # int64 [n_inst]: the load whose data decides whether this instruction runs (its row's row
    # pointers: the loop bound), -1 if none; None means no control dependence is recorded
    inst_ctrl: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.inst_kind)
        if self.inst_ctrl is None:
            self.inst_ctrl = np.full(n, -1, np.int64)
        if (len(self.inst_pc) != n or len(self.inst_dep) != n or len(self.inst_start) != n + 1
                or len(self.inst_ctrl) != n):
            raise ValueError(f"trace {self.name!r}: instruction arrays disagree in length")
        m = int(self.inst_start[-1]) if n else 0
        if len(self.addr) != m or len(self.producer) != m or len(self.value) != m:
            raise ValueError(f"trace {self.name!r}: lane arrays must have inst_start[-1]={m} entries")

    @property
    def n_instructions(self) -> int:
        return len(self.inst_kind)

    @property
    def n_accesses(self) -> int:
        return len(self.addr)

    def memory_image(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (address, value) of every element some later load takes an index from.

        Prefetchers that read index data ahead of the core (IMP) look values up here, which
        is what reading those bytes of memory would return.
        """
        producers = np.unique(self.inst_dep[self.inst_dep >= 0])
        if len(producers) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        counts = self.inst_start[producers + 1] - self.inst_start[producers]
        first_lane = self.inst_start[producers]
        lanes = np.repeat(first_lane - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        img_addr, first = np.unique(self.addr[lanes], return_index=True)
        return img_addr.astype(np.int64), self.value[lanes][first].astype(np.int64)

    def arrays(self) -> tuple:
        """The tuple the JIT-compiled simulator takes (trace arrays, the memory image, inst_ctrl)."""
        img_addr, img_val = self.memory_image()
        return (self.inst_kind.astype(np.int8), self.inst_pc.astype(np.int64),
                self.inst_start.astype(np.int64), self.inst_dep.astype(np.int64), self.addr.astype(np.int64),
                self.producer.astype(np.int64), self.value.astype(np.int64), img_addr, img_val,
                self.inst_ctrl.astype(np.int64))

    def save(self, path: str | Path) -> Path:
        """Write the trace as one compressed ``.npz`` (no pickles)."""
        path = Path(path)
        np.savez_compressed(path, name=np.array(self.name), inst_ctrl=self.inst_ctrl,
                            **{f: getattr(self, f) for f in _TRACE_FIELDS})
        return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"trace file not found: {path}")
        with path.open("rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        if not is_zip:
            from simcim.npu.traces import sniff

            kind = {"text": "a text/CSV address list", "champsim": "a ChampSim binary trace"}.get(
                sniff(path).split(".")[0], "an unknown format")
            raise ValueError(f"trace file {path}: not a simcim trace (.npz written by Trace.save) but {kind}; "
                             "read it with simcim.npu.traces.read_trace or npu_sim's trace parameter")
        with np.load(path, allow_pickle=False) as z:
            missing = [f for f in _TRACE_FIELDS if f not in z.files]
            if missing:
                raise ValueError(f"trace file {path}: missing arrays {missing}")
            return cls(**{f: z[f] for f in _TRACE_FIELDS}, name=str(z["name"]) if "name" in z.files else "",
                       inst_ctrl=z["inst_ctrl"] if "inst_ctrl" in z.files else None)


# ----------------------------------------------------------------------------- lowering


@numba.njit(cache=True)
def _count(indptr, feat, width, weighted):
    n_inst = 0
    n_lane = 0
    out_vecs = (feat + width - 1) // width
    for r in range(len(indptr) - 1):
        n_inst += 1
        n_lane += 2
        j = indptr[r]
        while j < indptr[r + 1]:
            w = min(width, indptr[r + 1] - j)
            n_inst += 1 + (1 if weighted else 0)
            n_lane += w * (2 if weighted else 1)
            g = (w * feat + width - 1) // width
            n_inst += 2 * g
            n_lane += w * feat
            j += w
        n_inst += out_vecs
        n_lane += feat
    return n_inst, n_lane


@numba.njit(cache=True)
def _lower(indptr, indices, feat, width, weighted, kind, pc, start, dep, addr, producer, value, ctrl):
    i = 0
    a = 0
    row_bytes = feat * ELEM_BYTES
    for r in range(len(indptr) - 1):
        rowptr_inst = i
        kind[i] = LOAD
        pc[i] = PC_ROWPTR
        start[i] = a
        dep[i] = -1
        ctrl[i] = -1
        for q in range(2):
            addr[a] = BASE_ROWPTR + (r + q) * ELEM_BYTES
            producer[a] = -1
            value[a] = indptr[r + q]
            a += 1
        i += 1
        j = indptr[r]
        while j < indptr[r + 1]:
            w = min(width, indptr[r + 1] - j)
            idx_inst = i
            idx_lane0 = a
            kind[i] = LOAD
            pc[i] = PC_INDEX
            start[i] = a
            dep[i] = -1
            ctrl[i] = rowptr_inst
            for q in range(w):
                addr[a] = BASE_INDEX + (j + q) * ELEM_BYTES
                producer[a] = -1
                value[a] = indices[j + q]
                a += 1
            i += 1
            if weighted:
                kind[i] = LOAD
                pc[i] = PC_VALUE
                start[i] = a
                dep[i] = -1
                ctrl[i] = rowptr_inst
                for q in range(w):
                    addr[a] = BASE_VALUE + (j + q) * ELEM_BYTES
                    producer[a] = -1
                    value[a] = 0
                    a += 1
                i += 1
            # gathered elements, index-major, packed into vectors of `width` lanes
            total = w * feat
            e = 0
            while e < total:
                n = min(width, total - e)
                kind[i] = LOAD
                pc[i] = PC_GATHER
                start[i] = a
                dep[i] = idx_inst
                ctrl[i] = rowptr_inst
                for q in range(n):
                    k = (e + q) // feat
                    c = (e + q) % feat
                    addr[a] = BASE_TABLE + indices[j + k] * row_bytes + c * ELEM_BYTES
                    producer[a] = idx_lane0 + k
                    value[a] = 0
                    a += 1
                i += 1
                kind[i] = COMPUTE
                pc[i] = PC_FMA
                start[i] = a
                dep[i] = -1
                ctrl[i] = rowptr_inst
                i += 1
                e += n
            j += w
        c = 0
        while c < feat:
            n = min(width, feat - c)
            kind[i] = STORE
            pc[i] = PC_STORE
            start[i] = a
            dep[i] = -1
            ctrl[i] = rowptr_inst
            for q in range(n):
                addr[a] = BASE_OUT + r * row_bytes + (c + q) * ELEM_BYTES
                producer[a] = -1
                value[a] = 0
                a += 1
            i += 1
            c += n
    start[i] = a


def empty_arrays(n_inst: int, n_lane: int) -> tuple[np.ndarray, ...]:
    """Uninitialised arrays of a trace, in ``Trace`` order: kind, pc, start, dep, addr, producer, value, ctrl."""
    return (np.empty(n_inst, np.int8), np.empty(n_inst, np.int32), np.empty(n_inst + 1, np.int64),
            np.empty(n_inst, np.int64), np.empty(n_lane, np.int64), np.empty(n_lane, np.int64),
            np.zeros(n_lane, np.int64), np.full(n_inst, -1, np.int64))


def gather_reduce_trace(matrix: sp.csr_matrix | sp.csr_array, feat: int, width: int, weighted: bool,
                        name: str = "") -> Trace:
    """Lower ``out[r] = sum_j w_rj * table[col_j, :feat]`` over a CSR structure into a trace."""
    if feat < 1:
        raise ValueError(f"feat must be >= 1, got {feat}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    m = sp.csr_matrix(matrix)
    m.sort_indices()
    indptr = m.indptr.astype(np.int64)
    indices = m.indices.astype(np.int64)
    n_inst, n_lane = _count(indptr, feat, width, weighted)
    kind, pc, start, dep, addr, producer, value, ctrl = empty_arrays(n_inst, n_lane)
    _lower(indptr, indices, feat, width, weighted, kind, pc, start, dep, addr, producer, value, ctrl)
    return Trace(kind, pc, start, dep, addr, producer, value, name=name, inst_ctrl=ctrl)


# ----------------------------------------------------------------------------- sparse structures


def random_csr(rows: int, cols: int, density: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Uniformly random sparsity pattern (each entry non-zero with probability ``density``)."""
    _check_shape(rows, cols, density)
    return sp.random(rows, cols, density=density, format="csr", random_state=rng, dtype=np.float32)


def powerlaw_csr(rows: int, cols: int, density: float, rng: np.random.Generator,
                 alpha: float = 1.1) -> sp.csr_matrix:
    """Power-law row lengths and column popularity (Chung-Lu style), about ``density`` non-zeros."""
    _check_shape(rows, cols, density)
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    nnz = max(1, int(round(rows * cols * density)))
    row_w = rng.permutation(1.0 / np.arange(1, rows + 1) ** alpha)
    col_w = rng.permutation(1.0 / np.arange(1, cols + 1) ** alpha)
    r = rng.choice(rows, size=nnz, p=row_w / row_w.sum())
    c = rng.choice(cols, size=nnz, p=col_w / col_w.sum())
    m = sp.csr_matrix((np.ones(nnz, np.float32), (r, c)), shape=(rows, cols))
    m.sum_duplicates()
    return m


def banded_csr(rows: int, cols: int, density: float, rng: np.random.Generator) -> sp.csr_matrix:
    """Non-zeros scattered inside a diagonal band just wide enough to hold ``density`` of the matrix."""
    _check_shape(rows, cols, density)
    per_row = max(1, int(round(cols * density)))
    band = min(cols, max(per_row, 4 * per_row))
    centre = (np.arange(rows) * cols) // rows
    lo = np.clip(centre - band // 2, 0, cols - band)
    offs = np.stack([rng.choice(band, size=per_row, replace=False) for _ in range(rows)])
    c = (lo[:, None] + offs).ravel()
    r = np.repeat(np.arange(rows), per_row)
    return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(rows, cols))


def _check_shape(rows: int, cols: int, density: float) -> None:
    if rows < 1 or cols < 1:
        raise ValueError(f"matrix shape must be positive, got {rows}x{cols}")
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")


def read_matrix_market(path: str | Path) -> sp.csr_matrix:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"matrix_market file not found: {path}")
    import scipy.io

    try:
        m = scipy.io.mmread(str(path))
    except (ValueError, OSError, IndexError) as e:
        raise ValueError(f"matrix_market file {path}: not a readable Matrix Market file ({e})") from None
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"matrix_market file {path}: expected a non-empty 2-D matrix, got shape {m.shape}")
    return sp.csr_matrix(m)


def magnitude_pruned(weight: np.ndarray, sparsity: float) -> sp.csr_matrix:
    """Keep the largest-magnitude ``1 - sparsity`` fraction of a weight matrix (global threshold)."""
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D, got shape {weight.shape}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if not np.all(np.isfinite(weight)):
        raise ValueError("weight contains NaN or inf")
    keep = max(1, int(round(weight.size * (1 - sparsity))))
    flat = np.abs(weight).ravel()
    thresh = np.partition(flat, flat.size - keep)[flat.size - keep]
    mask = np.abs(weight) >= thresh
    return sp.csr_matrix(np.where(mask, weight, 0).astype(np.float32))


def load_weight(path: str | Path, tensor: str | None = None) -> tuple[str, np.ndarray]:
    """A 2-D weight from a safetensors file: ``tensor`` by name, or else the largest 2-D tensor."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"weights file not found: {path}")
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise ValueError(f"weights file {path}: cannot read as safetensors ({e})") from None
    if tensor is not None:
        if tensor not in tensors:
            raise ValueError(f"weights file {path}: no tensor {tensor!r} (has {len(tensors)} tensors)")
        name = tensor
    else:
        mats = [k for k, v in tensors.items() if v.ndim == 2]
        if not mats:
            raise ValueError(f"weights file {path}: no 2-D tensor")
        name = max(mats, key=lambda k: (tensors[k].size, k))
    w = tensors[name]
    if w.ndim != 2:
        raise ValueError(f"weights file {path}: tensor {name!r} is not 2-D (shape {w.shape})")
    return name, w.astype(np.float32)


def default_weights_path() -> Path:
    """The bundled model's weights (``simcim.bundled``), the default real model to prune."""
    from simcim.bundled import MODEL_DIR

    return MODEL_DIR / "model.safetensors"


def zipf_bags(n_bags: int, pooling: int, n_rows: int, alpha: float,
              rng: np.random.Generator) -> sp.csr_matrix:
    """Embedding-bag lookups: ``pooling`` Zipf(``alpha``)-distributed row ids per bag."""
    if n_bags < 1 or pooling < 1 or n_rows < 1:
        raise ValueError(f"n_bags, pooling and n_rows must be >= 1, got {n_bags}, {pooling}, {n_rows}")
    if alpha <= 0:
        raise ValueError(f"zipf alpha must be > 0, got {alpha}")
    p = 1.0 / np.arange(1, n_rows + 1) ** alpha
    perm = rng.permutation(n_rows)  # popular rows are scattered over the table, as hashing does
    ids = perm[rng.choice(n_rows, size=(n_bags, pooling), p=p / p.sum())]
    indptr = np.arange(0, n_bags * pooling + 1, pooling)
    # a bag may repeat a row; keep the repeats (each is a real lookup), so build CSR directly
    return sp.csr_matrix((np.ones(ids.size, np.float32), ids.ravel(), indptr), shape=(n_bags, n_rows))


# ----------------------------------------------------------------------------- workloads

WORKLOADS = ("spmv", "spmm", "pruned_matmul", "embedding_bag", "gnn")
STRUCTURES = ("random", "powerlaw", "banded")


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """What to lower: the workload, its sparse structure and size, and the vector width."""

    workload: str = "spmv"
    structure: str = "random"
    rows: int = 4096
    cols: int = 65536
    density: float = 0.001
    feat: int = 16            # dense columns (SpMM / pruned matmul batch / embedding dim / GNN features)
    width: int = 16           # vector lanes
    matrix_market: str = ""   # a .mtx file replaces the generated structure (spmv, spmm, gnn)
    weights: str = ""         # safetensors file for pruned_matmul (default: the bundled model)
    weight_tensor: str = ""   # tensor name in it (default: the largest 2-D tensor)
    zipf_alpha: float = 1.05

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload: unknown {self.workload!r} (known: {', '.join(WORKLOADS)})")
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure: unknown {self.structure!r} (known: {', '.join(STRUCTURES)})")


def build_trace(spec: WorkloadSpec, seed: int) -> Trace:
    """Generate the sparse structure for ``spec`` with ``seed`` and lower it to a trace."""
    rng = np.random.default_rng(seed)

    def structure(rows: int, cols: int) -> sp.csr_matrix:
        if spec.matrix_market:
            return read_matrix_market(spec.matrix_market)
        maker = {"random": random_csr, "powerlaw": powerlaw_csr, "banded": banded_csr}[spec.structure]
        return maker(rows, cols, spec.density, rng)

    w = spec.workload
    if w == "spmv":
        m, feat, weighted = structure(spec.rows, spec.cols), 1, True
    elif w == "spmm":
        m, feat, weighted = structure(spec.rows, spec.cols), spec.feat, True
    elif w == "gnn":
        # aggregation over a square adjacency: every node gathers its neighbours' feature rows
        m, feat, weighted = structure(spec.rows, spec.rows), spec.feat, False
    elif w == "embedding_bag":
        pooling = max(1, int(round(spec.density * spec.cols)))
        m, feat, weighted = zipf_bags(spec.rows, pooling, spec.cols, spec.zipf_alpha, rng), spec.feat, False
    else:  # pruned_matmul: sparsity = 1 - density; activations X[in, batch] gathered by kept columns
        path = Path(spec.weights) if spec.weights else default_weights_path()
        _, weight = load_weight(path, spec.weight_tensor or None)
        m, feat, weighted = magnitude_pruned(weight, 1.0 - spec.density), spec.feat, True
    label = f"{w}/{'mtx' if spec.matrix_market else spec.structure}/d={spec.density}/seed={seed}"
    return gather_reduce_trace(m, feat, spec.width, weighted, name=label)
