"""The fused CUDA path (fast math) against the torch path, on a real GPU; skipped without one."""

from __future__ import annotations

import pytest
import torch

from simcim.noise_models.presets import device_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

N = 1 << 22


def _gen(seed: int) -> torch.Generator:
    return torch.Generator("cuda").manual_seed(seed)


@pytest.mark.parametrize("g_t", [0.5, 5.0, 12.5, 25.0])
@pytest.mark.parametrize("t", [0.0, 86400.0, 3.15e7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_matches_torch_path(g_t: float, t: float, dtype: torch.dtype) -> None:
    model = device_model("pcm", 1.0)
    target = torch.full((N,), g_t, device="cuda", dtype=dtype)
    a = model.apply(target, _gen(1), t).float()
    b = model.apply(target, _gen(2), t, fused=False).float()
    sd = float(b.std())
    assert torch.isfinite(a).all() and (a >= 0).all()
    # 6 standard errors: the distributions are not normal (clipping, lognormal drift), so a bit wider
    assert abs(float(a.mean() - b.mean())) < 6 * sd * (2 / N) ** 0.5
    assert abs(float(a.std()) / sd - 1) < 6 * (1 / N) ** 0.5 + (0.004 if dtype == torch.bfloat16 else 0)


def test_fused_is_reproducible_and_in_place_matches() -> None:
    model = device_model("pcm", 1.0)
    target = torch.rand(N + 123, device="cuda", generator=_gen(0)) * 25
    a = model.apply(target, _gen(3), 3600.0)
    b = model.apply(target, _gen(3), 3600.0)
    c = target.clone()
    model.apply(c, _gen(3), 3600.0, out=c)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_device_generator_shares_drift_across_reads() -> None:
    model = device_model("pcm", 0.0)  # pure drift: the read is exactly G_T ((t + t0)/t0)^-nu
    target = torch.full((N,), 12.5, device="cuda")
    r1 = model.read(target, target, 3600.0, _gen(4), device_generator=_gen(9))
    r2 = model.read(target, target, 86400.0, _gen(5), device_generator=_gen(9))
    nu1 = -torch.log(r1 / 12.5) / torch.log1p(torch.tensor(3600.0 / 20.0))
    nu2 = -torch.log(r2 / 12.5) / torch.log1p(torch.tensor(86400.0 / 20.0))
    assert float((nu1 - nu2).abs().max()) < 1e-4  # the same exponent for each device at both times


def test_fused_rejects_nan_targets() -> None:
    target = torch.full((N,), 5.0, device="cuda")
    target[12345] = float("nan")
    with pytest.raises(ValueError, match="element 12345"):
        device_model("pcm", 1.0).apply(target, _gen(0), 0.0)
