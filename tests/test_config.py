"""Configs: validation errors are one line naming file and key; hashing is canonical; sweeps expand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simcim.experiments.cli import main
from simcim.experiments.config import ConfigError, load_config

GOOD = """
[experiment]
name = "t"
kind = "selftest"
seeds = 2

[params]
scale = 0.5

[sweep]
x = [0.0, 1.0, 2.0]
"""

NOISE = """
[experiment]
kind = "noise_injection"
[params]
{params}
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


MALFORMED = {
    "unknown top-level table": (GOOD + "\n[sweeep]\nx = [1]\n", "sweeep: unknown table"),
    "unknown experiment key": (GOOD.replace('seeds = 2', 'seeds = 2\nseed = 3'), "experiment.seed: unknown key"),
    "unknown kind": (GOOD.replace('"selftest"', '"selftset"'), "experiment.kind: unknown kind 'selftset'"),
    "unknown parameter": (GOOD.replace("scale = 0.5", "scal = 0.5"), "params.scal: unknown key"),
    "wrong type": (GOOD.replace("scale = 0.5", 'scale = "big"'), "params.scale: expected a number, got 'big'"),
    "bool is not a number": (GOOD.replace("scale = 0.5", "scale = true"), "params.scale: expected a number"),
    "out of range": (GOOD.replace("scale = 0.5", "scale = -1.0"), "params.scale: expected a value in (0, inf)"),
    "out of range inside a sweep": (GOOD.replace("x = [0.0, 1.0, 2.0]", "x = [0.0]\nsleep_s = [1.0, 99.0]"),
                                    "sweep.sleep_s[1]: expected a value in [0, 60]"),
    "sweep value not a list": (GOOD.replace("x = [0.0, 1.0, 2.0]", "x = 3.0"), "sweep.x: expected a non-empty list"),
    "sweep of an unknown parameter": (GOOD.replace("x = [0.0, 1.0, 2.0]", "y = [1.0]"), "sweep.y: unknown parameter"),
    "zip lists of unequal length": (GOOD + "[sweep.zip]\nscale = [1.0, 2.0]\nsleep_s = [0.0]\n",
                                    "sweep.zip: expected lists of equal length"),
    "bad seeds": (GOOD.replace("seeds = 2", "seeds = [1, -2]"), "experiment.seeds: expected a count"),
    "report axis not a parameter": (GOOD + '[report]\nx = "nope"\n', "report.x: expected the name of a parameter"),
    "not TOML": ("[experiment\nkind = 1", "not valid TOML"),
    "missing experiment table": ("[params]\nx = 1.0\n", "experiment: missing table"),
    "missing file named in params": (NOISE.format(params='eval_text = "no_such_file.txt"'),
                                     "params.eval_text: file not found: no_such_file.txt"),
    "unknown noise model": (NOISE.format(params='noise = "plasma"'), "noise 'plasma' is not a known device model"),
    "unknown role": (NOISE.format(params='roles = ["experts", "heads"]'), "unknown role 'heads'"),
    "list of wrong element type": (NOISE.format(params="roles = [1]"), "params.roles[0]: expected a string"),
    "cuda without a GPU": (NOISE.format(params='device = "cuda"'), "no CUDA GPU is available here"),
    "model path that does not exist": (NOISE.format(params='model = "/no/such/checkpoint"'),
                                       "model /no/such/checkpoint: no such directory"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_config_is_one_line_exit_2(case, tmp_path, capsys):
    text, expected = MALFORMED[case]
    if case == "cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = write(tmp_path, text)
    rc = main(["sweep", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1, err
    assert str(cfg) in err and expected in err, err
    assert not (tmp_path / "run" / "trials").exists()


def test_missing_config_file(tmp_path, capsys):
    rc = main(["run", str(tmp_path / "absent.toml")])
    err = capsys.readouterr().err
    assert rc == 2 and "config file not found" in err and err.count("\n") == 1


def test_error_has_no_traceback_in_a_real_process(tmp_path):
    cfg = write(tmp_path, GOOD.replace("scale = 0.5", "scale = -1.0"))
    proc = subprocess.run([sys.executable, "-m", "simcim.experiments.cli", "sweep", str(cfg)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"simcim: error: {cfg}: params.scale: expected a value in (0, inf), "
                                                "got -1.0"]


def test_grid_and_zip_expansion(tmp_path):
    text = GOOD + "[sweep.zip]\nscale = [1.0, 2.0]\nsleep_s = [0.0, 0.5]\n"
    trials = load_config(write(tmp_path, text)).trials()
    assert len(trials) == 3 * 2 * 2  # x grid x zip pairs x seeds
    pairs = {(t.params.scale, t.params.sleep_s) for t in trials}
    assert pairs == {(1.0, 0.0), (2.0, 0.5)}
    assert len({t.id for t in trials}) == len(trials)
    assert len(load_config(write(tmp_path, text)).trials(sweep=False)) == 2  # run: seeds only


def test_trial_hash_is_canonical(tmp_path):
    a = load_config(write(tmp_path, GOOD, "a.toml")).trials()
    # same content: other key order, int where a float is expected, default written out explicitly
    reordered = """
[sweep]
x = [0, 1, 2]
[params]
sleep_s = 0.0
scale = 0.5
[experiment]
seeds = [0, 1]
kind = "selftest"
name = "other-name"
"""
    b = load_config(write(tmp_path, reordered, "b.toml")).trials()
    assert [t.id for t in a] == [t.id for t in b]
    c = load_config(write(tmp_path, GOOD.replace("scale = 0.5", "scale = 0.25"), "c.toml")).trials()
    assert not {t.id for t in a} & {t.id for t in c}


def test_override_from_command_line(tmp_path):
    from simcim.experiments.config import parse_override

    cfg = load_config(write(tmp_path, GOOD), dict([parse_override("params.scale=2"), parse_override("sweep.x=[5.0]")]))
    trials = cfg.trials()
    assert {t.params.scale for t in trials} == {2.0} and {t.params.x for t in trials} == {5.0}


def test_bundled_configs_validate():
    root = Path(__file__).resolve().parent.parent / "experiments" / "configs"
    for path in sorted(root.glob("*.toml")):
        try:
            assert load_config(path).trials(), path
        except ConfigError as e:
            if "is not available here" in str(e):  # a kind whose optional dependency is missing
                continue
            raise
