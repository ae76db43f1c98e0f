"""A GPU performance model for the kernels in ``kernels/``: count the work, divide by measured rates.

Why here, beside the NPU and FuseMax models: it is a performance model of a piece of hardware,
like them; it needs no GPU, no Triton and no PyTorch, so the simulated half of the
``sim_vs_measured`` experiment runs anywhere. The kernels themselves stay in ``kernels/``.

A GPU is a :class:`GPUSpec` read from a small TOML file (``npu/gpu_specs/*.toml``, or a user's
own file). Every rate in it is measured by ``python -m kernels.gpu_microbench`` on the device:

- ``copy_gbps``        device-to-device copy, bytes read + written per second (HBM streaming)
- ``mem_latency_us``   fixed cost of a streaming kernel beyond its launch: the intercept of copy
                       time against size (first-byte latency plus the tail of the last wave)
- ``l2_gbps``          the same copy on a buffer that stays in L2
- ``mma_tflops``       bf16 tensor-core matmul (cuBLAS, 8192^3)
- ``fma_tops``         fp32 FMA lane-operations per second (a register-only Triton kernel)
- ``unpack_tops``      packed low-bit codes turned into fp32 and consumed per second: shift, mask, OR
                       in the exponent of 2^23, subtract 2^23 (``kernels._common.codes_to_float``),
                       then the one fp32 operation that uses the code
- ``exp_tops``         ``exp2`` with the multiply of its argument, per second (special-function unit)
- ``load_tops``        L1-resident gathered loads per second (lane-operations), each with its index
                       arithmetic and the add that consumes it
- ``launch_us``        per-kernel cost of an empty kernel replayed in a CUDA graph

A kernel's work is a :class:`Work`: bytes from HBM, bytes served from L2 (re-reads and gathers),
tensor-core flops, fp32 lane-ops, codes unpacked, exponentials, gathered loads and launches. Its
predicted time is

    launches * launch_us + max(hbm_bytes / copy + mem_latency, l2_bytes / l2, compute)
    compute = mma / mma_rate + fma / fma_rate + unpack / unpack_rate + exp / exp_rate + loads / load_rate

Memory overlaps compute (many warps in flight stream while others compute); the compute terms
add, because in these Triton kernels one warp's instruction stream runs them in turn (the
softmax of a tile needs its product, and the product of the next tile needs the softmax), at
the low occupancy the kernels run at (docs/benchmarks.md: 6-24%). There is no per-kernel
efficiency factor: what the counts miss shows up as error, and the report names it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC_DIR = Path(__file__).resolve().parent / "gpu_specs"
BF16 = 2


@dataclasses.dataclass(frozen=True)
class GPUSpec:
    name: str
    copy_gbps: float
    mem_latency_us: float
    l2_gbps: float
    mma_tflops: float
    fma_tops: float
    unpack_tops: float
    exp_tops: float
    load_tops: float
    launch_us: float
    l2_mib: float
    sms: int
    measured: str = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "int") and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"GPU spec {self.name!r}: {f.name} must be a finite number >= 0, got {v!r}")
        for key in ("copy_gbps", "l2_gbps", "mma_tflops", "fma_tops", "unpack_tops", "exp_tops", "load_tops"):
            if getattr(self, key) <= 0:
                raise ValueError(f"GPU spec {self.name!r}: {key} must be > 0")


def load_spec(spec: str | Path) -> GPUSpec:
    """A bundled spec by name (``h100``, ``h200``) or a TOML file with the :class:`GPUSpec` fields."""
    path = Path(spec)
    if not path.suffix:
        path = SPEC_DIR / f"{spec}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SPEC_DIR.glob("*.toml")))
            raise ValueError(f"GPU spec {spec!r}: no bundled spec of that name (known: {known}, or a .toml file)")
    if not path.is_file():
        raise ValueError(f"GPU spec file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"GPU spec {path}: not valid TOML: {e}") from None
    fields = {f.name for f in dataclasses.fields(GPUSpec)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(f"GPU spec {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    missing = sorted(f.name for f in dataclasses.fields(GPUSpec) if f.name not in raw and f.name != "measured")
    if missing:
        raise ValueError(f"GPU spec {path}: missing key {missing[0]!r}")
    return GPUSpec(**raw)


def write_spec(spec: GPUSpec, path: Path) -> None:
    lines = [f"# {spec.measured}" if spec.measured else "# GPU spec"]
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        lines.append(f"{f.name} = {v!r}" if not isinstance(v, str) else f'{f.name} = "{v}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclasses.dataclass(frozen=True)
class Work:
    """What one kernel call must do. Lane-ops count every lane a Triton program issues, masked ones too."""

    kernel: str
    hbm_bytes: float = 0.0
    l2_bytes: float = 0.0
    mma_flops: float = 0.0
    fma: float = 0.0
    unpack: float = 0.0
    exp: float = 0.0
    loads: float = 0.0
    launches: int = 1

    def __add__(self, other: Work) -> Work:
        kw = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)
              if f.name != "kernel"}
        return Work(self.kernel, **kw)


@dataclasses.dataclass(frozen=True)
class Prediction:
    time_s: float
    bound: str  # launch, hbm, l2, mma, fma, unpack, exp, loads
    terms: dict[str, float]


def predict(w: Work, spec: GPUSpec, l2_resident: bool = False) -> Prediction:
    """Time of ``w`` on ``spec``; with ``l2_resident`` its HBM bytes come from L2 (a working set that fits)."""
    bw = (spec.l2_gbps if l2_resident else spec.copy_gbps) * 1e9
    t = {
        "launch": w.launches * spec.launch_us * 1e-6,
        "hbm": (w.hbm_bytes / bw + spec.mem_latency_us * 1e-6) if w.hbm_bytes else 0.0,
        "l2": w.l2_bytes / (spec.l2_gbps * 1e9),
        "mma": w.mma_flops / (spec.mma_tflops * 1e12),
        "fma": w.fma / (spec.fma_tops * 1e12),
        "unpack": w.unpack / (spec.unpack_tops * 1e12),
        "exp": w.exp / (spec.exp_tops * 1e12),
        "loads": w.loads / (spec.load_tops * 1e12),
    }
    compute = sum(t[k] for k in ("mma", "fma", "unpack", "exp", "loads"))
    body = max(t["hbm"], t["l2"], compute)
    if t["launch"] >= body:
        bound = "launch"
    elif body == compute:
        bound = max(("mma", "fma", "unpack", "exp", "loads"), key=lambda k: t[k])
    else:
        bound = "hbm" if body == t["hbm"] else "l2"
    return Prediction(t["launch"] + body, bound, t)


# ------------------------------------------------------------------------------------ counts
# Each function mirrors one kernel's launch path in kernels/ at its default launch configuration.


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _positive(name: str, **dims: int) -> None:
    for k, v in dims.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: {k} must be an integer >= 1, got {v!r}")


def linear_bf16(m: int, n: int, k: int) -> Work:
    """``F.linear`` (cuBLAS) of bf16 ``x [m, k]`` by ``W [n, k]``: every weight read once."""
    _positive("linear_bf16", m=m, n=n, k=k)
    return Work("linear_bf16", hbm_bytes=BF16 * (n * k + m * k + m * n), mma_flops=2.0 * m * n * k)


QUANT_SCHEMES = {"int4": (4, 1, True), "int2": (2, 1, True), "ternary": (2, 2, False)}  # bits, planes, zeros


def quant_gemv(n: int, k: int, scheme: str, group: int = 128, block_n: int = 64, split_ways: int = 16) -> Work:
    """``quant_matmul`` for one row (the ``m1`` kernel at its default config (1, 64, 16, 4, 3)).

    Launches: the de-interleave copy of x, the kernel, and with split-K the fp32 sum and the cast.
    Per code: one unpack (shift, mask, exponent trick, and the FMA with x that consumes it); per
    packed word and group, two FMAs apply the scale and the zero point; x's group sums are
    recomputed by every block of ``block_n`` rows.
    """
    if scheme not in QUANT_SCHEMES:
        raise ValueError(f"quant_gemv: scheme must be one of {', '.join(QUANT_SCHEMES)}; got {scheme!r}")
    _positive("quant_gemv", n=n, k=k, group=group)
    bits, planes, zeros = QUANT_SCHEMES[scheme]
    if k % group:
        raise ValueError(f"quant_gemv: k={k} is not a multiple of the group size {group}")
    per_word = 32 // bits
    groups = k // group
    split = max(1, min(split_ways, groups))
    weights = planes * n * k * bits / 8 + planes * n * groups * BF16 * (2 if zeros else 1)
    x_bytes = 3 * k * BF16  # read and write in the de-interleave, read once more by the kernel
    out = split * n * 4 * 2 + n * 4 + n * 4 + n * BF16 if split > 1 else n * BF16
    codes = planes * n * k
    fma = 2 * planes * n * (k // per_word) + _cdiv(n, block_n) * k
    return Work(f"gemv_{scheme}", hbm_bytes=weights + x_bytes + out, l2_bytes=_cdiv(n, block_n) * k * BF16,
                fma=fma, unpack=codes, launches=2 + (2 if split > 1 else 0))


def spmm(m: int, k: int, ncols: int, nnz: int, val_bytes: int = BF16, idx_bytes: int = 8, block_nnz: int = 16,
         threads: int = 128) -> Work:
    """``kernels.sparse.spmm`` of a CSR ``[m, k]`` by a dense ``[k, ncols]``: one program per row.

    Each step covers ``block_nnz`` nonzeros times a column block; a tile smaller than the
    program's ``threads`` still issues every lane (the rest are masked), so lane-ops are counted
    per issued lane: three loads (column index, value, gathered row; each with its address
    arithmetic and consumer) and one multiply by the value per lane and step.
    """
    _positive("spmm", m=m, k=k, ncols=ncols)
    if nnz < 0 or nnz > m * k:
        raise ValueError(f"spmm: nnz must be in [0, {m * k}], got {nnz}")
    block_n = min(_pow2(ncols), 128)
    steps = m * _cdiv(ncols, block_n) * max(1, _cdiv(nnz, m * block_nnz))
    lanes = max(threads, block_nnz * block_n)
    hbm = (m + 1) * 8 + nnz * (idx_bytes + val_bytes) + k * ncols * BF16 + m * ncols * BF16
    gathered = nnz * max(32, ncols * BF16)  # a 32-byte sector per gathered row at least, from L2
    return Work("spmm", hbm_bytes=hbm, l2_bytes=gathered, loads=3.0 * steps * lanes, fma=1.0 * steps * lanes)


def sdpa_decode(b: int, h: int, hkv: int, t: int, d: int) -> Work:
    """bf16 ``F.scaled_dot_product_attention`` for one query token against a ``t``-token cache."""
    _positive("sdpa_decode", b=b, h=h, hkv=hkv, t=t, d=d)
    return Work("sdpa_decode_bf16", hbm_bytes=BF16 * (2 * b * hkv * t * d + 2 * b * h * d),
                mma_flops=4.0 * b * h * t * d, fma=4.0 * b * h * t, exp=float(b * h * t))


def kv_decode(b: int, h: int, hkv: int, t: int, d: int, bits: int, k_group: int = 64, v_group: int = 64,
              n_sink: int = 4, rotate: bool = True) -> Work:
    """``kernels.kv_quant.kv_decode`` over a cache of ``t`` tokens: sinks and the last partial key group in bf16.

    Launches: FWHT of q (when rotated), the split kernel, the combine kernel. The query heads of a
    kv head are padded to ``max(16, group)`` rows for the tensor-core dots, so scores, exponentials
    and products are counted for the padded rows.
    """
    _positive("kv_decode", b=b, h=h, hkv=hkv, t=t, d=d)
    if bits not in (2, 4):
        raise ValueError(f"kv_decode: bits must be 2 or 4, got {bits}")
    v_group = min(v_group, d)  # one value group per token at most (as the decode step quantizes it)
    t_q = max(0, t - n_sink) // k_group * k_group
    t_f = t - t_q
    gp = max(16, _pow2(h // hkv))
    splits = max(1, min(max(1, 2048 // (b * hkv)), t_q // k_group))
    heads = b * hkv
    cache = heads * (2 * t_q * d * bits / 8 + (t_q // k_group) * d * BF16 * 2 + t_q * (d // v_group) * BF16 * 2
                     + t_f * d * BF16 * 2)
    partials = heads * (splits + 1) * gp * (d + 2) * 4
    q_io = b * h * d * BF16 * (3 if rotate else 1) + b * h * d * BF16
    scores = heads * gp * t
    return Work(f"kv_decode_{bits}bit", hbm_bytes=cache + 2 * partials + q_io, mma_flops=4.0 * scores * d,
                unpack=2.0 * heads * t_q * d, fma=4.0 * scores, exp=float(scores),
                launches=3 if rotate else 2)


def fused_attention(b: int, h: int, n: int, d: int, causal: bool = True, hkv: int | None = None,
                    block_m: int = 128, block_n: int = 128) -> Work:
    """``kernels.attention.fused_attention`` (one pass) over ``n`` queries and keys.

    Causal: a query block visits the key blocks up to and including its diagonal. Per score: two
    tensor-core products of depth ``d``, one exp2, and four fp32 operations (scale and subtract,
    max, row sum, cast to bf16). K and V are re-read from L2 by every query block after the first.
    """
    _positive("fused_attention", b=b, h=h, n=n, d=d)
    hkv = hkv or h
    nm, nn = _cdiv(n, block_m), _cdiv(n, block_n)
    blocks = sum(min(nn, _cdiv((i + 1) * block_m, block_n)) for i in range(nm)) if causal else nm * nn
    scores = float(b * h * blocks * block_m * block_n)
    hbm = BF16 * (2 * b * h * n * d + 2 * b * hkv * n * d)
    return Work("attention_fused_1pass", hbm_bytes=hbm, l2_bytes=b * h * blocks * block_n * d * BF16 * 2.0,
                mma_flops=4.0 * scores * d, fma=4.0 * scores, exp=scores)


def unfused_attention(b: int, h: int, n: int, d: int, hkv: int | None = None) -> Work:
    """``kernels.attention.unfused_attention`` (three passes): masked work is not skipped.

    Scores go to memory in fp32 (4 bytes written), the softmax reads them twice (max, then exp
    and sum: 8) and writes bf16 probabilities (2), P @ V reads them (2): 16 bytes per score.
    """
    _positive("unfused_attention", b=b, h=h, n=n, d=d)
    hkv = hkv or h
    scores = float(b * h * n * n)
    hbm = 16.0 * scores + BF16 * (2 * b * h * n * d + 2 * b * hkv * n * d)
    return Work("attention_unfused_3pass", hbm_bytes=hbm, mma_flops=4.0 * scores * d, fma=4.0 * scores,
                exp=scores, launches=3)


COUNTERS = {
    "linear_bf16": linear_bf16,
    "quant_gemv": quant_gemv,
    "spmm": spmm,
    "sdpa_decode": sdpa_decode,
    "kv_decode": kv_decode,
    "fused_attention": fused_attention,
    "unfused_attention": unfused_attention,
}


def count(kernel: str, **shape: int | str | bool) -> Work:
    """The :class:`Work` of ``kernel`` (a key of ``COUNTERS``) at ``shape``."""
    if kernel not in COUNTERS:
        raise ValueError(f"unknown kernel {kernel!r} (known: {', '.join(COUNTERS)})")
    return COUNTERS[kernel](**shape)
