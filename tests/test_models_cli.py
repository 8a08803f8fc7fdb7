"""`revati models fit|predict|report` through click: outputs, and errors that name the row."""

from __future__ import annotations

import json

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import models_synth as synth
from revati.cli import cli


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    traces = root / "traces"
    synth.write(synth.rows_for("gemm", synth.GEMM_GRID, noise=0.005), traces / "op_samples-gemm.parquet")
    synth.write(synth.rows_for("all_reduce", synth.AR_GRID, noise=0.005), traces / "op_samples-ar.parquet")
    with pytest.MonkeyPatch.context() as mp:     # module scope: the autouse home is not set yet
        mp.setenv("REVATI_HOME", str(root / "home"))
        res = CliRunner().invoke(cli, ["models", "fit", "--gpu", "h100", "--traces", str(traces),
                                       "--no-embedded-traces", "-o", str(root / "models"), "-q"])
    assert res.exit_code == 0, res.output
    assert "h100_sxm: 2 models" in res.output
    return root


def _run(*args):
    return CliRunner().invoke(cli, ["models", *args])


HEADER = "op,m,n,k,message_bytes,world_size,dtype\n"


def test_predict_adds_predicted_ms_and_says_what_answered(fitted, tmp_path):
    src = tmp_path / "ops.csv"
    src.write_text(HEADER + "gemm,300,3000,1500,,,bf16\nall_reduce,,,,1048576,4,\ngemm,300,3000,1500,,,fp8\n")
    res = _run("predict", "--gpu", "h100", "--models-dir", str(fitted / "models"), str(src))
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0].endswith('"predicted_ms","predicted_by"')
    assert lines[1].endswith('"model"') and lines[2].endswith('"model"') and lines[3].endswith('"roofline"')
    ms = float(lines[1].split(",")[-2])
    assert ms == pytest.approx(synth.law_ns("gemm", {"m": 300, "n": 3000, "k": 1500}) / 1e6, rel=0.03)


def test_predict_writes_parquet(fitted, tmp_path):
    src = tmp_path / "ops.csv"
    src.write_text("op,m,n,k\ngemm,64,4096,4096\n")
    out = tmp_path / "out.parquet"
    res = _run("predict", "--gpu", "h100", "--models-dir", str(fitted / "models"), str(src), "-o", str(out))
    assert res.exit_code == 0, res.output
    t = pq.read_table(out)
    assert t.column_names == ["op", "m", "n", "k", "predicted_ms", "predicted_by"] and t.num_rows == 1


@pytest.mark.parametrize("body, expected", [
    (HEADER + "gemm,1,2,3,,,bf16\ngemmm,1,2,3,,,bf16\n", "row 2: unknown op 'gemmm'"),
    (HEADER + "gemm,1,,3,,,bf16\n", "row 1: op 'gemm' needs a value in column 'n'"),
    ("op,m,n\ngemm,1,2\n", "row 1: op 'gemm' needs column 'k'"),
    (HEADER + "gemm,1,2,3,100,,bf16\n", "row 1: column 'message_bytes' is not a parameter of 'gemm'"),
    (HEADER + "gemm,1,-2,3,,,bf16\n", "row 1: column 'n' must be a positive number"),
    (HEADER + "gemm,1,2,3,,,bf17\n", "row 1: unknown dtype 'bf17'"),
    ("op,m,n,k,colour\ngemm,1,2,3,red\n", "unknown column(s) 'colour'"),
    ("m,n,k\n1,2,3\n", "no 'op' column"),
])
def test_predict_input_errors_name_the_row(fitted, tmp_path, body, expected):
    src = tmp_path / "bad.csv"
    src.write_text(body)
    out = tmp_path / "out.csv"
    res = _run("predict", "--gpu", "h100", "--models-dir", str(fitted / "models"), str(src), "-o", str(out))
    assert res.exit_code != 0
    assert expected in res.output
    assert "Traceback" not in res.output
    assert not out.exists()                      # nothing half-written


@pytest.mark.parametrize("args, expected", [
    (["predict", "--gpu", "h900", "x.csv"], "unknown GPU 'h900'"),
    (["predict", "--gpu", "h100", "missing.csv"], "no such file"),
    (["report", "--gpu", "h900"], "unknown GPU 'h900'"),
    (["fit"], "give --gpu"),
])
def test_clean_cli_errors(fitted, args, expected):
    res = _run(*args)
    assert res.exit_code != 0 and expected in res.output and "Traceback" not in res.output


def test_report_tables_and_json(fitted):
    res = _run("report", "--gpu", "h100", "--models-dir", str(fitted / "models"))
    assert res.exit_code == 0, res.output
    for text in ("Held-out error", "gemm", "all_reduce", "lines:m", "Worst held-out shapes", "Cross-source"):
        assert text in res.output
    res = _run("report", "--gpu", "h100", "--models-dir", str(fitted / "models"), "--json")
    data = json.loads(res.output)
    fams = {m["family"]: m for m in data["models"]}
    assert set(fams) == {"gemm", "all_reduce"}
    assert fams["gemm"]["heldout_mape_pct"] < 5.0
    assert data["folds"] and data["candidates"] and data["worst"]


def test_report_without_models_is_a_clean_error(tmp_path):
    res = _run("report", "--gpu", "l4", "--models-dir", str(tmp_path))
    assert res.exit_code != 0 and "no fitted models" in res.output


def test_predict_output_keeps_input_columns(fitted, tmp_path):
    src = tmp_path / "ops.csv"
    src.write_text("op,m,n,k,dtype\ngemm,64,4096,4096,bf16\n")
    out = tmp_path / "o.csv"
    res = _run("predict", "--gpu", "h100", "--models-dir", str(fitted / "models"), str(src), "-o", str(out))
    assert res.exit_code == 0
    t = pcsv.read_csv(out)
    assert t.column("m").to_pylist() == [64] and t.column("dtype").to_pylist() == ["bf16"]
