"""A noisy analog matmul: ``y = x @ W^T`` as a crossbar computes it, emulated in one GEMM kernel.

Numerics (``x [M, K]``, ``W [N, K]`` as in ``nn.Linear``, config :class:`AnalogConfig`):

1. **Programming** (once, :func:`program_weights`): the K inputs are cut into tiles of
   ``tile_rows`` rows. Each tile column (tile ``t``, output ``n``) gets the scale
   ``s[t, n] = max_{k in t} |W[n, k]|`` -- the same per-column scale that
   ``simcim.crossbar.tile_scales`` maps to ``g_max`` -- and holds the unit weight
   ``u = W / s`` (0 where ``s = 0``), stored in bf16 (the conductance resolution of this model).
2. **DAC**: each input row is scaled by its input range ``r[m, t]`` -- its abs-max (1 for an all-zero
   row), per token or, with ``range_per_tile``, per token and tile; 1 with ``input_range="none"`` --
   clipped to ``input_bound`` and rounded to ``L = 2^(dac_bits-1) - 1`` levels per sign:
   ``c = floor(clip(x * L / (r * B), -L, L) + 1/2)`` in fp32 (``B = input_bound``), an integer code in ``[-L, L]``.
3. **Analog MVM per tile**: ``z[m, t, n] = (sum_{k in t} c[m, k] u[n, k]) * B / L``, in fp32.
4. **Read noise**: ``z += sqrt(read_noise^2 * sum_{k in t} (c B / L)^2 + out_noise^2) * eps``, one
   standard normal ``eps`` per output and tile. This is the exact distribution of independent
   Gaussian read noise of std ``read_noise`` on every unit weight (a sum of Gaussians) plus
   additive output noise ``out_noise``. The kernel draws ``eps`` with Philox4x32-10 keyed by ``seed + t``;
   the reference draws it with torch, so the two agree in distribution, not sample by sample. On the GPU
   one Philox call feeds four outputs a thread holds (counter: the flat offset ``m * N + n`` of the first),
   through two Box-Muller transforms at the special-function unit's precision (inline PTX, 18 SASS
   instructions a normal against 190 for one ``tl.randn`` an output); which four share a call follows the
   launch config, so a seed reproduces a sample for one config. The interpreter draws ``tl.randn`` per
   output, counter ``m * N + n``.
5. **ADC**: ``z`` is clipped to ``[-adc_bound, adc_bound]`` and rounded to
   ``A = 2^(adc_bits-1) - 1`` levels per sign: ``q = floor(z * A / adc_bound + 1/2) * adc_bound / A``.
6. **Digital sum**: ``y[m, n] = sum_t r[m, t] s[t, n] q[m, t, n] (+ bias[n])``, output in ``x``'s dtype.

``simcim.analog`` runs whole models through this kernel where it covers their periphery (see
``simcim.analog.engines``) and through its own PyTorch reference otherwise.

Everything but step 4 is deterministic; with the noise off, kernel and reference agree up to the
fp32 summation order inside a tile, which can move a value that lies within rounding of an ADC
step boundary by one step.
"""

from __future__ import annotations

import dataclasses

import torch

from simcim.analog.periphery import signed_levels
from simcim.kernels._common import HAVE_TRITON, interpreting, use_triton

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from simcim.kernels._common import mma

__all__ = [
    "AnalogConfig",
    "AnalogWeights",
    "AnalogLinear",
    "program_weights",
    "dac",
    "analog_matmul",
    "analog_matmul_reference",
]


