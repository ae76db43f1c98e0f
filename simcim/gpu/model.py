"""The GPU performance model: count a kernel call's work, divide by the GPU's measured rates.

It needs no GPU, no Triton and no PyTorch, so predictions run anywhere; the kernels it predicts stay in
``kernels/``, and what each of them must do (its :class:`Work`) is counted in ``simcim.gpu.counts``.

A GPU is a :class:`GPUSpec` read from a small TOML file (``simcim/gpu/specs/*.toml``, or a user's
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
asynchronously and other warps' softmax or unpack issues meanwhile (the fused attention without a mask at
long sequences runs within a few percent of the attention-loop dot rate alone); within the longest program they
add, since the softmax of a tile needs its
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

SPEC_DIR = Path(__file__).resolve().parent / "specs"


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


def spec_path(spec: str | Path) -> Path:
    """The file of a bundled spec's name (``h100``, ``h200``), or ``spec`` itself when it names a file."""
    path = Path(spec)
    if not path.suffix:
        path = SPEC_DIR / f"{spec}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SPEC_DIR.glob("*.toml")))
            raise ValueError(f"GPU spec {spec!r}: no bundled spec of that name (known: {known}, or a .toml file)")
    if not path.is_file():
        raise ValueError(f"GPU spec file not found: {path}")
    return path


def load_spec(spec: str | Path) -> GPUSpec:
    """A bundled spec by name (``h100``, ``h200``) or a TOML file with the :class:`GPUSpec` fields."""
    path = spec_path(spec)
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


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


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
