"""`revati trace` / `revati replay` on bad input: one clean line, non-zero exit, nothing corrupted."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from revati.cli import cli
from revati.tracer import cupti_backend

PY = sys.executable


def _run(args):
    return CliRunner().invoke(cli, args)


@pytest.mark.parametrize("args, message", [
    (["trace"], "nothing to trace: put the command after `--`"),
    (["trace", "--"], "nothing to trace"),
    (["trace", "--backend", "nvprof", "--", PY, "-c", "pass"], "unknown backend 'nvprof'"),
    (["trace", "--backend", "kineto,cupti", "--", PY, "-c", "pass"], "kineto and cupti"),
    (["trace", "--warmup-steps", "-2", "--", PY, "-c", "pass"], "-2 is not in the range"),
    (["trace", "--", "no-such-command-revati"], "command not found"),
    (["trace", "--", "/no/such/file"], "no such file"),
    (["trace", "--print-probes"], "add --backend bpf"),
    (["trace", "--run-id", "bad/id", "--", PY, "-c", "pass"], "run id"),
])
def test_trace_bad_input(args, message, tmp_path):
    result = _run(args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_trace_unwritable_output(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = _run(["trace", "-o", str(blocker / "run"), "--", PY, "-c", "pass"])
    assert result.exit_code != 0 and "cannot write the trace here" in result.output
    result = _run(["trace", "-o", str(blocker), "--", PY, "-c", "pass"])
    assert result.exit_code != 0 and "is a file" in result.output


def test_trace_refuses_a_folder_that_holds_a_trace(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "runs.parquet").write_bytes(b"keep me")
    result = _run(["trace", "-o", str(run), "--", PY, "-c", "pass"])
    assert result.exit_code != 0 and "already holds a trace" in result.output
    assert (run / "runs.parquet").read_bytes() == b"keep me"


@pytest.mark.skipif(cupti_backend.gpu_unavailable_reason() is None, reason="a GPU is present: cupti could run")
def test_cupti_backend_says_what_is_missing(tmp_path):
    result = subprocess.run([PY, "-m", "revati", "trace", "--backend", "cupti", "-o", str(tmp_path / "r"), "--",
                             PY, "-c", "pass"], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the cupti backend cannot run here" in result.stderr
    assert "GPU" in result.stderr or "driver" in result.stderr
    assert not (tmp_path / "r").exists()  # checked before anything was started or created


@pytest.mark.parametrize("args, message", [
    (["replay", "/no/such/run", "--gpu", "h100"], "no such run folder"),
    (["replay", "{tmp}", "--gpu", "h100"], "holds no revati trace tables"),
    (["replay", "{run}", "--gpu", "z9000"], "unknown GPU 'z9000'"),
    (["replay", "{run}"], "say which to predict for with --gpu"),
])
def test_replay_bad_input(args, message, tmp_path):
    from revati import parquet_io
    from revati.tables import rows_to_table

    run = tmp_path / "run"
    parquet_io.write_table(rows_to_table("runs", [{"run_id": "r"}]), "runs", run / "runs.parquet")
    args = [a.format(tmp=tmp_path / "empty", run=run) for a in args]
    (tmp_path / "empty").mkdir()
    result = _run(args)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
