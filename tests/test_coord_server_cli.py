"""``python -m revati.shim.coord.server``: the ready line, stopping, and refusing bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from revati.shim.coord.client import Coordinator
from revati.shim.coord.core import EXIT_USAGE
from revati.shim.coord.wire import ENV_TOKEN


def _start(args, tmp_path, token=None):
    env = {k: v for k, v in os.environ.items() if k != ENV_TOKEN}
    if token:
        env[ENV_TOKEN] = token
    return subprocess.Popen([sys.executable, "-m", "revati.shim.coord.server", *args],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_prints_ready_line_with_a_fresh_token_serves_and_stops_on_sigterm(tmp_path):
    stats = tmp_path / "stats.json"
    proc = _start(["--address", "tcp:127.0.0.1:0", "--stats", str(stats)], tmp_path)
    ready = json.loads(proc.stdout.readline())
    assert ready["address"].startswith("tcp:127.0.0.1:") and ready["pid"] == proc.pid
    coord = Coordinator.connect("cli", address=ready["address"], token=ready["token"])
    assert coord.sleep_until(42) == 42  # the only participant: its deadline is granted
    coord.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    counts = json.loads(stats.read_text())
    assert counts["registrations"] == 1 and counts["wakes"] == 1 and counts["gvt_ns"] == 42


def test_token_from_the_environment_is_not_printed(tmp_path):
    proc = _start(["--address", str(tmp_path / "tk.sock")], tmp_path, token="s3cret")
    ready = json.loads(proc.stdout.readline())
    assert "token" not in ready
    assert oct(os.stat(tmp_path / "tk.sock").st_mode & 0o777) == "0o600"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert not (tmp_path / "tk.sock").exists()


@pytest.mark.parametrize("args, message", [
    (["--deadlock-timeout-s", "-1"], "deadlock_timeout_s"),
    (["--stall-check-ms", "0"], "stall_check_s"),
    (["--address", "no-port"], "neither a socket path nor HOST:PORT"),
    (["--address", "/nonexistent-dir/x/tk.sock"], "No such file"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    proc = _start(args, tmp_path)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == EXIT_USAGE
    assert out == ""
    assert message in err and "Traceback" not in err
