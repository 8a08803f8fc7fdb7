"""``revati bench serve`` flag handling: bad input gives one-line errors, never a traceback."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from revati.cli import cli


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--goodput", "ttft"], "KEY:MILLISECONDS"),
    (["--goodput", "ttft:5", "queue:3"], "unknown"),
    (["--request-rate", "fast"], "--request-rate"),   # click names the flag it could not read
    (["--metric-percentiles", "50,x"], "comma-separated"),
    (["--dataset-name", "mooncake"], "dataset_path"),
    (["--extra-body", "[1]"], "JSON object"),
    (["--header", "nokey"], "KEY=VALUE"),
    (["--max-concurrency", "0"], "--max-concurrency"),
    (["--request-rate", "nan"], "request_rate"),
    (["--dataset-name", "mooncake", "--dataset-path", "/nonexistent.jsonl"], "no such file"),
])
def test_bad_flags(args, message):
    res = CliRunner().invoke(cli, ["bench", "serve", "--model", "m", "--num-prompts", "1", *args])
    assert res.exit_code != 0
    assert message in res.output and "Traceback" not in res.output


def test_unreachable_server_fails_cleanly_and_still_writes_files(tmp_path):
    base = f"http://127.0.0.1:{_closed_port()}"
    res = CliRunner().invoke(cli, ["bench", "serve", "--base-url", base, "--model", "m", "--num-prompts", "2",
                                   "--random-input-len", "4", "--random-output-len", "2", "--result-dir",
                                   str(tmp_path), "--quiet"])
    assert res.exit_code == 1 and "all 2 requests failed" in res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["completed"] == 0 and m["failed"] == 2
    res = CliRunner().invoke(cli, ["bench", "serve", "--base-url", base, "--num-prompts", "1"])
    assert res.exit_code == 1 and "cannot reach the server" in res.output


@pytest.mark.parametrize("args, message", [
    (["--dataset-name", "mooncake", "--dataset-path", "/nonexistent.jsonl"], "/nonexistent.jsonl: no such file"),
    (["--dataset-name", "azure", "--dataset-path", "/nonexistent.parquet"], "neither a shipped request trace"),
    (["--dataset-name", "mooncake", "--dataset-path", "/"], "a folder, not a trace file"),
])
def test_missing_dataset_path_fails_before_waiting_for_the_server(args, message):
    """No --model: the server would be asked for its model first (here: wait up to 60 s)."""
    import time

    t0 = time.monotonic()
    res = CliRunner().invoke(cli, ["bench", "serve", "--base-url", f"http://127.0.0.1:{_closed_port()}",
                                   "--ready-check-timeout-sec", "60", "--num-prompts", "1", *args])
    assert res.exit_code != 0 and time.monotonic() - t0 < 30
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output, res.output
