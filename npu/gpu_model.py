"""A GPU performance model for the kernels in ``kernels/``: count the work, divide by measured rates.

Why here, beside the NPU and FuseMax models: it is a performance model of a piece of hardware,
like them; it needs no GPU, no Triton and no PyTorch, so the simulated half of the
``sim_vs_measured`` experiment runs anywhere. The kernels themselves stay in ``kernels/``.

A GPU is a :class:`GPUSpec` read from a small TOML file (``npu/gpu_specs/*.toml``, or a user's
own file). Every rate in it is measured by ``python -m simcim.kernels.gpu_microbench`` on the device:

- ``copy_gbps``        device-to-device copy, bytes read + written per second (HBM streaming)
- ``mem_latency_us``   fixed cost of a streaming kernel beyond its launch: the intercept of copy
                       time against size (first-byte latency plus the tail of the last wave)
- ``l2_gbps``          the same copy on a buffer that stays in L2
- ``mma_tflops``       bf16 tensor-core matmul (cuBLAS, 8192^3)
- ``fma_tops``         fp32 FMA lane-operations per second (a register-only Triton kernel)
- ``unpack_tops``      packed low-bit codes turned into fp32 and consumed per second: shift, mask, OR
                       in the exponent of 2^23, subtract 2^23 (``simcim.kernels._common.codes_to_float``),
                       then the one fp32 operation that uses the code
- ``exp_tops``         ``exp2`` with the multiply of its argument, per second (special-function unit)
- ``load_tops``        L1-resident gathered loads per second (lane-operations), each with its index
                       arithmetic and the add that consumes it
- ``launch_us``        per-kernel cost of an empty kernel replayed in a CUDA graph
- ``kernel_min_us``    per-call time of the smallest kernel that touches memory: one program loads
                       4 KB (from L2), adds, stores 4 KB; launch + first dependent load + store + drain
- ``l2_iter_us``       one iteration of a one-program loop that waits for its 8 KB tile load, from L2
                       (each tile's address depends on the previous tile's sum)
- ``dram_iter_us``     the same loop over tiles that come from HBM
- ``sm_gbps``          bytes read + written per second by ONE program of a copy kernel with one program
                       per SM (4 warps, 8 KB tiles): Little's law, bytes in flight per SM / latency
- ``attn_tflops``      ``tl.dot`` rate in the fused attention's loop shape (128 x 128 tiles, d = 128,
                       S = Q K^T then P V, 8 warps, 2 stages, one program per query block and head)
- ``cublas_min_us``    per-call time of cuBLAS's one-row bf16 GEMV at 1 x 64 x 64 in a CUDA graph: the
                       library kernel's own floor (its prologue is longer than a minimal Triton kernel's)
- ``sdpa_min_us``      per-call time of PyTorch's bf16 SDPA for one query over 64 keys (b = h = 1, d = 64)
                       in a CUDA graph: the floor of its split kernel + reduction
- ``dram_hop_us`` / ``l2_hop_us``  one dependent load (a pointer chase by one thread, random order over
                       256 MiB / 1 MiB): the round trip a load whose address is another load's value adds
- ``cublas_program_gbps``  bytes a second ONE program of cuBLAS's one-row GEMV kernel streams from HBM (the slope
                       of its time against weight bytes at 64 rows, over its profiled grid): its TMA loads keep
                       more bytes in flight than ``sm_gbps``'s Triton copy; a spec without it caps cuBLAS's programs
                       like Triton's, ``sm_gbps x warps / 4``
- ``splitk_fixup_us``   what the split-K fixup adds to a launch (``quant_gemv``'s last-program sum: barrier, acq_rel
                       atomic count, reload of the partials, store); a spec that lacks it (measured before the
                       field existed) takes three dependent L2 round trips, ``3 x l2_hop_us``, instead
- ``lone_instr_ns``     what one SASS instruction costs a lone program that issues it once: straight-line unpack-and-FMA
                       code of a 2-warp program, the slope of its time against its compiled instruction count (a
                       spec without it, 0, leaves the term out)
- ``regs_per_sm`` / ``smem_per_sm_kib``  the SM's register file and shared memory (device properties): with a
                       kernel's registers per thread and shared bytes (ptxas), how many programs an SM holds

A kernel's work is a :class:`Work`: bytes from HBM, bytes served from L2 (re-reads and gathers),
tensor-core flops (cuBLAS-shaped, and attention-loop ``tl.dot``), fp32 lane-ops, codes unpacked,
exponentials, gathered loads; and, from its launch path, the number of launches, the programs of
its grid, how many of them an SM holds (by warps, registers and shared memory), the dependent
loads on a program's path to its first result (``depth``: a gather whose address is a loaded index
is two), and the loop iterations of its longest program that wait for their loads. A launch chain
(``parts``: e.g. a GEMV and its split-K sum) is the sum of its launches, each predicted on its own. One launch takes

    floor + first + (depth - 1) * hop + fixup + max(hbm_bytes / bw, l2_bytes / l2, compute, chain)
    floor   = kernel_min (Triton), cublas_min (cuBLAS), sdpa_min - kernel_min (cuDNN's split kernel of SDPA)
    first   = dram_iter - l2_iter when its data come from HBM (the first load's extra round trip), else 0
    fixup   = splitk_fixup_us for a launch that ends with the split-K fixup, else 0
    hop     = dram_hop (l2_hop when the data stay in L2): each further dependent load
    bw      = copy, or programs * sm_gbps when fewer programs than SMs (Little's law; cuBLAS's programs at
              cublas_program_gbps where measured)
    compute = max(overlap * spread, sum * share * sms * 4 / min(4, warps), instr * lone_instr): sum = mma /
              mma_rate + attn / attn_rate + fma / fma_rate + unpack / unpack_rate + exp / exp_rate + loads / load_rate;
              overlap = max(mma and attn terms, the others' sum); spread = the busiest SM's work over the
              mean when programs go, in launch order, to the SM free first (dispatch_spread: the wave
              quantization of equal programs, the imbalance of causal attention's); share the work of
              the longest program (1 / programs when they are equal), which runs on one SM, its steps in
              series, and issues from at most one scheduler a warp (one instruction a cycle a warp); and it
              issues each of its kernel's ``instr`` instructions at least once, at a lone program's rate
    chain   = waves * (iters * iter latency (dram or l2) + hops * hop) + compute / iters (the last step's
              work of each wave, after its wait), waves = programs / (sms * programs per SM); with tail_iters,
              ((waves - 1) * iters + max(iters, tail_iters)) * iter latency + ...
    programs per SM = min(64 / warps, 32, regs_per_sm / (regs x 32 x warps), smem_per_sm / (smem + 1 KiB))

Memory overlaps compute (many warps in flight stream while others compute). Of the compute terms, the
issue-bound ones (FMA, unpack, exp, loads) add: one warp's instruction stream issues them in turn. The
tensor-core products overlap them when many programs share the chip, because a warp issues its products
asynchronously and other warps' softmax or unpack issues meanwhile (docs/sim-vs-measured.md: the fused
attention without a mask at 4K-16K tokens runs at 491-505 TFLOP/s on the H200, within 3-6% of the
attention-loop dot rate alone); within the longest program they add, since the softmax of a tile needs its
product and the next product its softmax. There is no per-kernel efficiency factor: every constant is a
microbenchmark, every count comes from a launch path, and what the counts miss shows up as error, which the
report names.
"""

