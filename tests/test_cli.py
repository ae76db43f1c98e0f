"""The CLI explains itself, reports runs, and the quickstart path works end to end (shortened)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simcim.experiments.cli import build_parser, main

SUBCOMMANDS = ["run", "sweep", "report", "quickstart", "info"]


def test_every_subcommand_has_help(capsys):
    for cmd in [[]] + [[c] for c in SUBCOMMANDS]:
        with pytest.raises(SystemExit) as e:
            main(cmd + ["--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: simcim" in out and len(out.splitlines()) > 3
    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(SUBCOMMANDS) <= set(choices)


def test_console_script_is_installed():
    proc = subprocess.run(["simcim", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "quickstart" in proc.stdout


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "GPU" in out and "results go to" in out
    assert main(["info", "--kind", "noise_injection"]) == 0
    assert "level = 0.0" in capsys.readouterr().out
    assert main(["info", "--kind", "nope"]) == 2


def test_report_of_a_non_run_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a run folder" in err


def test_quickstart_shortened_writes_table_report_and_plot(tmp_path, capsys):
    out = tmp_path / "qs"
    rc = main(["quickstart", "--out", str(out), "--no-progress", "--set", "sweep.level=[0.0, 0.1]",
               "--set", "params.eval_tokens=1024", "--set", "params.seq_len=128", "--set", "experiment.seeds=2"])
    assert rc == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("| 0")]
    assert len(rows) == 2 and rows[0].startswith("| 0 |")  # clean first
    assert (out / "report.md").is_file() and (out / "plot_perplexity.png").stat().st_size > 1000
    assert "![perplexity vs level](plot_perplexity.png)" in (out / "report.md").read_text()
    # a second quickstart computes nothing again
    assert main(["quickstart", "--out", str(out), "--no-progress", "--set", "sweep.level=[0.0, 0.1]",
                 "--set", "params.eval_tokens=1024", "--set", "params.seq_len=128",
                 "--set", "experiment.seeds=2"]) == 0
    assert "4 already stored, 0 ran ok" in capsys.readouterr().out


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "simcim.experiments.cli", "info"], capture_output=True, text=True)
    assert proc.returncode == 0