def _philox_normal_asm(rounds: int = 10) -> str:
    """PTX for four outputs a call: ``$0..3 = z + std * eps`` (``z`` in ``$4..7``, ``std`` in ``$8..11``) with four
    standard normals from one Philox4x32 call (counter ``$12``, key ``$16``; the constants and round structure
    of ``triton.language.random.philox``, so the words equal ``tl.randint4x(key, counter)``) through two
    Box-Muller transforms: ``sqrt(-2 ln u1) (cos, sin)(2 pi u2)``, ``u1`` in ``(0, 1]`` and ``2 pi u2`` in
    ``[-pi, pi)`` from the top 23 bits of a word, with MUFU ``lg2``, ``sqrt``, ``sin`` and ``cos``."""
    mul_a, mul_b, key_a, key_b = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85
    lines = ["{", ".reg .b32 c0, c1, c2, c3, k0, k1, h0, l0, h1, l1, a, b, r, s, c;", ".reg .b64 w;",
             "mov.b32 c0, $12;", "mov.b32 c1, 0;", "mov.b32 c2, 0;", "mov.b32 c3, 0;", "mov.b32 k0, $16;",
             "mov.b32 k1, 0;"]
    for i in range(rounds):
        lines += [f"mul.wide.u32 w, c0, {mul_a};", "mov.b64 {l0, h0}, w;", f"mul.wide.u32 w, c2, {mul_b};",
                  "mov.b64 {l1, h1}, w;", "xor.b32 c0, h1, c1;", "xor.b32 c0, c0, k0;", "xor.b32 c2, h0, c3;",
                  "xor.b32 c2, c2, k1;", "mov.b32 c1, l1;", "mov.b32 c3, l0;"]
        if i < rounds - 1:
            lines += [f"add.u32 k0, k0, {key_a};", f"add.u32 k1, k1, {key_b};"]
    for j, (u, v) in enumerate((("c0", "c1"), ("c2", "c3"))):
        lines += [f"shr.u32 a, {u}, 9;", "or.b32 a, a, 0x3F800000;", "sub.ftz.f32 a, 0f40000000, a;",  # 2 - [1, 2)
                  "lg2.approx.ftz.f32 a, a;", "mul.ftz.f32 a, a, 0fBFB17218;", "sqrt.approx.ftz.f32 r, a;",  # -2 ln 2
                  f"shr.u32 b, {v}, 9;", "or.b32 b, b, 0x40000000;", "sub.ftz.f32 b, b, 0f40400000;",  # [2, 4) - 3
                  "mul.ftz.f32 b, b, 0f40490FDB;", "sin.approx.ftz.f32 s, b;", "cos.approx.ftz.f32 c, b;",  # x pi
                  "mul.ftz.f32 c, r, c;", "mul.ftz.f32 s, r, s;",
                  f"fma.rn.ftz.f32 ${2 * j}, ${8 + 2 * j}, c, ${4 + 2 * j};",
                  f"fma.rn.ftz.f32 ${2 * j + 1}, ${9 + 2 * j}, s, ${5 + 2 * j};"]
    lines.append("}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class AnalogConfig:
    """Crossbar periphery: tile height, converter resolutions and ranges, read noise."""

    tile_rows: int = 512  # inputs per crossbar tile; each tile column has its own scale and ADC
    dac_bits: int = 8  # signed DAC: integer codes in [-(2^(b-1) - 1), 2^(b-1) - 1]
    adc_bits: int = 8
    adc_bound: float = 16.0  # ADC full scale, in units of one unit-input x unit-weight product
    read_noise: float = 0.0  # std of each unit weight's read noise, redrawn every MVM
    out_noise: float = 0.0  # std of additive noise on each tile output, same units as adc_bound
    input_range: str = "abs_max"  # "abs_max": inputs divided by their abs-max; "none": taken as they are
    input_bound: float = 1.0  # DAC full scale, in units of the input range
    range_per_tile: bool = False  # abs-max per token and tile (aihwkit's per-tile noise management), not per token

    def __post_init__(self) -> None:
        if self.tile_rows < 16 or self.tile_rows & (self.tile_rows - 1):
            raise ValueError(f"tile_rows must be a power of two >= 16; got {self.tile_rows}")
        if not 2 <= self.dac_bits <= 9:
            # codes up to 255 are exact in bf16, the tensor-core operand type
            raise ValueError(f"dac_bits must be between 2 and 9; got {self.dac_bits}")
        if not 2 <= self.adc_bits <= 24:
            raise ValueError(f"adc_bits must be between 2 and 24; got {self.adc_bits}")
        if not self.adc_bound > 0:
            raise ValueError(f"adc_bound must be > 0; got {self.adc_bound}")
        if self.input_range not in ("abs_max", "none"):
            raise ValueError(f"input_range must be 'abs_max' or 'none'; got {self.input_range!r}")
        if not self.input_bound > 0:
            raise ValueError(f"input_bound must be > 0; got {self.input_bound}")
        if not (self.read_noise >= 0 and self.out_noise >= 0):
            raise ValueError(f"read_noise ({self.read_noise}) and out_noise ({self.out_noise}) must be >= 0")

    dac_levels = property(lambda self: signed_levels(self.dac_bits))
    adc_levels = property(lambda self: signed_levels(self.adc_bits))

    @property
    def noisy(self) -> bool:
        return self.read_noise > 0 or self.out_noise > 0


@dataclasses.dataclass
class AnalogWeights:
    """Programmed crossbar: unit weights ``unit [N, K]`` (bf16) and tile-column scales ``scales [T, N]``.

    ``read_var [N, K]`` (bf16, optional): each unit weight's own read-noise variance, in place of the config's
    uniform ``read_noise`` (step 4 then draws ``sqrt(sum_k (c_k B / L)^2 read_var[n, k] + out_noise^2) * eps``).
    """

    unit: torch.Tensor
    scales: torch.Tensor
    config: AnalogConfig
    read_var: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.read_var is not None:
            if self.read_var.shape != self.unit.shape:
                raise ValueError(f"read_var must be {tuple(self.unit.shape)} like unit; "
                                 f"got {tuple(self.read_var.shape)}")
            if self.config.read_noise > 0:
                raise ValueError("give either read_var (per weight) or config.read_noise (uniform), not both")

    @property
    def noisy(self) -> bool:
        return self.config.noisy or self.read_var is not None

    @property
    def n(self) -> int:
        return self.unit.shape[-2]

    @property
    def k(self) -> int:
        return self.unit.shape[-1]

    @property
    def tiles(self) -> int:
        return self.scales.shape[-2]

    @property
    def groups(self) -> int | None:
        """Number of matrices of a grouped array (``unit [G, N, K]``, ``scales [G, T, N]``), None for one."""
        return self.unit.shape[0] if self.unit.dim() == 3 else None


def program_weights(w: torch.Tensor, config: AnalogConfig) -> AnalogWeights:
    """Map ``w [N, K]`` onto tiles of ``config.tile_rows`` inputs with one scale per tile column."""
    if w.dim() != 2:
        raise ValueError(f"weight must be 2-d [N, K]; got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or Inf")
    n, k = w.shape
    tiles = -(-k // config.tile_rows)
    wf = torch.nn.functional.pad(w.float(), (0, tiles * config.tile_rows - k))
    scales = wf.abs().reshape(n, tiles, config.tile_rows).amax(-1)  # [N, T]
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))
    unit = (wf.reshape(n, tiles, config.tile_rows) / safe[..., None]).reshape(n, -1)[:, :k]
    return AnalogWeights(unit.to(torch.bfloat16).contiguous(), scales.t().contiguous(), config)