from __future__ import annotations

import dataclasses
import heapq
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
    kernel_min_us: float
    l2_iter_us: float
    dram_iter_us: float
    sm_gbps: float
    attn_tflops: float
    cublas_min_us: float
    sdpa_min_us: float
    dram_hop_us: float
    l2_hop_us: float
    regs_per_sm: int
    smem_per_sm_kib: float
    splitk_fixup_us: float = 0.0  # 0: not measured (a spec from before the field); see fixup_us()
    cublas_program_gbps: float = 0.0  # 0: not measured; cuBLAS programs are then capped like Triton's (sm_gbps)
    lone_instr_ns: float = 0.0  # 0: not measured; a program's one pass through its code is then not a bound
    measured: str = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", "int") and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"GPU spec {self.name!r}: {f.name} must be a finite number >= 0, got {v!r}")
        for key in ("copy_gbps", "l2_gbps", "mma_tflops", "fma_tops", "unpack_tops", "exp_tops", "load_tops",
                    "sm_gbps", "attn_tflops", "regs_per_sm", "smem_per_sm_kib"):
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
    missing = sorted(f.name for f in dataclasses.fields(GPUSpec)
                     if f.name not in raw and f.default is dataclasses.MISSING)
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
    """What one kernel call must do. Lane-ops count every lane a Triton program issues, masked ones too.

    ``programs`` is the main launch's grid size (0: a library kernel whose grid is not derived, taken
    to fill the GPU); ``warps`` its warps (a program keeps warps / 4 times the bytes in flight of
    ``sm_gbps``'s 4-warp program); ``regs`` (per thread) and ``smem`` (bytes) its compiled resources,
    0 where they do not limit the programs an SM holds (then 64 / warps); ``floor`` whose fixed cost
    a launch pays ("" a Triton kernel, "cublas", "sdpa"); ``depth`` the dependent loads on a program's
    path to its result;
    ``iters`` the loop iterations of the longest program that each wait for their loads (loops
    without software pipelining, or with a load that depends on the previous one); ``tail_iters``
    those of the grid's last program where it runs a different loop (it starts in the last wave, so its
    chain follows the other waves'; 0: like the others); ``hops`` the dependent loads in the longest program's
    loop after its first result's path (a gather whose address is the previous load's value: each a ``hop``);
    ``program_work`` each program's share of the compute in launch order (empty: programs are equal);
    ``splitk_fixup`` whether its programs end with ``quant_gemv``'s split-K fixup (``GPUSpec.splitk_fixup_us``);
    ``instr`` the static SASS instructions of its compiled kernel (a thread's code; 0: not known), each of which the
    longest program issues at least once (``GPUSpec.lone_instr_ns``).
    ``parts`` is a launch chain: the call's time is the sum of its parts' (the other fields then hold their
    totals).
    """

    kernel: str
    hbm_bytes: float = 0.0
    l2_bytes: float = 0.0
    mma_flops: float = 0.0
    attn_flops: float = 0.0
    fma: float = 0.0
    unpack: float = 0.0
    exp: float = 0.0
    loads: float = 0.0
    launches: int = 1
    programs: int = 0
    warps: int = 4
    iters: int = 0
    tail_iters: int = 0
    hops: int = 0
    program_work: tuple[float, ...] = ()
    regs: int = 0
    smem: int = 0
    floor: str = ""
    depth: int = 1
    splitk_fixup: bool = False
    instr: int = 0
    parts: tuple[Work, ...] = ()

    def __add__(self, other: Work) -> Work:
        kw = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)
              if f.name in _ADDITIVE}
        return Work(self.kernel, **kw)


