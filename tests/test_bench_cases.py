"""The GPU model beside the stored benchmark medians: every stored case predicts, bad files are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from simcim.validation.bench_cases import load_cases, main, predict_cases, report

DATA = Path(__file__).resolve().parent.parent / "docs" / "data"
CASES = DATA / "bench_h200_2026-12-02.csv"


@pytest.mark.parametrize("name, spec", [("bench_h100_2026-11-23.csv", "h100"), ("bench_h200_2026-12-02.csv", "h200")])
def test_every_stored_case_predicts(name, spec):
    t = predict_cases(load_cases(DATA / name), spec)
    assert len(t) > 10 and (t["pred_us"] > 0).all() and t["err_pct"].notna().all()


def test_stored_cases_predict_and_report(tmp_path, capsys):
    cases = load_cases(CASES)
    t = predict_cases(cases, "h200")
    assert len(t) == len(cases) and (t["pred_us"] > 0).all()
    assert set(t["kernel"]) >= {"fused_attention", "kv_decode", "quant_gemv", "spmm", "embedding_bag", "fwht"}
    err = 100 * (t["pred_us"] - t["meas_us"]) / t["meas_us"]
    assert (t["err_pct"] - err).abs().max() < 1e-9
    text = report(t, "h200")
    assert f"MAPE over {len(t)}" in text and text.count("\n| ") == len(t) + 1
    out = tmp_path / "t.csv"
    assert main([str(CASES), "--spec", "h100", "--csv", str(out)]) == 0 and out.is_file()
    assert "GPU spec: h100" in capsys.readouterr().out


@pytest.mark.parametrize("row, message", [
    ('spmm,"{""m"": 2,",x,1.0,s', "line 2: args is not a JSON object"),
    ('spmm,"[1, 2]",x,1.0,s', "line 2: args is not a JSON object"),
    ('fwht,"{""rows"": 4, ""d"": 128}",x,-3,s', "line 2: meas_us must be a positive number"),
    ('fwht,"{""rows"": 4, ""d"": 128}",x,abc,s', "line 2: meas_us must be a positive number"),
])
def test_bad_rows_are_named(tmp_path, row, message):
    f = tmp_path / "c.csv"
    f.write_text("counter,args,impl,meas_us,source\n" + row + "\n")
    with pytest.raises(ValueError, match=message):
        load_cases(f)


def test_bad_cases_give_one_line_errors(tmp_path, capsys):
    f = tmp_path / "c.csv"
    f.write_text("counter,args,meas_us\nfwht,{},1\n")
    assert main([str(f)]) == 2 and "missing column 'impl'" in capsys.readouterr().err
    f.write_text('counter,args,impl,meas_us,source\nwarp_drive,"{""n"": 1}",x,1,s\n')
    assert main([str(f)]) == 2 and "unknown kernel 'warp_drive'" in capsys.readouterr().err
    f.write_text('counter,args,impl,meas_us,source\nfwht,"{""rows"": 4, ""depth"": 1}",x,1,s\n')
    assert main([str(f)]) == 2 and "case 1 (fwht" in capsys.readouterr().err
    assert main([str(tmp_path / "none.csv")]) == 2 and "not found" in capsys.readouterr().err
