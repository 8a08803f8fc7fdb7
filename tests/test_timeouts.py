"""Float timeouts become virtual deadlines rounded up (Note [Timeouts round up], revati/shim/vwait.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from revati.shim.vwait import timeout_ns

PROGRAMS = Path(__file__).parent / "programs"


def test_a_timeout_rounds_up_to_whole_nanoseconds():
    assert timeout_ns(0.0) == 0 and timeout_ns(-1.0) == 0
    assert timeout_ns(4e-10) == 1
    assert timeout_ns(0.1) >= 100_000_000
    assert timeout_ns(2.5e-9) == 3


def test_a_deadline_loop_ends_in_the_repeatable_mode():
    # the repeatable mode moves the clock only by charges and waits: `vllm serve` spun for ever in
    # asyncio's loop on a remainder under 1 ns
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--no-host-cpu", "--",
                           sys.executable, str(PROGRAMS / "deadline_loop.py")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["waits"] < 100, out        # a few waits per deadline, not the loop's safety cap
    assert 1 <= out["slept_ns"] < 1_000, out