_ADDITIVE = ("hbm_bytes", "l2_bytes", "mma_flops", "attn_flops", "fma", "unpack", "exp", "loads", "launches")


def chain(kernel: str, *parts: Work) -> Work:
    """The launches ``parts``, one after another: totals of their counts, each part predicted on its own."""
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return dataclasses.replace(total, kernel=kernel, programs=parts[0].programs, parts=tuple(parts))


@dataclasses.dataclass(frozen=True)
class Prediction:
    time_s: float
    bound: str  # launch, hbm, l2, mma, attn, fma, unpack, exp, loads, chain, code (a program's pass through its code)
    terms: dict[str, float]


COMPUTE = ("mma", "attn", "fma", "unpack", "exp", "loads")
FLOORS = ("", "cublas", "sdpa")


def programs_per_sm(w: Work, spec: GPUSpec) -> int:
    """Programs of ``w``'s launch one SM holds at once: by warps (64), blocks (32), registers, shared memory."""
    limit = min(64 // w.warps, 32)
    if w.regs:  # registers are allocated per warp in units of 256 (8 per thread)
        limit = min(limit, spec.regs_per_sm // (_cdiv(w.regs, 8) * 8 * 32 * w.warps))
    if w.smem:  # the driver reserves 1 KiB of shared memory per block
        limit = min(limit, int(spec.smem_per_sm_kib * 1024 // (w.smem + 1024)))
    return max(1, limit)


def dispatch_spread(work: int | tuple[float, ...], sms: int) -> float:
    """How much longer than a perfect balance the SMs take: programs (``work`` each program's share, in
    launch order, or a count of equal ones) each go to the SM that is free first; the busiest SM's work
    over the mean. Equal programs give the wave quantization ``ceil(P / sms) / (P / sms)``."""
    if isinstance(work, int):
        return math.ceil(work / sms) * sms / work
    total = sum(work)
    if total <= 0:
        return 1.0
    busy = [0.0] * min(sms, len(work))
    heapq.heapify(busy)
    for x in work:
        heapq.heappush(busy, heapq.heappop(busy) + x)
    return max(busy) * sms / total


def fixup_us(spec: GPUSpec) -> float:
    """The split-K fixup's cost: measured, or for a spec without the field its three dependent L2 round trips (the
    partial's store acknowledged before the release, the atomic, the reload)."""
    return spec.splitk_fixup_us if spec.splitk_fixup_us > 0 else 3 * spec.l2_hop_us


def predict(w: Work, spec: GPUSpec, l2_resident: bool = False) -> Prediction:
    """Time of ``w`` on ``spec``; with ``l2_resident`` its HBM bytes come from L2 (a working set that fits)."""
    if w.parts:
        preds = [predict(p, spec, l2_resident) for p in w.parts]
        terms = {k: sum(p.terms[k] for p in preds) for k in preds[0].terms}
        main = max(preds, key=lambda p: p.time_s - p.terms["launch"])
        bound = main.bound if main.time_s - main.terms["launch"] > terms["launch"] else "launch"
        return Prediction(sum(p.time_s for p in preds), bound, terms)
    us = 1e-6
    if w.floor not in FLOORS:
        raise ValueError(f"Work {w.kernel!r}: floor must be one of {FLOORS}, got {w.floor!r}")
    if w.program_work and (len(w.program_work) != w.programs or min(w.program_work) < 0 or sum(w.program_work) <= 0):
        raise ValueError(f"Work {w.kernel!r}: program_work must hold {w.programs} shares >= 0, not all 0")
    floor = {"": spec.kernel_min_us, "cublas": spec.cublas_min_us,
             "sdpa": max(spec.kernel_min_us, spec.sdpa_min_us - spec.kernel_min_us)}[w.floor] * us
    iter_s = (spec.l2_iter_us if l2_resident else spec.dram_iter_us) * us
    first = 0.0 if l2_resident else max(0.0, spec.dram_iter_us - spec.l2_iter_us) * us
    hop = (spec.l2_hop_us if l2_resident else spec.dram_hop_us) * us
    bw = (spec.l2_gbps if l2_resident else spec.copy_gbps) * 1e9
    l2_bw = spec.l2_gbps * 1e9
    if 0 < w.programs < spec.sms:  # Little's law: only `programs` SMs keep bytes in flight
        sm_hbm = spec.sm_gbps * 1e9 * w.warps / 4  # bytes in flight grow with the warps issuing loads
        if w.floor == "cublas" and spec.cublas_program_gbps > 0:
            sm_hbm = spec.cublas_program_gbps * 1e9  # the library kernel's own measured rate a program
        sm_l2 = sm_hbm * spec.dram_iter_us / max(spec.l2_iter_us, 1e-3)  # same bytes, shorter wait
        bw = min(bw, w.programs * (sm_l2 if l2_resident else sm_hbm))
        l2_bw = min(l2_bw, w.programs * sm_l2)
    t = {
        "launch": w.launches * (floor + first) + max(0, w.depth - 1) * hop + w.splitk_fixup * fixup_us(spec) * us,
        "hbm": w.hbm_bytes / bw,
        "l2": w.l2_bytes / l2_bw,
        "mma": w.mma_flops / (spec.mma_tflops * 1e12),
        "attn": w.attn_flops / (spec.attn_tflops * 1e12),
        "fma": w.fma / (spec.fma_tops * 1e12),
        "unpack": w.unpack / (spec.unpack_tops * 1e12),
        "exp": w.exp / (spec.exp_tops * 1e12),
        "loads": w.loads / (spec.load_tops * 1e12),
    }
    serial = sum(t[k] for k in COMPUTE)
    # across the warps of an SM, tensor-core products (issued asynchronously) overlap the issue-bound work
    compute = max(t["mma"] + t["attn"], serial - t["mma"] - t["attn"])
    on_one_sm = code_bound = False
    if w.programs:
        # programs go to SMs in launch order as SMs free up: an SM that draws more work finishes later
        compute *= dispatch_spread(w.program_work or w.programs, spec.sms)
        # the longest program runs on one SM, at 1/sms of the chip's rates, its steps in series, and only on
        # the schedulers its warps occupy: a warp issues at most one instruction a cycle, so a program of
        # fewer than 4 warps reaches warps/4 of the SM's rates (the rates are measured with every scheduler busy)
        issue = 4 / min(4, w.warps)
        share = max(w.program_work) / sum(w.program_work) if w.program_work else 1.0 / w.programs
        longest = serial * share * spec.sms * issue
        # nor can it finish before it has issued its code once, at a lone program's rate: this is what bounds a
        # program that runs its loop body once or twice (the bundled GEMVs), where the lane-op rates, measured on
        # loops that many warps run hot, do not
        code = w.instr * spec.lone_instr_ns * 1e-9
        code_bound = code > longest and code >= compute
        longest = max(longest, code)
        on_one_sm = longest >= compute
        compute = max(compute, longest)
    waves = math.ceil(w.programs / (spec.sms * programs_per_sm(w, spec))) if w.programs else 1
    t["chain"] = ((waves - 1) * w.iters + max(w.iters, w.tail_iters)) * iter_s + waves * w.hops * hop
    if w.iters:
        # a waited loop hides a step's work under the next step's wait (its loads are issued a step ahead), but
        # not the last step's, which comes after the last wait: one step's share of the compute per wave
        t["chain"] += compute / w.iters
    t["compute"] = compute
    body = max(t["hbm"], t["l2"], compute, t["chain"])
    if t["launch"] >= body:
        bound = "launch"
    elif body == compute:
        bound = "code" if code_bound else max(COMPUTE, key=lambda k: t[k])
        bound = f"{bound}/sm" if on_one_sm else bound
    else:
        bound = next(k for k in ("hbm", "l2", "chain") if body == t[k])
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


# cuBLAS's kernel for a one-row bf16 F.linear on the H100 (torch 2.11, cuBLAS of CUDA 13): an ``nvjet_sm90_tst``
# kernel of 384 threads (12 warps); its grid, as torch.profiler recorded it for the decode-step shapes
# (tests/data/sim_vs_measured_h100/kernel_grids.json). cuBLAS picks it at run time: other shapes are not derived.
CUBLAS_GEMV_GRIDS = {(128, 128): 16, (8, 128): 1, (256, 128): 32, (2048, 128): 32, (2048, 2048): 32,
                     (64, 2048): 1, (2048, 1024): 32, (50304, 2048): 132}


def linear_bf16(m: int, n: int, k: int) -> Work:
    """``F.linear`` (cuBLAS) of bf16 ``x [m, k]`` by ``W [n, k]``: every weight read once.

    One launch at cuBLAS's own floor (``cublas_min_us``); for a single row at a profiled shape, the
    grid of cuBLAS's kernel (12 warps) from ``CUBLAS_GEMV_GRIDS``, else taken to fill the GPU.
    """
    _positive("linear_bf16", m=m, n=n, k=k)
    return Work("linear_bf16", hbm_bytes=BF16 * (n * k + m * k + m * n), mma_flops=2.0 * m * n * k,
                programs=CUBLAS_GEMV_GRIDS.get((n, k), 0) if m == 1 else 0, warps=12, floor="cublas")


QUANT_SCHEMES = {"int4": (4, 1, True), "int2": (2, 1, True), "ternary": (2, 2, False)}  # bits, planes, zeros


F16ACC_MIN_WEIGHTS = 1 << 25  # simcim.kernels.quant_gemv's threshold for unpack="auto" (a test keeps the two equal)
# simcim.kernels.quant_gemv.F16ACC_CONFIG (a test keeps the two equal): groups a step, BLOCK_N, split-K ways, warps
F16ACC_CONFIG = {"int4": (2, 64, 4, 2), "int2": (2, 32, 8, 1), "ternary": (2, 32, 8, 1)}
# registers per thread of the f16acc GEMV at that config (offline sm_90 compile, triton 3.6, as on the device; int4's
# 168 became 251 with the split-K fixup after the loop, for no fewer instructions: 4 programs an SM instead of 6)
F16ACC_REGS = {"int4": 251, "int2": 128, "ternary": 127}
# static SASS instructions of the fp32-path kernel at (1, 64, split, 2), by scheme and whether it ends with the split-K
# fixup: the launch profile of the H200 run (triton 3.6, tests/data/sim_vs_measured_h200/kernel_grids.json; a test
# keeps the two equal). A one-group program issues about this many once, which is what bounds it.
QGEMV1_INSTR = {("int4", False): 846, ("int2", False): 834, ("ternary", False): 1427,
                ("int4", True): 942, ("int2", True): 937, ("ternary", True): 1487}


def quant_gemv(n: int, k: int, scheme: str, group: int = 128, block_n: int = 64, split_ways: int = 8,
               warps: int = 2, unpack: str = "auto") -> Work:
    """``quant_matmul`` for one row at its default config, on the path ``unpack`` names ("fp32", "f16acc",
    or "auto": as the kernel chooses).

    Below ``F16ACC_MIN_WEIGHTS`` weights, the fp32 path (1, 64, 8, 2, 3): the kernel on a grid of
    ``cdiv(n, block_n) x split`` programs (2 warps; split = min(8, groups)). Triton does not pipeline its loads
    (on the H200 num_stages 1 and 3 time the same), so every group of a program after its first waits for its
    loads (``iters``; the first group's wait is the launch's first load): on the H200 a second group a program
    adds 1.28 us (OLMoE's 2048 x 2048 against 2048 x 1024 int4, 5.47 against 4.19 us, 2026-12-02), one
    ``dram_iter_us`` is 1.65. (Counting the first group as a wait too over-predicts the one-group programs by
    11-42%; before the split-K sum moved into this launch, counting any wait moved the suite's MAPE from 19.7% to
    23.1% on the H100, which the second launch's floor had hidden.)
    With split-K, the same launch finishes the sum: each program writes its fp32 partial row and counts itself
    in with an atomic, and the last of a row block re-reads the partials from L2, sums them and casts into y
    (``splitk_fixup``); without, the kernel writes y. Per code: one unpack
    (shift and LOP3 into the mantissa of 1.0, and the FMA with x that consumes it); per packed word,
    two FMAs apply the scale and the zero point; x's group sums are recomputed by every block of
    ``block_n`` rows, which read x from L2.

    From ``F16ACC_MIN_WEIGHTS`` up, the f16acc path at ``F16ACC_CONFIG`` (``block_n``, ``split_ways`` and
    ``warps`` do not apply): first one program per group turns x into fp16 pairs with a per-group scale and
    sum; then per pair of codes a LOP3, an HSUB2 and one fp16x2 FMA, and for 2-bit codes a shift (int4 shifts
    once a word), per word two widenings, an add and the scale's FMA; the split-K sum as above. Its loads are
    staged in registers one step (two groups of one plane) ahead, not pipelined through shared memory: every
    step waits (``iters``), and the programs an SM holds at once follow from the compiled registers
    (``F16ACC_REGS``).
    """
    if scheme not in QUANT_SCHEMES:
        raise ValueError(f"quant_gemv: scheme must be one of {', '.join(QUANT_SCHEMES)}; got {scheme!r}")
    if unpack not in ("auto", "fp32", "f16acc"):
        raise ValueError(f"quant_gemv: unpack must be auto, fp32 or f16acc; got {unpack!r}")
    _positive("quant_gemv", n=n, k=k, group=group)
    bits, planes, zeros = QUANT_SCHEMES[scheme]
    if k % group:
        raise ValueError(f"quant_gemv: k={k} is not a multiple of the group size {group}")
    per_word = 32 // bits
    groups = k // group
    f16acc = n * k >= F16ACC_MIN_WEIGHTS if unpack == "auto" else unpack == "f16acc"
    step_groups = 1
    if f16acc:
        step_groups, block_n, split_ways, warps = F16ACC_CONFIG[scheme]
    split = max(1, min(split_ways, groups))
    weights = planes * n * k * bits / 8 + planes * n * groups * BF16 * (2 if zeros else 1)
    name = f"gemv_{scheme}"
    blocks = _cdiv(n, block_n)
    # split-K: fp32 partial rows written, re-read from L2 and summed by the last program of each row block
    out = split * n * 4 + n * BF16 if split > 1 else n * BF16
    fixup = dict(l2_bytes=split * n * 4, fma=split * n) if split > 1 else dict(l2_bytes=0, fma=0)
    if f16acc:
        pairs = per_word // 2
        word_ops = pairs * (3 if bits == 4 else 4) + (1 if bits == 4 else 0) + 4
        prep = Work(name, hbm_bytes=k * BF16 + k * 2 + groups * 8, fma=4.0 * k, programs=groups, warps=4)
        main = Work(name, hbm_bytes=weights + k * 2 + groups * 8 + out,
                    l2_bytes=(blocks - 1) * (k * 2 + groups * 8) + fixup["l2_bytes"],
                    fma=float(word_ops * planes * n * (k // per_word) + fixup["fma"]), programs=blocks * split,
                    warps=warps, iters=_cdiv(_cdiv(groups, split), step_groups) * planes, regs=F16ACC_REGS[scheme],
                    splitk_fixup=split > 1)
        return chain(name, prep, main)
    main = Work(name, hbm_bytes=weights + k * BF16 + out, l2_bytes=(blocks - 1) * k * BF16 + fixup["l2_bytes"],
                fma=2 * planes * n * (k // per_word) + blocks * k + fixup["fma"], unpack=planes * n * k,
                programs=blocks * split, warps=warps, splitk_fixup=split > 1,
                iters=_cdiv(groups, split) - 1, instr=QGEMV1_INSTR.get((scheme, split > 1), 0))
    return chain(name, main)


def _gather_rows(name: str, m: int, k: int, ncols: int, nnz: int, *, has_vals: bool, val_bytes: int, idx_bytes: int,
                 b_bytes: int, block_nnz: int, block_n: int, warps: int, l2_mib: float) -> Work:
    """``simcim.kernels.sparse._gather_rows_kernel``: output row ``i`` sums the rows of ``B [k, ncols]``
    its nonzeros name.

    One program per output row and column block, ``warps`` warps. Three dependent loads lead to a row's first
    step: its row pointers, then its column indices, then the rows of B they name; every further step repeats
    the last two (``hops``): Triton does not software-pipeline a loop whose load address is another load's
    value (SASS of an offline sm_90 compile, triton 3.9: the step loads its indices, waits, gathers, waits,
    then sums across the warp), so at few programs an SM the steps' round trips add up. (A first version
    counted a full waited iteration, ``dram_iter_us``, per step: +83-93% on the H100 at OLMoE's shapes, where
    16 programs an SM overlap their waits and the loads' issue bounds the kernel.) Per step
    (``block_nnz`` nonzeros times a column block) every thread loads a column index (and a value), and the
    gathered tile: ``block_nnz x block_n`` elements in 16-byte vectors along the row (Triton vectorizes the
    contiguous dim), at least one load a thread; each element is multiplied by its value or added (fp32). A
    tile smaller than the program still issues every lane (the rest masked). B from HBM once and its gathered
    rows from L2 when B fits in ``l2_mib``; otherwise every gathered row comes from HBM (a 32-byte sector at least).
    """
    threads = 32 * warps
    block_n = min(block_n, _pow2(ncols))
    col_blocks = _cdiv(ncols, block_n)
    row_steps = max(1, _cdiv(nnz, m * block_nnz))
    steps = m * col_blocks * row_steps
    vec = max(1, min(16 // b_bytes, block_n))
    elems = max(threads, block_nnz * block_n)
    loads = steps * (threads * (2 if has_vals else 1) + max(threads, block_nnz * block_n // vec))
    hbm = (m + 1) * 8 + nnz * (idx_bytes + (val_bytes if has_vals else 0)) + m * ncols * b_bytes
    gathered = nnz * col_blocks * max(32, min(block_n, ncols) * b_bytes)
    if k * ncols * b_bytes <= l2_mib * 2**20:
        hbm, l2 = hbm + k * ncols * b_bytes, gathered
    else:
        hbm, l2 = hbm + gathered, 0
    return Work(name, hbm_bytes=hbm, l2_bytes=l2, loads=float(loads), fma=float(steps * elems),
                programs=m * col_blocks, warps=warps, depth=3, hops=2 * (row_steps - 1))


def spmm(m: int, k: int, ncols: int, nnz: int, val_bytes: int = BF16, idx_bytes: int = 8, b_bytes: int = BF16,
         block_nnz: int = 16, block_n: int = 128, warps: int = 4, l2_mib: float = 50.0) -> Work:
    """``simcim.kernels.sparse.spmm`` of a CSR ``[m, k]`` by a dense ``[k, ncols]``.

    At its default config (16, 128, 4, 3)."""
    _positive("spmm", m=m, k=k, ncols=ncols)
    if nnz < 0 or nnz > m * k:
        raise ValueError(f"spmm: nnz must be in [0, {m * k}], got {nnz}")
    return _gather_rows("spmm", m, k, ncols, nnz, has_vals=True, val_bytes=val_bytes, idx_bytes=idx_bytes,
                        b_bytes=b_bytes, block_nnz=block_nnz, block_n=block_n, warps=warps, l2_mib=l2_mib)


def embedding_bag(bags: int, per_bag: int, dim: int, vocab: int, elem_bytes: int = 4, block_nnz: int = 16,
                  block_n: int = 64, warps: int = 2, l2_mib: float = 50.0) -> Work:
    """``simcim.kernels.sparse.embedding_bag`` (sum, int64 indices, ``validate=False``).

    At its default config (16, 64, 2, 3).

    Two launches: PyTorch's ``torch.cat`` that appends the end to the offsets (counted as a minimal kernel),
    then the gather-rows kernel over ``bags`` rows of ``per_bag`` indices into a ``[vocab, dim]`` table.
    """
    _positive("embedding_bag", bags=bags, per_bag=per_bag, dim=dim, vocab=vocab)
    name = "embedding_bag"
    cat = Work(name, hbm_bytes=2.0 * (bags + 1) * 8, programs=1)
    gather = _gather_rows(name, bags, vocab, dim, bags * per_bag, has_vals=False, val_bytes=0, idx_bytes=8,
                          b_bytes=elem_bytes, block_nnz=block_nnz, block_n=block_n, warps=warps, l2_mib=l2_mib)
    return chain(name, cat, gather)


# Instructions per thread of ``_fwht_kernel`` at its launch (min(64, 8192 / d) rows, 4 warps), by (bytes an element,
# d): static SASS, NOPs left out. 16-bit at d = 32 and 128: as triton 3.6 compiled it on the H200 (the launch profile,
# tests/data/sim_vs_measured_h200/kernel_grids.json; a test keeps them equal); the rest from an offline sm_90 compile
# with triton 3.9's ptxas (2026-12-02), which gave about twice as many (2642 at d = 128, 180 registers against 3.6's
# 1290 and 105). Straight-line code but at d = 1024. At the device's count the FWHT is not issue-bound: 2M rows of
# 128 are 5.4G lane-instructions, 181 us at the H200's FMA rate. It is bytes-bound on the H100 (366 us measured, 362
# at the copy rate) and reaches 77% of the H200's copy rate (335 us against 259), for a reason not counted here.
FWHT_INSTR = {(2, 16): 274, (2, 32): 254, (2, 64): 1194, (2, 128): 1290, (2, 256): 2269, (2, 512): 2085,
              (2, 1024): 2129, (4, 16): 249, (4, 32): 530, (4, 64): 1110, (4, 128): 2453, (4, 256): 2059,
              (4, 512): 1877, (4, 1024): 1941}


def fwht(rows: int, d: int, elem_bytes: int = BF16) -> Work:
    """``simcim.kernels.fwht.fwht`` of ``rows`` rows of ``d`` channels: read once, written once, in one launch.

    ``min(64, 8192 / d)`` rows a program, 4 warps (masked rows issue too). Per program the compiled kernel's
    instructions (``FWHT_INSTR``, 16-bit elements as bf16), each a lane-op at the FMA rate; a shape it does not
    hold counts the butterflies' ``log2(d)`` adds and the scale per element instead.
    """
    _positive("fwht", rows=rows, d=d)
    if d & (d - 1):
        raise ValueError(f"fwht: d must be a power of two, got {d}")
    block_r = max(1, min(64, 8192 // d))
    programs = _cdiv(rows, block_r)
    instr = FWHT_INSTR.get((4 if elem_bytes == 4 else 2, d))
    lane_ops = programs * 128.0 * instr if instr else rows * d * (math.log2(d) + 1)
    return Work("fwht", hbm_bytes=2.0 * rows * d * elem_bytes, fma=lane_ops, programs=programs, instr=instr or 0)


def sdpa_decode(b: int, h: int, hkv: int, t: int, d: int) -> Work:
    """bf16 ``F.scaled_dot_product_attention`` for one query token against a ``t``-token cache.

    On the H100 (torch 2.11) PyTorch runs cuDNN's flash kernel split over the keys (4 warps a
    program), then cuDNN's reduction over the splits: 2 launches. Splits as torch.profiler recorded
    the grids (kernel_grids.json): one per 128-key block up to 16 (8 at 1024 tokens, 16 at 4096).
    K and V tiles are prefetched, so no iteration waits. The two launches together cost at least
    ``sdpa_min_us`` (the split kernel's prologue is cuDNN's, longer than a minimal kernel's).
    """
    _positive("sdpa_decode", b=b, h=h, hkv=hkv, t=t, d=d)
    splits = max(1, min(_cdiv(t, 128), 16))
    name = "sdpa_decode_bf16"
    kv = BF16 * 2 * b * hkv * t * d
    partial = b * h * splits * (d + 1) * 4
    main = Work(name, hbm_bytes=kv + BF16 * b * h * d + partial, programs=b * h * splits,
                mma_flops=4.0 * b * h * t * d, fma=4.0 * b * h * t, exp=float(b * h * t), floor="sdpa")
    combine = Work(name, hbm_bytes=partial + BF16 * b * h * d, programs=b * h, warps=8)
    return chain(name, main, combine)


# Registers per thread and shared bytes of ``_kv_split_kernel`` at its default launch (4 warps, 1 stage, k_group 64,
# groups_per_step 2 for 4-bit, 1 for 2-bit), by (bits, head dim). d = 32 and 128: as compiled by triton 3.6 on the
# H100 (kernel_grids.json of the stored run); d = 64: ptxas for sm_90 offline (triton 3.9, which gave 128 instead of
# 3.6's 166 at 2 bits, d = 128). 255 registers at 4 bits and d = 128 leave room for 2 programs an SM, not 16.
KV_SPLIT_RESOURCES = {(4, 128): (255, 24576), (2, 128): (166, 24576), (4, 64): (180, 12288), (2, 64): (107, 12288),
                      (4, 32): (164, 6144), (2, 32): (116, 6144)}


# static SASS instructions of the split kernel by (bits, head dim) and of the combine kernel by head dim, at the
# default launch: the launch profile of the H200 run (triton 3.6; a test keeps them equal to it)
KV_SPLIT_INSTR = {(4, 128): 2836, (2, 128): 1628, (4, 32): 1249, (2, 32): 882}
KV_COMBINE_INSTR = {128: 541, 32: 155}


def kv_decode(b: int, h: int, hkv: int, t: int, d: int, bits: int, k_group: int = 64, v_group: int = 64,
              n_sink: int = 4, rotate: bool = True) -> Work:
    """``simcim.kernels.kv_quant.kv_decode`` over a cache of ``t`` tokens: sinks and the last partial key group in bf16.

    Launch chain: FWHT of q (when rotated; ``8192 / d`` rows a program), the split kernel on
    ``(splits + 1) x b*hkv`` programs (4 warps, ``num_stages=1``: each step's loads are waited for; a
    step is 2 key groups at 4 bits, 1 at 2; registers from ``KV_SPLIT_RESOURCES``), the combine
    kernel on ``b*h`` programs. The ``+ 1`` program of each head walks the full-precision tokens 16 at a
    step, each waited too; the grid's last program is one of them, so it runs after the other waves
    (``tail_iters``). The query heads of a kv head are padded to ``max(16, group)`` rows for the
    tensor-core dots, so scores, exponentials and products are counted for the padded rows.
    """
    _positive("kv_decode", b=b, h=h, hkv=hkv, t=t, d=d)
    if bits not in (2, 4):
        raise ValueError(f"kv_decode: bits must be 2 or 4, got {bits}")
    v_group = min(v_group, d)  # one value group per token at most (as the decode step quantizes it)
    t_q = max(0, t - n_sink) // k_group * k_group
    t_f = t - t_q
    groups_q = t_q // k_group
    gp = max(16, _pow2(h // hkv))
    splits = max(1, min(max(1, 2048 // (b * hkv)), groups_q))
    heads = b * hkv
    cache = heads * (2 * t_q * d * bits / 8 + groups_q * d * BF16 * 2 + t_q * (d // v_group) * BF16 * 2
                     + t_f * d * BF16 * 2)
    partials = heads * (splits + 1) * (h // hkv) * (d + 2) * 4  # only the real query rows are stored (g_mask)
    q = b * h * d * BF16
    scores = heads * gp * t
    name = f"kv_decode_{bits}bit"
    per_step = 2 if bits == 4 else 1
    iters = _cdiv(_cdiv(max(groups_q, 1), splits), per_step)
    tail = _cdiv(t_f, 16)  # kv_quant's KF: 16 full-precision tokens a step
    regs, smem = KV_SPLIT_RESOURCES.get((bits, d), (0, 0))
    split = Work(name, hbm_bytes=cache + partials + q, attn_flops=4.0 * scores * d, unpack=2.0 * heads * t_q * d,
                 fma=4.0 * scores, exp=float(scores), programs=(splits + 1) * heads, iters=iters, tail_iters=tail,
                 regs=regs, smem=smem, instr=KV_SPLIT_INSTR.get((bits, d), 0))
    combine = Work(name, hbm_bytes=partials + q, programs=b * h, instr=KV_COMBINE_INSTR.get(d, 0))
    if not rotate:
        return chain(name, split, combine)
    return chain(name, dataclasses.replace(fwht(b * h, d), kernel=name), split, combine)


def fused_launch_config(d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) of ``simcim.kernels.attention._fused_launch_config`` on the GPU."""
    return (128, 128, 8) if d <= 128 else (64, 64, 4)


def fused_attention(b: int, h: int, n: int, d: int, causal: bool = True, hkv: int | None = None,
                    block_m: int | None = None, block_n: int | None = None) -> Work:
    """``simcim.kernels.attention.fused_attention`` (one pass) over ``n`` queries and keys.

    Grid: one program per query block and head (``cdiv(n, block_m) x b*h``), 8 warps at head dims
    up to 128. Causal: a query block visits the key blocks up to and including its diagonal, so
    programs differ (``program_work``: visits per query block, query blocks of a head in launch
    order). Per score: two ``tl.dot`` products of depth ``d`` (at the attention-loop dot rate), one
    exp2, and four fp32 operations (scale and subtract, max, row sum, cast to bf16). K and V are
    re-read from L2 by every query block after the first; their loads are pipelined (2-3 stages),
    so no iteration waits.
    """
    _positive("fused_attention", b=b, h=h, n=n, d=d)
    hkv = hkv or h
    bm, bn, warps = fused_launch_config(d)
    block_m, block_n = block_m or bm, block_n or bn
    nm, nn = _cdiv(n, block_m), _cdiv(n, block_n)
    visits = [min(nn, _cdiv((i + 1) * block_m, block_n)) if causal else nn for i in range(nm)]
    blocks = sum(visits)
    scores = float(b * h * blocks * block_m * block_n)
    hbm = BF16 * (2 * b * h * n * d + 2 * b * hkv * n * d)
    return Work("attention_fused_1pass", hbm_bytes=hbm, l2_bytes=b * h * blocks * block_n * d * BF16 * 2.0,
                attn_flops=4.0 * scores * d, fma=4.0 * scores, exp=scores, programs=nm * b * h,
                warps=warps, program_work=tuple(float(v) for v in visits) * (b * h))


def unfused_attention(b: int, h: int, n: int, d: int, hkv: int | None = None, l2_mib: float = 50.0) -> Work:
    """``simcim.kernels.attention.unfused_attention`` (three launches): masked work is not skipped.

    Scores go to memory in fp32 (4 bytes written), the softmax reads them twice (max, then exp
    and sum: 8) and writes bf16 probabilities (2), P @ V reads them (2): 16 bytes per score. When
    the fp32 score matrix fits in L2 (``l2_mib``), the reads of the second and third launch are
    served from L2 (the writes still go back to HBM). Products are ``tl.dot`` tiles (attention-loop
    dot rate).
    """
    _positive("unfused_attention", b=b, h=h, n=n, d=d)
    hkv = hkv or h
    scores = float(b * h * n * n)
    resident = 4 * scores <= l2_mib * 2**20
    name = "attention_unfused_3pass"
    key = "l2_bytes" if resident else "hbm_bytes"
    nq = _cdiv(n, 128)
    qk = Work(name, hbm_bytes=4.0 * scores + BF16 * (b * h * n * d + b * hkv * n * d), attn_flops=2.0 * scores * d,
              programs=nq * nq * b * h, warps=8)  # 128 x 128 score tiles, 8 warps
    softmax = dataclasses.replace(Work(name, **{key: 8.0 * scores}) + Work(
        name, hbm_bytes=2.0 * scores, fma=4.0 * scores, exp=scores, launches=0), programs=b * h * n)
    pv = dataclasses.replace(Work(name, **{key: 2.0 * scores}) + Work(
        name, hbm_bytes=BF16 * (b * hkv * n * d + b * h * n * d), attn_flops=2.0 * scores * d, launches=0),
        programs=nq * b * h, warps=8)  # 128-query blocks over 64-key steps, 8 warps
    return chain(name, qk, softmax, pv)


COUNTERS = {
    "linear_bf16": linear_bf16,
    "quant_gemv": quant_gemv,
    "spmm": spmm,
    "embedding_bag": embedding_bag,
    "fwht": fwht,
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
