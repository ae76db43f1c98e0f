"""One-pass GPU kernel for the PCM chain: programming noise, drift and read noise in a single read
of the targets and a single write of the result.

Run as separate torch ops, the chain makes about thirty-five passes over memory; fused, it reads
each target once (4 bytes in float32) and writes each result once. Its normal variates are made in
registers: Philox4x32 gives four uniforms per counter, Box-Muller turns them into four normals with
single-instruction (MUFU) log, sqrt, sin and cos, and the chain needs three per element, so a block
is cut into quarters that share three counters (no draw wasted). Compiled for sm_90 that is about
120 instructions per element (``python -m simcim.noise_models.bench --sass``), against about 540 with
libdevice's accurate functions, which is what lets it keep up with memory.

It follows the formulas of ``ProgrammingNoise``, ``PowerLawDrift`` and ``ReadNoise`` (the tests
compare the two paths' distributions, in Triton's interpreter here and on a GPU where there is one);
the random numbers differ from the torch path's. The seeds come from the caller's ``torch.Generator``,
so a seeded generator gives reproducible results on one GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from simcim.noise_models.base import NoiseComponent
from simcim.noise_models.drift import PowerLawDrift
from simcim.noise_models.programming import ProgrammingNoise
from simcim.noise_models.read import ReadNoise

MAX_PROG_COEFFS = 5
# Philox4x32 rounds: 10 is the standard safety margin (Salmon et al., SC 2011, found 7 enough to pass
# BigCrush); the benchmark also times 7, where the integer work of the generator is the bottleneck
PHILOX_ROUNDS = 10
# elements per program: 2048 measured fastest on the H100 with 10 rounds (docs/history.md, 2026-11-23)
FUSED_BLOCK = 2048
# one launch covers at most this many elements, so int32 offsets never overflow; each launch gets
# its own Philox key (seed + launch index), so counters never repeat across launches
LAUNCH_ELEMS = 1 << 30


def fusable(components: Sequence[NoiseComponent]) -> bool:
    """True when ``components`` are, in order, a subset of (ProgrammingNoise, PowerLawDrift, ReadNoise)."""
    order = (ProgrammingNoise, PowerLawDrift, ReadNoise)
    pos = -1
    for c in components:
        kinds = [i for i, k in enumerate(order) if type(c) is k]
        if not kinds or kinds[0] <= pos:
            return False
        pos = kinds[0]
    if any(type(c) is ProgrammingNoise and len(c.coeffs) > MAX_PROG_COEFFS for c in components):
        return False
    floors = {c.x_floor for c in components if type(c) in (PowerLawDrift, ReadNoise)}
    if len(floors) > 1:  # the kernel shares one ln(x) between drift and read noise
        return False
    return triton is not None


try:  # the kernel is defined only where Triton is installed; fusable() says False elsewhere
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - Triton is a declared optional dependency
    triton = None
try:  # CUDA's fast single-instruction math; without it the kernel uses tl.log etc.
    from triton.language.extra.cuda import libdevice
except ImportError:  # pragma: no cover - depends on the Triton build
    libdevice = None

if triton is not None:

    # Transcendentals: libdevice's accurate logf/sinf/cosf cost tens of instructions each (range
    # reduction, slow-path branches) and made the kernel issue-bound; the fast_* versions are single
    # MUFU instructions (relative error ~1e-6 over the ranges used here, far below the noise being
    # simulated). Triton's CPU interpreter has no libdevice, so FAST=False selects tl.log etc. there.
    @triton.jit
    def _log(x, FAST: tl.constexpr):
        if FAST:
            return libdevice.fast_logf(x)
        else:
            return tl.log(x)

    @triton.jit
    def _exp(x, FAST: tl.constexpr):
        if FAST:
            return libdevice.fast_expf(x)
        else:
            return tl.exp(x)

    @triton.jit
    def _normals4(seed, ctr, ROUNDS: tl.constexpr, FAST: tl.constexpr):
        """Four standard normals per counter: Philox4x32, then Box-Muller on two uniform pairs."""
        i0, i1, i2, i3 = tl.randint4x(seed, ctr, ROUNDS)
        u0 = tl.maximum(tl.random.uint_to_uniform_float(i0), 1.0e-7)
        u1 = tl.random.uint_to_uniform_float(i1)
        u2 = tl.maximum(tl.random.uint_to_uniform_float(i2), 1.0e-7)
        u3 = tl.random.uint_to_uniform_float(i3)
        r0 = tl.sqrt(-2.0 * _log(u0, FAST))
        r2 = tl.sqrt(-2.0 * _log(u2, FAST))
        # angles centred on 0, where the fast sine and cosine are most accurate
        th1 = 6.283185307179586 * u1 - 3.141592653589793
        th3 = 6.283185307179586 * u3 - 3.141592653589793
        if FAST:
            return (r0 * libdevice.fast_cosf(th1), r0 * libdevice.fast_sinf(th1),
                    r2 * libdevice.fast_cosf(th3), r2 * libdevice.fast_sinf(th3))
        else:
            return r0 * tl.cos(th1), r0 * tl.sin(th1), r2 * tl.cos(th3), r2 * tl.sin(th3)
    @triton.jit
    def _chain(g_in_ptr, g_target_ptr, out_ptr, flag_ptr, offs, n, z_prog, z_nu, z_read, inv_g_max,
              c0, c1, c2, c3, c4, mu_slope, mu_offset, mu_min, mu_max, sg_slope, sg_offset, sg_min, sg_max,
              x_floor, neg_log_ratio, q_coeff, neg_q_exp, inv_q_floor, q_max, read_sigma_factor,
              SAME_INPUT: tl.constexpr, HAS_PROG: tl.constexpr, HAS_DRIFT: tl.constexpr,
              HAS_READ: tl.constexpr, FAST: tl.constexpr):
        mask = offs < n
        gt = tl.load(g_target_ptr + offs, mask=mask, other=1.0).to(tl.float32)
        if SAME_INPUT:
            g = gt
        else:
            g = tl.load(g_in_ptr + offs, mask=mask, other=1.0).to(tl.float32)
        # a NaN or negative target sets the flag (plain predicated stores of 1: no reduction, no barrier)
        tl.store(flag_ptr + offs * 0, 1, mask=mask & ~(gt >= 0))
        x = gt * inv_g_max
        if HAS_PROG:
            sig = c4 * x + c3
            sig = sig * x + c2
            sig = sig * x + c1
            sig = sig * x + c0
            g = tl.maximum(g + tl.maximum(sig, 0.0) * z_prog, 0.0)
        lx = _log(tl.maximum(x, x_floor), FAST)  # shared by drift and read noise
        if HAS_DRIFT:
            mu = tl.minimum(tl.maximum(mu_slope * lx + mu_offset, mu_min), mu_max)
            sg = tl.minimum(tl.maximum(sg_slope * lx + sg_offset, sg_min), sg_max)
            nu = tl.abs(mu + sg * z_nu)
            g = g * _exp(nu * neg_log_ratio, FAST)
        if HAS_READ:
            # min(q_coeff / max(x^q_exp, q_floor), q_max) without a division
            q = tl.minimum(q_coeff * tl.minimum(_exp(neg_q_exp * lx, FAST), inv_q_floor), q_max)
            g = tl.maximum(g + tl.abs(g) * (q * read_sigma_factor) * z_read, 0.0)
        tl.store(out_ptr + offs, g.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _pcm_chain_kernel(g_in_ptr, g_target_ptr, out_ptr, flag_ptr, n, seed, seed_dev, inv_g_max,
                         c0, c1, c2, c3, c4,
                         mu_slope, mu_offset, mu_min, mu_max, sg_slope, sg_offset, sg_min, sg_max,
                         x_floor, neg_log_ratio, q_coeff, neg_q_exp, inv_q_floor, q_max, read_sigma_factor,
                         SAME_INPUT: tl.constexpr, HAS_PROG: tl.constexpr, HAS_DRIFT: tl.constexpr,
                         HAS_READ: tl.constexpr, DEVICE_SEED: tl.constexpr, PACKED: tl.constexpr,
                         ROUNDS: tl.constexpr, BLOCK: tl.constexpr, QUARTER: tl.constexpr,
                         FAST: tl.constexpr):
        pid = tl.program_id(0)
        if PACKED:
            # each Philox call gives 4 normals; the chain needs 3 per element, so a block is cut into
            # 4 quarters and 3 calls over a quarter's counters feed all 12 (none wasted)
            lane = tl.arange(0, QUARTER)
            base = pid * BLOCK + lane
            if DEVICE_SEED:
                ctr = pid * (2 * QUARTER) + lane
                a0, a1, a2, a3 = _normals4(seed, ctr, ROUNDS, FAST)
                b0, b1, b2, b3 = _normals4(seed, ctr + QUARTER, ROUNDS, FAST)
                v0, v1, v2, v3 = _normals4(seed_dev, pid * QUARTER + lane, ROUNDS, FAST)
            else:
                ctr = pid * (3 * QUARTER) + lane
                a0, a1, a2, a3 = _normals4(seed, ctr, ROUNDS, FAST)
                b0, b1, b2, b3 = _normals4(seed, ctr + QUARTER, ROUNDS, FAST)
                v0, v1, v2, v3 = _normals4(seed, ctr + 2 * QUARTER, ROUNDS, FAST)
            _chain(g_in_ptr, g_target_ptr, out_ptr, flag_ptr, base, n, a0, v0, b0,
                  inv_g_max, c0, c1, c2, c3, c4, mu_slope, mu_offset, mu_min, mu_max,
                  sg_slope, sg_offset, sg_min, sg_max, x_floor, neg_log_ratio, q_coeff, neg_q_exp, inv_q_floor,
                  q_max, read_sigma_factor, SAME_INPUT, HAS_PROG, HAS_DRIFT, HAS_READ, FAST)
            _chain(g_in_ptr, g_target_ptr, out_ptr, flag_ptr, base + QUARTER, n, a1, v1, b1,
                  inv_g_max, c0, c1, c2, c3, c4, mu_slope, mu_offset, mu_min, mu_max,
                  sg_slope, sg_offset, sg_min, sg_max, x_floor, neg_log_ratio, q_coeff, neg_q_exp, inv_q_floor,
                  q_max, read_sigma_factor, SAME_INPUT, HAS_PROG, HAS_DRIFT, HAS_READ, FAST)
            _chain(g_in_ptr, g_target_ptr, out_ptr, flag_ptr, base + 2 * QUARTER, n, a2, v2, b2,
                  inv_g_max, c0, c1, c2, c3, c4, mu_slope, mu_offset, mu_min, mu_max,
                  sg_slope, sg_offset, sg_min, sg_max, x_floor, neg_log_ratio, q_coeff, neg_q_exp, inv_q_floor,
                  q_max, read_sigma_factor, SAME_INPUT, HAS_PROG, HAS_DRIFT, HAS_READ, FAST)
            _chain(g_in_ptr, g_target_ptr, out_ptr, flag_ptr, base + 3 * QUARTER, n, a3, v3, b3,
                  inv_g_max, c0, c1, c2, c3, c4, mu_slope, mu_offset, mu_min, mu_max,
                  sg_slope, sg_offset, sg_min, sg_max, x_floor, neg_log_ratio, q_coeff, neg_q_exp, inv_q_floor,
                  q_max, read_sigma_factor, SAME_INPUT, HAS_PROG, HAS_DRIFT, HAS_READ, FAST)
        else:
            offs = pid * BLOCK + tl.arange(0, BLOCK)
            r0, r1, r2, r3 = _normals4(seed, offs, ROUNDS, FAST)
            if DEVICE_SEED:
                d0, d1, d2, d3 = _normals4(seed_dev, offs, ROUNDS, FAST)
                z_nu = d0
            else:
                z_nu = r1
            _chain(g_in_ptr, g_target_ptr, out_ptr, flag_ptr, offs, n, r0, z_nu, r2,
                  inv_g_max, c0, c1, c2, c3, c4, mu_slope, mu_offset, mu_min, mu_max,
                  sg_slope, sg_offset, sg_min, sg_max, x_floor, neg_log_ratio, q_coeff, neg_q_exp, inv_q_floor,
                  q_max, read_sigma_factor, SAME_INPUT, HAS_PROG, HAS_DRIFT, HAS_READ, FAST)


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator, device=generator.device))


def run_fused(components: Sequence[NoiseComponent], g_in: torch.Tensor, g_target: torch.Tensor,
              t_inference: float, g_max: float, generator: torch.Generator, out: torch.Tensor,
              device_generator: torch.Generator | None = None, block: int = FUSED_BLOCK,
              philox_rounds: int = PHILOX_ROUNDS, packed: bool = True,
              fast_math: bool | None = None) -> torch.Tensor:
    """Apply the fusable ``components`` to ``g_in`` (targets ``g_target``) into ``out`` in one pass.

    ``block`` (elements per program), ``philox_rounds`` and ``packed`` (3 Philox calls per 4 elements
    instead of one per element) are tuning knobs for the benchmark. ``fast_math`` (default: on for a
    GPU tensor) uses single-instruction approximate transcendentals; it must be off in Triton's CPU
    interpreter, which has no libdevice.
    """
    if block < 64 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 64, got {block}")
    if not (6 <= philox_rounds <= 10):
        raise ValueError(f"philox_rounds must be in [6, 10], got {philox_rounds}")
    if triton is None:
        raise ValueError("the fused path needs Triton, which is not installed")
    prog = next((c for c in components if isinstance(c, ProgrammingNoise)), None)
    drift = next((c for c in components if isinstance(c, PowerLawDrift)), None)
    read = next((c for c in components if isinstance(c, ReadNoise)), None)
    coeffs = [0.0] * MAX_PROG_COEFFS
    if prog is not None:
        factor = prog.scale * g_max / prog.g_ref
        coeffs[:len(prog.coeffs)] = [c * factor for c in prog.coeffs]
    if drift is not None:
        # nu * scale with scale folded into the clipped statistics: |mu + sg z| * s = |s mu + s sg z|
        s = drift.scale
        drift_args = (s * drift.mu_slope, s * drift.mu_offset, s * drift.mu_min, s * drift.mu_max,
                      s * drift.sigma_slope, s * drift.sigma_offset, s * drift.sigma_min, s * drift.sigma_max)
        x_floor, neg_log_ratio = drift.x_floor, -drift.log_time_ratio(t_inference)
    else:
        drift_args = (0.0,) * 8
        x_floor, neg_log_ratio = (read.x_floor if read is not None else 1e-7), 0.0
    if read is not None:
        read_args = (read.q_coeff, -read.q_exp, 1.0 / read.q_floor, read.q_max,
                     read.scale * read.time_factor(t_inference))
    else:
        read_args = (0.0, 0.0, 1.0, 1.0, 0.0)
    # +inf clip bounds become float32's largest value (kernel scalars are float32)
    drift_args = tuple(max(min(v, 3.0e38), -3.0e38) for v in drift_args)
    read_args = tuple(max(min(v, 3.0e38), -3.0e38) for v in read_args)
    src, tgt, dst = g_in.reshape(-1), g_target.reshape(-1), out.view(-1)
    if not tgt.is_contiguous() or not src.is_contiguous():
        raise ValueError("the fused path needs contiguous conductance tensors")
    same = src.data_ptr() == tgt.data_ptr()
    fast = (out.is_cuda if fast_math is None else fast_math) and libdevice is not None
    flag = torch.zeros(1, dtype=torch.int32, device=out.device)
    seed = _seed(generator)
    seed_dev = _seed(device_generator) if device_generator is not None else 0
    n = src.numel()
    for k, start in enumerate(range(0, n, LAUNCH_ELEMS)):
        m = min(LAUNCH_ELEMS, n - start)
        grid = (math.ceil(m / block),)
        _pcm_chain_kernel[grid](src[start:], tgt[start:], dst[start:], flag, m, (seed + k) % (2 ** 31 - 1),
                      (seed_dev + k) % (2 ** 31 - 1), 1.0 / g_max, *coeffs, *drift_args, x_floor,
                      neg_log_ratio, *read_args,
                      SAME_INPUT=same, HAS_PROG=prog is not None, HAS_DRIFT=drift is not None,
                      HAS_READ=read is not None, DEVICE_SEED=device_generator is not None,
                      PACKED=packed, ROUNDS=philox_rounds, BLOCK=block, QUARTER=block // 4,
                      FAST=fast)
    if int(flag.item()):
        bad = ~(tgt >= 0)
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"g_target must be finite and >= 0 microsiemens; element {i} (flat index) "
                         f"is {float(tgt[i])}")
    return out
