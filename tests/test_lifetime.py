"""No orphans: whatever ends revati ends everything it started (Note [No orphans] in
revati/lifetime.py), and nothing is left in the temporary folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from proc_helpers import pids_with
from revati.lifetime import stop_process_groups

PROGRAMS = Path(__file__).parent / "programs"


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def _as_from_a_terminal() -> None:
    # A command typed at a terminal starts with SIGINT and SIGHUP at their defaults. Under a
    # launcher that ran these tests in the background (`cmd &` in a script ignores SIGINT;
    # nohup ignores SIGHUP) they start ignored, and an ignored signal stays ignored across exec:
    # revati would ignore the Ctrl-C this test sends, as the user asked that launcher to.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _start_emulation(tmp_path, *emulate_args: str):
    marker = f"revati-orphan-test-{uuid.uuid4().hex[:12]}"
    env = dict(os.environ, TMPDIR=str(tmp_path))  # the run's temporary folders land here
    proc = subprocess.Popen([sys.executable, "-m", "revati", "emulate", "-q", *emulate_args, "--",
                             sys.executable, str(PROGRAMS / "forever.py"), marker],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,  # its own group: Ctrl-C goes to it alone
                            preexec_fn=_as_from_a_terminal)
    _wait_for(lambda: len(pids_with(marker)) >= 2, 120, "the program and its child")
    timekeepers = pids_with(f"--parent-pid {proc.pid}")
    assert len(timekeepers) == 1, timekeepers
    return proc, marker, timekeepers[0]


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGHUP", "Ctrl-C"])
def test_everything_revati_started_ends_when_it_is_killed(tmp_path, how):
    proc, marker, timekeeper = _start_emulation(tmp_path)
    if how == "Ctrl-C":
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    else:
        os.kill(proc.pid, getattr(signal, how))
    try:
        proc.wait(timeout=30)
        _wait_for(lambda: not pids_with(marker), 10, "the program and its child to end")
        _wait_for(lambda: not pids_with(f"--parent-pid {proc.pid}"), 10, "the timekeeper to end")
    finally:
        stop_process_groups([], pids_with(marker) + pids_with(f"--parent-pid {proc.pid}"), grace_s=0.5)
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode != 0
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "TimekeeperLost" not in stderr
    if how != "SIGKILL":  # (a killed revati cannot clean up; the timekeeper removes its own)
        _wait_for(lambda: not list(tmp_path.glob("revati-*")), 10, "temporary folders to go")
    else:
        _wait_for(lambda: not list(tmp_path.glob("revati-tk-*")), 10, "the timekeeper's folder to go")


def test_a_finished_emulation_leaves_no_temporary_folders(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--", sys.executable, "-c",
                           "import time; time.sleep(1)"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


def test_stats_dir_keeps_the_summaries(tmp_path):
    stats = tmp_path / "stats"
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--stats-dir", str(stats), "--",
                           sys.executable, "-c", "print(1)"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(stats.glob("process-*.json"))
    assert [p.name for p in tmp_path.iterdir()] == ["stats"]


def test_a_child_tied_to_its_parent_ends_with_it(tmp_path):
    # The kernel's part (PR_SET_PDEATHSIG): a middle process started with tie_to_parent's hook
    # is killed by SIGKILL; its tied child gets SIGTERM.
    marker = f"revati-tied-{uuid.uuid4().hex[:12]}"
    middle = ("import subprocess, sys, time\n"
              "from revati.lifetime import tie_to_parent\n"
              "subprocess.Popen([sys.executable, '-c', 'import time\\nwhile True: time.sleep(0.05)', sys.argv[1]],"
              " preexec_fn=tie_to_parent())\n"
              "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", middle, marker])
    try:
        _wait_for(lambda: len(pids_with(marker)) == 2, 60, "both processes")
        proc.kill()
        proc.wait()
        _wait_for(lambda: not pids_with(marker), 10, "the tied child to end")
    finally:
        stop_process_groups([], pids_with(marker), grace_s=0.5)


def test_parent_death_signal_is_available_here():
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    proc = subprocess.run([sys.executable, "-c", "from revati.lifetime import set_parent_death_signal as s; "
                           "import signal; print(s(signal.SIGTERM))"], capture_output=True, text=True)
    assert proc.stdout.strip() == "True", proc.stderr


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGHUP"])
def test_revati_trace_takes_its_command_with_it(tmp_path, sig):
    marker = f"revati-trace-orphan-{uuid.uuid4().hex[:12]}"
    program = "import time\nprint('ready', flush=True)\nwhile True: time.sleep(0.05)"
    # SIGHUP at its default: under `nohup` (which CI may run in) it is ignored, an ignored signal
    # stays ignored across exec, and revati trace forwards SIGHUP to a command that ignores it
    proc = subprocess.Popen([sys.executable, "-m", "revati", "trace", "-o", str(tmp_path / "run"), "--",
                             sys.executable, "-c", program, marker],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
    try:
        _wait_for(lambda: pids_with(marker) and any(
            p != proc.pid for p in pids_with(marker)), 60, "the traced command")
        time.sleep(0.5)  # past the command's start
        os.kill(proc.pid, getattr(signal, sig))
        proc.wait(timeout=30)
        _wait_for(lambda: not pids_with(marker), 10, "the traced command to end")
    finally:
        stop_process_groups([], pids_with(marker), grace_s=0.5)


def test_a_timekeeper_that_exits_on_its_own_leaves_no_folder():
    # Callers that wait() for the timekeeper (instead of stop()) used to leave revati-tk-* behind.
    from revati.shim.coord.handle import start_timekeeper
    from revati.shim.coord.server import TimekeeperConfig

    handle = start_timekeeper(TimekeeperConfig(deadlock_timeout_s=5))
    folder = handle._files_dir
    assert os.path.isdir(folder)
    handle._proc.send_signal(signal.SIGTERM)  # it stops by itself, as after --exit-when-empty
    assert handle.wait(30) == 0
    assert not os.path.exists(folder)
    assert handle.stats is not None and handle.stats["exit_status"] == 0
