"""Presets build and behave as documented; bad inputs raise one-line ValueErrors; the fused GPU
kernel (run here in Triton's CPU interpreter) draws from the same distributions as the torch path."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from simcim.noise_models.base import DeviceModel
from simcim.noise_models.drift import PowerLawDrift
from simcim.noise_models.faults import StuckAtFaults
from simcim.noise_models.fused import fusable
from simcim.noise_models.levels import FiniteLevels
from simcim.noise_models.presets import PRESETS, device_model
from simcim.noise_models.programming import ProgrammingNoise
from simcim.noise_models.read import ReadNoise

ROOT = Path(__file__).resolve().parents[2]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("level", [0.0, 0.5, 1.0, 2.0])
def test_every_preset_builds_and_keeps_conductances_physical(name: str, level: float) -> None:
    if name == "stuck_at" and level > 1:
        with pytest.raises(ValueError, match="fraction of devices"):
            device_model(name, level)
        return
    model = device_model(name, level)
    target = torch.rand(4096, generator=_gen()) * model.g_max
    for t in (0.0, 1.0, 3600.0, 86400.0, 3.15e7):
        g = model.apply(target, _gen(1), t)
        assert g.shape == target.shape and torch.isfinite(g).all()
        if name not in ("gaussian", "multiplicative"):  # plain Gaussian models are not clamped, by design
            assert (g >= 0).all()
    assert model.description


def test_ideal_and_zero_level_models_change_nothing() -> None:
    target = torch.rand(1000, generator=_gen()) * 25
    assert torch.equal(device_model("ideal", 1.0).apply(target, _gen(), 3600.0), target)
    assert torch.equal(device_model("rram_wan2022", 0.0).apply(target, _gen(), 3600.0), target)


def test_pcm_level_zero_is_pure_drift() -> None:
    model = device_model("pcm", 0.0)
    assert [type(c).__name__ for c in model.components if not c.is_identity] == ["PowerLawDrift"]
    target = torch.full((10_000,), 12.5)
    g = model.apply(target, _gen(), 0.0)
    assert torch.equal(g, target)  # t = 0 is the first read: no drift yet
    g = model.apply(target, _gen(), 86400.0)
    assert (g < target).all()  # conductance only decays


def test_pcm_mean_conductance_decays_as_power_law() -> None:
    model = device_model("pcm", 1.0)
    target = torch.full((100_000,), 12.5)  # mu_nu = 0.049 here
    ratios = []
    for t in (3600.0, 86400.0, 3.15e7):
        g = model.apply(target, _gen(2), t)
        ratios.append(float(torch.log(g / 12.5).mean()))
    expected = [-0.049 * math.log1p(t / 20.0) for t in (3600.0, 86400.0, 3.15e7)]
    for got, want in zip(ratios, expected):
        assert got == pytest.approx(want, rel=0.05)


def test_rram_spread_grows_from_one_second_to_one_day() -> None:
    model = device_model("rram_wan2022", 1.0)
    target = torch.full((100_000,), 20.0)  # x = 0.5
    s1 = float((model.apply(target, _gen(3), 1.0) - 20).std())
    s_day = float((model.apply(target, _gen(3), 86400.0) - 20).std())
    poly = lambda c, x: sum(ci * x ** i for i, ci in enumerate(c))
    assert s1 == pytest.approx(poly((0.348, 16.030, -43.853, 45.393, -16.815), 0.5), rel=0.02)
    assert s_day == pytest.approx(poly((0.701, 22.086, -50.773, 47.095, -16.458), 0.5), rel=0.02)


@pytest.mark.parametrize("bad,message", [
    (float("nan"), "element 3 (flat index) is nan"),
    (-1.0, "element 3 (flat index) is -1"),
])
def test_bad_target_conductance_names_the_element(bad: float, message: str) -> None:
    target = torch.full((10,), 5.0)
    target[3] = bad
    with pytest.raises(ValueError) as err:
        device_model("pcm", 1.0).apply(target, _gen())
    assert message in str(err.value)


@pytest.mark.parametrize("call,message", [
    (lambda: device_model("nope", 1.0), "unknown noise model 'nope'"),
    (lambda: device_model("pcm", -1.0), "noise level must be >= 0"),
    (lambda: device_model("pcm", 1.0).apply(torch.ones(3), _gen(), -5.0), "t_inference must be"),
    (lambda: device_model("pcm", 1.0).apply(torch.ones(3), _gen(), float("inf")), "t_inference must be"),
    (lambda: device_model("pcm", 1.0).apply(torch.ones(3, dtype=torch.int32), _gen()), "floating-point"),
    (lambda: device_model("pcm", 1.0).apply(torch.ones(3), _gen(), out=torch.ones(4)), "out (4,)"),
    (lambda: device_model("pcm", 1.0).apply(torch.ones(3), _gen(), chunk_elems=0), "chunk_elems"),
    (lambda: device_model("pcm", 1.0).read(torch.ones(3), torch.ones(4), 1.0, _gen()), "g_target (4,)"),
    (lambda: DeviceModel("x", 0.0), "g_max must be > 0"),
    (lambda: ProgrammingNoise((), g_ref=25.0), "coeffs"),
    (lambda: StuckAtFaults(p_on=0.7, p_off=0.4), "p_on + p_off"),
    (lambda: StuckAtFaults(p_on=1.5), "p_on must be a probability"),
    (lambda: FiniteLevels(0), "bits must be"),
    (lambda: PowerLawDrift(0.0, 0.05, 0.0, 0.01, t0=0.0), "t0 must be > 0"),
    (lambda: PowerLawDrift(0.0, 0.05, 0.0, 0.01, sigma_min=0.1, sigma_max=0.01), "sigma_min"),
    (lambda: ReadNoise(q_coeff=-1.0, q_exp=0.5), "q_coeff"),
])
def test_bad_inputs_raise_one_line_value_errors(call, message: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_fusable_recognises_the_pcm_chain_only() -> None:
    comps = list(device_model("pcm", 1.0).components)
    pytest.importorskip("triton")
    assert fusable(comps) and fusable(comps[1:]) and fusable(comps[:1])
    assert not fusable(comps[::-1])
    assert not fusable(comps + [StuckAtFaults(p_on=0.1)])


def test_fused_kernel_matches_torch_path_in_interpreter() -> None:
    pytest.importorskip("triton")
    script = textwrap.dedent("""
        import torch
        from simcim.noise_models.presets import device_model
        from simcim.noise_models.fused import run_fused
        model = device_model("pcm", 1.0)
        comps = list(model.components)
        n = 1 << 15
        worst = 0.0
        for g_t in (2.0, 12.5, 25.0):
            target = torch.full((n,), g_t)
            for t, dev, packed in ((0.0, None, True), (86400.0, None, False),
                                   (3.15e7, torch.Generator().manual_seed(9), True)):
                # one block per launch: the interpreter runs a block as vectorized numpy
                a = run_fused(comps, target, target, t, 25.0, torch.Generator().manual_seed(1),
                              torch.empty_like(target), device_generator=dev, block=n, packed=packed)
                b = model.apply(target, torch.Generator().manual_seed(2), t)
                sd = float(b.std())
                # means within 5 standard errors, sigmas within 5 standard errors (of a sigma)
                assert abs(float(a.mean() - b.mean())) < 5 * sd * (2 / n) ** 0.5, (g_t, t)
                assert abs(float(a.std()) / sd - 1) < 5 * (1 / n) ** 0.5, (g_t, t)
        # tensors longer than one launch: each launch gets its own Philox key, so no draws repeat
        import simcim.noise_models.fused as fused
        fused.LAUNCH_ELEMS = 4096
        same = torch.full((3 * 4096,), 12.5)
        c = run_fused(comps, same, same, 3600.0, 25.0, torch.Generator().manual_seed(3),
                      torch.empty_like(same), block=4096)
        parts = c.view(3, 4096)
        assert not torch.equal(parts[0], parts[1]) and not torch.equal(parts[1], parts[2])
        bad = torch.full((100,), 5.0)
        bad[7] = float("nan")
        try:
            run_fused(comps, bad, bad, 0.0, 25.0, torch.Generator(), torch.empty_like(bad), block=128)
        except ValueError as e:
            assert "element 7" in str(e)
        else:
            raise AssertionError("NaN target not caught")
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_bench_runs_at_a_tiny_size(tmp_path: Path) -> None:
    from simcim.noise_models import bench

    out = tmp_path / "bench.csv"
    bench.main(["--params", "20000", "--device", "cpu", "--csv", str(out)])
    lines = out.read_text().splitlines()
    assert lines[0].startswith("device,dtype,params,variant,seconds,gbytes_per_s,of_copy")
    assert any("device-to-device copy" in line for line in lines)
    assert any("torch chunks" in line for line in lines)
    with pytest.raises(SystemExit):
        bench.main(["--params", "0", "--csv", str(out)])


def test_reproduce_prints_all_four_tables(capsys) -> None:
    from simcim.noise_models import reproduce

    reproduce.main(["--devices", "200"])
    text = capsys.readouterr().out
    assert text.count("\n|---:|") == 4 and "second digitization" in text
    assert "Programming noise" in text and "Read (1/f) noise" in text
