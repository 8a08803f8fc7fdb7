"""Note [Threads in virtual time] (revati/shim/vwait.py): a thread's wait overlaps another
thread's GPU time; it ends at its deadline, not when the busy thread next blocks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROGRAMS = Path(__file__).parent / "programs"


def _run(*flags: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", *flags, "--gpu", "h100", "--",
                           sys.executable, str(PROGRAMS / "thread_overlap.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sleeping_thread_wakes_at_its_deadline_while_another_thread_keeps_the_gpu_busy():
    out = _run("--no-host-cpu")
    step_s = out["step_s"]
    assert 0 < step_s < 0.002, out      # an H100 fp16 4096^3 GEMM and a read-back
    previous = 0.0
    for woke in out["woke_s"]:
        # each 10 ms sleep ends at its deadline, and the woken thread runs from there (its lag)
        # while the worker holds: not at the worker's clock, one step later. Before the lag, a
        # wake read the shared clock once the OS ran the thread; before wake_due, the first
        # sleep ended only after all 400 worker steps (~75 ms).
        assert abs(woke - previous - 0.010) < 1e-6, out
        previous = woke
    assert out["worker_steps"] < 400, out   # the stop came while the worker ran


def test_threads_of_one_process_interleave_the_same_way_on_every_run():
    # the worker holds for the woken thread until it waits again, so which step the stop lands
    # in does not depend on which thread the OS ran first
    assert _run("--no-host-cpu")["worker_steps"] == _run("--no-host-cpu")["worker_steps"]


def test_with_host_time_a_woken_thread_is_charged_only_its_own_work():
    out = _run()
    woke = out["woke_s"]
    # the first sleep: 10 ms, starting the worker, and (now and then) the worker's first op --
    # its one-time shim work counts on the shared clock until that op ends, so a deadline read
    # meanwhile lies later by up to that much (a known limit of excluding shim CPU afterwards)
    assert woke[0] >= 0.010, out
    for previous, now in zip(woke, woke[1:]):
        # its own few microseconds of Python on top of the 10 ms, never the worker's steps:
        # before the lag each wake read the worker's clock, 1-2.5 ms late (--no-host-cpu)
        assert 0.010 <= now - previous < 0.010 + 0.0001, out