def _row_range(x: torch.Tensor, config: AnalogConfig) -> torch.Tensor:
    """Per-token input range ``r [M]`` (the kernel's input when the range is not per tile)."""
    if config.input_range == "none":
        return torch.ones(x.shape[0], device=x.device, dtype=torch.float32)
    r = x.detach().abs().amax(-1).float()
    return torch.where(r > 0, r, torch.ones_like(r))


def dac(x: torch.Tensor, config: AnalogConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference DAC: integer codes ``[M, K]`` (fp32) and the input range ``r [M, T]`` of each token and tile."""
    m, k = x.shape
    tiles = -(-k // config.tile_rows)
    xt = torch.nn.functional.pad(x.detach().float(), (0, tiles * config.tile_rows - k)).reshape(m, tiles, -1)
    if config.range_per_tile and config.input_range == "abs_max":
        r = xt.abs().amax(-1)
        r = torch.where(r > 0, r, torch.ones_like(r))
    else:
        r = _row_range(x, config)[:, None].expand(m, tiles)
    levels = config.dac_levels
    inv = levels / (r * config.input_bound)
    codes = torch.floor((xt * inv[..., None]).clamp(-levels, levels) + 0.5)
    return codes.reshape(m, -1)[:, :k], r.contiguous()


def analog_matmul_reference(
    x: torch.Tensor,
    aw: AnalogWeights,
    bias: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Steps 2-6 of the module docstring in plain PyTorch (fp32); noise drawn from ``generator``."""
    cfg = aw.config
    _check_x(x, aw)
    codes, r = dac(x, cfg)
    m, k = codes.shape
    tiles, rows = aw.tiles, cfg.tile_rows
    pad = tiles * rows - k
    c = torch.nn.functional.pad(codes, (0, pad)).reshape(m, tiles, rows)
    u = torch.nn.functional.pad(aw.unit.float(), (0, pad)).reshape(aw.n, tiles, rows)
    inv_l = torch.tensor(cfg.input_bound / cfg.dac_levels, dtype=torch.float32)
    z = torch.einsum("mtk,ntk->mtn", c, u) * inv_l  # [M, T, N]
    if aw.noisy:
        if aw.read_var is not None:
            v = torch.nn.functional.pad(aw.read_var.float(), (0, pad)).reshape(aw.n, tiles, rows)
            var = torch.einsum("mtk,ntk->mtn", (c * inv_l) ** 2, v)
        else:
            var = (cfg.read_noise**2 * ((c * inv_l) ** 2).sum(-1))[..., None]  # [M, T, 1]
        std = torch.sqrt(var + cfg.out_noise**2)
        eps = torch.randn(z.shape, generator=generator, dtype=torch.float32, device="cpu").to(z.device)
        z = z + std * eps
    a, bound = cfg.adc_levels, cfg.adc_bound
    q = torch.floor(z.clamp(-bound, bound) * (a / bound) + 0.5) * (bound / a)
    y = (q * aw.scales[None] * r[..., None]).sum(1)
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def grouped_reference(x: torch.Tensor, aw: AnalogWeights, offsets: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The grouped product in plain PyTorch: each group's rows through :func:`analog_matmul_reference` on its
    own matrix."""
    y = torch.zeros((x.shape[0], aw.n), device=x.device, dtype=x.dtype)
    bounds = offsets.tolist()
    for g in range(aw.groups):
        lo, hi = bounds[g], bounds[g + 1]
        if hi > lo:
            var = aw.read_var[g] if aw.read_var is not None else None
            y[lo:hi] = analog_matmul_reference(x[lo:hi], AnalogWeights(aw.unit[g], aw.scales[g], aw.config, var),
                                               None, generator)
    return y


def _check_x(x: torch.Tensor, aw: AnalogWeights) -> None:
    if x.dim() != 2 or x.shape[1] != aw.k:
        raise ValueError(f"x must be [M, {aw.k}]; got {tuple(x.shape)}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x dtype {x.dtype} is not supported (fp16, bf16, fp32)")


if HAVE_TRITON:

    _NOISE_ASM = tl.constexpr(_philox_normal_asm())
    _NOISE_CONSTRAINTS = tl.constexpr(",".join(["=r"] * 4 + ["r"] * 16))

    @triton.jit
    def add_normal_noise4(z, std, counter, key):
        """``z + std * eps``, ``eps`` standard normal, four elements a Philox call (``_philox_normal_asm``): each
        group of four that a thread holds takes the counter of its first element. ``std`` broadcasts to
        ``z``; ``counter`` is int32 like ``z``, ``key`` an int32 scalar."""
        sd = tl.full(z.shape, 0.0, tl.float32) + std
        cnt = tl.full(z.shape, 0, tl.int32) + counter
        k = tl.full(z.shape, 0, tl.int32) + key
        return tl.inline_asm_elementwise(_NOISE_ASM, _NOISE_CONSTRAINTS, [z, sd, cnt, k], tl.float32, True, 4)

    @triton.jit
    def _dac_kernel(
        X,
        RIN,
        XC,
        SQ,
        R,
        M,
        K,
        n_tiles,
        stride_xm,
        levels,
        input_bound,
        code_unit,
        TILE: tl.constexpr,
        PER_TILE: tl.constexpr,
        BLOCK_R: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
        t = tl.program_id(1)
        r_mask = rows < M
        if PER_TILE:  # abs-max of this token's slice of the tile: one pass to find it, one to convert
            amax = tl.zeros([BLOCK_R, BLOCK_K], tl.float32)
            for k0 in range(t * TILE, tl.minimum(t * TILE + TILE, K), BLOCK_K):
                offs = k0 + tl.arange(0, BLOCK_K)
                mask = r_mask[:, None] & (offs[None, :] < K)
                x = tl.load(X + rows[:, None].to(tl.int64) * stride_xm + offs[None, :], mask=mask, other=0.0)
                amax = tl.maximum(amax, tl.abs(x.to(tl.float32)))
            r = tl.max(amax, 1)
            r = tl.where(r > 0, r, 1.0)
        else:
            r = tl.load(RIN + rows, mask=r_mask, other=1.0)
        inv = levels / (r * input_bound)
        sq = tl.zeros([BLOCK_R, BLOCK_K], tl.float32)
        for k0 in range(t * TILE, tl.minimum(t * TILE + TILE, K), BLOCK_K):
            offs = k0 + tl.arange(0, BLOCK_K)
            mask = r_mask[:, None] & (offs[None, :] < K)
            x = tl.load(X + rows[:, None].to(tl.int64) * stride_xm + offs[None, :], mask=mask, other=0.0)
            v = tl.minimum(tl.maximum(x.to(tl.float32) * inv[:, None], -levels), levels)
            code = tl.math.floor(v + 0.5)
            tl.store(XC + rows[:, None].to(tl.int64) * K + offs[None, :], code.to(tl.bfloat16), mask=mask)
            unit = code * code_unit
            sq += unit * unit
        tl.store(SQ + rows * n_tiles + t, tl.sum(sq, 1), mask=r_mask)
        tl.store(R + rows * n_tiles + t, r, mask=r_mask)

    @triton.jit
    def _tile_epilogue(
        acc,
        acc_var,
        y,
        t,
        offs_m,
        offs_n,
        m_mask,
        n_mask,
        S,
        SQ,
        R,
        N,
        n_tiles,
        seed,
        rng_offs,
        inv_levels,
        adc_bound,
        adc_levels,
        read_var,
        out_var,
        NOISE: tl.constexpr,
        ASM: tl.constexpr,
        WVAR: tl.constexpr,
    ):
        z = acc * inv_levels
        if NOISE:
            if WVAR:  # per-weight read variance: sum_k (c_k B / L)^2 var_nk, accumulated beside the product
                std = tl.sqrt(acc_var * (inv_levels * inv_levels) + out_var)
            else:
                sq = tl.load(SQ + offs_m * n_tiles + t, mask=m_mask, other=0.0)
                std = tl.sqrt(read_var * sq + out_var)[:, None]
            if ASM:
                z = add_normal_noise4(z, std, rng_offs, seed + t)
            else:
                z += std * tl.randn(seed + t, rng_offs)
        z = tl.minimum(tl.maximum(z, -adc_bound), adc_bound)
        q = tl.math.floor(z * (adc_levels / adc_bound) + 0.5) * (adc_bound / adc_levels)
        s = tl.load(S + t * N + offs_n, mask=n_mask, other=0.0)
        r = tl.load(R + offs_m * n_tiles + t, mask=m_mask, other=0.0)
        return y + q * s[None, :] * r[:, None]

    @triton.jit
    def _analog_kernel(
        XC,
        U,
        V,
        S,
        R,
        SQ,
        B,
        Y,
        OFFS,
        M,
        N,
        K,
        n_tiles,
        seed,
        stride_un,
        stride_ym,
        stride_ue,
        stride_se,
        inv_levels,
        adc_bound,
        adc_levels,
        read_var,
        out_var,
        TILE: tl.constexpr,
        NOISE: tl.constexpr,
        ASM: tl.constexpr,
        WVAR: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        NESTED: tl.constexpr,
        GROUPED: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr,
    ):
        pid = tl.program_id(0)
        grid_n = tl.cdiv(N, BLOCK_N)
        if GROUPED:
            # one matrix per group (an expert): its rows are OFFS[g]..OFFS[g+1] of the sorted inputs; programs
            # past a group's last row block only see masked rows
            g = tl.program_id(1)
            row0 = tl.load(OFFS + g)
            row1 = tl.load(OFFS + g + 1)
            pid_m = pid // grid_n
            pid_n = pid % grid_n
            offs_m = row0 + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            m_mask = offs_m < row1
            U += g.to(tl.int64) * stride_ue
            V += g.to(tl.int64) * stride_ue
            S += g.to(tl.int64) * stride_se
        else:
            grid_m = tl.cdiv(M, BLOCK_M)
            # grouped launch order: GROUP_M row blocks share each weight column block while it is in L2
            per_group = GROUP_M * grid_n
            first_m = (pid // per_group) * GROUP_M
            rows = tl.minimum(grid_m - first_m, GROUP_M)
            pid_m = first_m + (pid % per_group) % rows
            pid_n = (pid % per_group) // rows
            offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
            m_mask = offs_m < M
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        n_mask = offs_n < N
        x_base = XC + offs_m[:, None].to(tl.int64) * K + offs_k[None, :]
        u_base = U + offs_n[:, None].to(tl.int64) * stride_un + offs_k[None, :]
        v_base = V + offs_n[:, None].to(tl.int64) * stride_un + offs_k[None, :]
        y = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        rng_offs = offs_m[:, None] * N + offs_n[None, :]
        if NESTED:
            # one pipelined K loop per tile, then that tile's noise and ADC
            for t in range(0, n_tiles):
                acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                acc_var = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                for k0 in range(t * TILE, tl.minimum(t * TILE + TILE, K), BLOCK_K):
                    k_mask = (k0 + offs_k) < K
                    x = tl.load(x_base + k0, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
                    u = tl.load(u_base + k0, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
                    acc += mma(x, tl.trans(u))
                    if WVAR:
                        v = tl.load(v_base + k0, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
                        xf = x.to(tl.float32)
                        acc_var += mma((xf * xf).to(v.dtype), tl.trans(v))
                y = _tile_epilogue(
                    acc,
                    acc_var,
                    y,
                    t,
                    offs_m,
                    offs_n,
                    m_mask,
                    n_mask,
                    S,
                    SQ,
                    R,
                    N,
                    n_tiles,
                    seed,
                    rng_offs,
                    inv_levels,
                    adc_bound,
                    adc_levels,
                    read_var,
                    out_var,
                    NOISE,
                    ASM,
                    WVAR,
                )
        else:
            # one flat K loop; the tile epilogue runs when a chunk closes a tile
            acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            acc_var = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for k0 in range(0, K, BLOCK_K):
                k_mask = (k0 + offs_k) < K
                x = tl.load(x_base + k0, mask=m_mask[:, None] & k_mask[None, :], other=0.0)
                u = tl.load(u_base + k0, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
                acc += mma(x, tl.trans(u))
                if WVAR:
                    v = tl.load(v_base + k0, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
                    xf = x.to(tl.float32)
                    acc_var += mma((xf * xf).to(v.dtype), tl.trans(v))
                if ((k0 + BLOCK_K) % TILE == 0) | (k0 + BLOCK_K >= K):
                    y = _tile_epilogue(
                        acc,
                        acc_var,
                        y,
                        k0 // TILE,
                        offs_m,
                        offs_n,
                        m_mask,
                        n_mask,
                        S,
                        SQ,
                        R,
                        N,
                        n_tiles,
                        seed,
                        rng_offs,
                        inv_levels,
                        adc_bound,
                        adc_levels,
                        read_var,
                        out_var,
                        NOISE,
                        ASM,
                        WVAR,
                    )
                    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
                    acc_var = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        if HAS_BIAS:
            y += tl.load(B + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(
            Y + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :],
            y.to(Y.dtype.element_ty),
            mask=m_mask[:, None] & n_mask[None, :],
        )


def _launch_config(m: int, n: int) -> tuple[int, int, int, int, int, bool]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, nested tile loop)."""
    if interpreting():
        return 32, 32, 32, 4, 1, False
    if m <= 64:
        return 64, 128, 64, 4, 4, True
    return 128, 256, 64, 8, 3, True


def analog_matmul(
    x: torch.Tensor,
    aw: AnalogWeights,
    bias: torch.Tensor | None = None,
    seed: int = 0,
    out: torch.Tensor | None = None,
    config: tuple[int, int, int, int, int] | None = None,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """The crossbar matmul of the module docstring; noise (if any) is drawn from Philox keyed by ``seed``.

    Grouped (``aw.unit [G, N, K]``, e.g. one matrix per expert): ``x``'s rows are sorted by group and
    ``offsets [G + 1]`` (int32, on ``x``'s device) bounds group ``g``'s rows, ``offsets[g]:offsets[g + 1]``;
    one launch computes every group's rows on its own matrix.
    """
    _check_x(x, aw)
    cfg = aw.config
    m = x.shape[0]
    if (offsets is None) != (aw.groups is None):
        raise ValueError("offsets go with a grouped array (unit [G, N, K]) and only with one")
    if offsets is not None and offsets.shape != (aw.groups + 1,):
        raise ValueError(f"offsets must be [{aw.groups + 1}] (groups + 1); got {tuple(offsets.shape)}")
    if bias is not None and bias.shape != (aw.n,):
        raise ValueError(f"bias must be [{aw.n}]; got {tuple(bias.shape)}")
    if out is not None and (out.shape != (m, aw.n) or out.dtype != x.dtype or out.stride(1) != 1):
        raise ValueError(f"out must be a {x.dtype} tensor of shape ({m}, {aw.n}) with unit column stride")
    if not (isinstance(seed, int) and 0 <= seed < 2**31):
        raise ValueError(f"seed must be an integer in [0, 2^31); got {seed!r}")
    if m * aw.n >= 2**31:
        raise ValueError(f"M * N = {m * aw.n} is too large for the 32-bit noise counter; split the batch")
    if not use_triton("simcim.kernels.analog_matmul", x, aw.unit, aw.scales):
        g = torch.Generator().manual_seed(seed)
        y = grouped_reference(x, aw, offsets, g) if offsets is not None else analog_matmul_reference(x, aw, bias, g)
        return y if out is None else out.copy_(y)
    if x.stride(1) != 1:
        x = x.contiguous()
    k = aw.k
    per_tile = cfg.range_per_tile and cfg.input_range == "abs_max"
    r_in = r = torch.empty((m, aw.tiles), device=x.device, dtype=torch.float32)
    if not per_tile:
        r_in = _row_range(x, cfg)
    codes = torch.empty((m, k), device=x.device, dtype=torch.bfloat16)
    sq = torch.empty((m, aw.tiles), device=x.device, dtype=torch.float32)
    block_m, block_n, block_k, warps, stages, nested = config or _launch_config(m, aw.n)
    if cfg.tile_rows % block_k:
        block_k = cfg.tile_rows
    dac_rows, dac_k = (16, 32) if interpreting() else (4, 256)
    dac_k = min(cfg.tile_rows, dac_k)
    _dac_kernel[(triton.cdiv(m, dac_rows), aw.tiles)](
        x,
        r_in,
        codes,
        sq,
        r,
        m,
        k,
        aw.tiles,
        x.stride(0),
        float(cfg.dac_levels),
        cfg.input_bound,
        cfg.input_bound / cfg.dac_levels,
        TILE=cfg.tile_rows,
        PER_TILE=per_tile,
        BLOCK_R=dac_rows,
        BLOCK_K=dac_k,
    )
    y = torch.empty((m, aw.n), device=x.device, dtype=x.dtype) if out is None else out
    if offsets is None:
        grid: tuple[int, ...] = (triton.cdiv(m, block_m) * triton.cdiv(aw.n, block_n),)
    else:
        most = int((offsets[1:] - offsets[:-1]).max()) if aw.groups else 0
        grid = (max(triton.cdiv(most, block_m), 1) * triton.cdiv(aw.n, block_n), aw.groups)
    _analog_kernel[grid](
        codes,
        aw.unit,
        aw.read_var if aw.read_var is not None else aw.unit,
        aw.scales,
        r,
        sq,
        bias if bias is not None else r,
        y,
        offsets if offsets is not None else r,
        m,
        aw.n,
        k,
        aw.tiles,
        seed,
        aw.unit.stride(-2),
        y.stride(0),
        aw.n * aw.k,
        aw.tiles * aw.n,
        cfg.input_bound / cfg.dac_levels,
        cfg.adc_bound,
        float(cfg.adc_levels),
        cfg.read_noise**2,
        cfg.out_noise**2,
        TILE=cfg.tile_rows,
        NOISE=aw.noisy,
        WVAR=aw.read_var is not None,
        ASM=not interpreting(),
        NESTED=nested,
        GROUPED=offsets is not None,
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        GROUP_M=8,
        num_warps=warps,
        num_stages=stages,
    )
    return y


class AnalogLinear(torch.nn.Module):
    """``nn.Linear`` on an emulated crossbar; each forward draws fresh read noise (seeded, reproducible)."""

    def __init__(self, aw: AnalogWeights, bias: torch.Tensor | None = None, seed: int = 0) -> None:
        super().__init__()
        self.config = aw.config
        self.in_features, self.out_features = aw.k, aw.n
        self.register_buffer("unit", aw.unit)
        self.register_buffer("scales", aw.scales)
        self.register_buffer("bias", bias)
        self.seed = seed
        self.calls = 0

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, config: AnalogConfig, seed: int = 0) -> AnalogLinear:
        bias = linear.bias.detach().float() if linear.bias is not None else None
        return cls(program_weights(linear.weight.detach(), config), bias, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        aw = AnalogWeights(self.unit, self.scales, self.config)
        # a new Philox key per call and tile: (seed, call) -> seed * 2^20 + call * n_tiles
        call_seed = (self.seed * (1 << 20) + self.calls * aw.tiles) % (1 << 31)
        self.calls += 1
        y = analog_matmul(x.reshape(-1, self.in_features), aw, self.bias, call_seed)
        return y.reshape(*lead, self.out_features)
