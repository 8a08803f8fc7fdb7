"""Whether a thread of this process is asleep, from /proc (the stall check's evidence).

See Note [Virtual time coordination], "Un-instrumented waits": a thread that sleeps in the
kernel ('S') and does not context-switch between two samples is not making progress.
"""

from __future__ import annotations

import time

ASLEEP_STATES = frozenset(b"StTI")  # sleeping, stopped, traced, idle; 'D' is busy disk I/O


def sample_thread(native_id: int) -> tuple[int, int, int] | None:
    """(state letter as a byte value, voluntary + nonvoluntary context switches) or None if gone.

    Returns (state, voluntary, nonvoluntary).
    """
    try:
        with open(f"/proc/self/task/{native_id}/status", "rb") as f:
            text = f.read()
    except OSError:
        return None
    state = vol = nonvol = -1
    for line in text.split(b"\n"):
        if line.startswith(b"State:"):
            state = line[6:].strip()[:1][0]
        elif line.startswith(b"voluntary_ctxt_switches:"):
            vol = int(line.split(b":")[1])
        elif line.startswith(b"nonvoluntary_ctxt_switches:"):
            nonvol = int(line.split(b":")[1])
    return state, vol, nonvol


def all_asleep(before: dict[int, tuple | None], after: dict[int, tuple | None]) -> bool:
    """True if every sampled thread is gone, or asleep both times with unchanged switch counts."""
    for tid, a in after.items():
        if a is None:
            continue
        b = before.get(tid)
        if b is None or a != b or a[0] not in ASLEEP_STATES:
            return False
    return True


def sample_threads(native_ids: list[int]) -> dict[int, tuple | None]:
    return {tid: sample_thread(tid) for tid in native_ids}


def thread_cpu_ns(native_id: int) -> int | None:
    """CPU time of a thread of this process (no file I/O), or None if it is gone.

    Linux encodes a thread's CPU clock as ``(~tid << 3) | CPUCLOCK_PERTHREAD | CPUCLOCK_SCHED``;
    the kernel refuses (EINVAL) a tid that is not a live thread of this process.
    """
    try:
        return time.clock_gettime_ns(((~native_id) << 3) | 6)
    except OSError:
        return None


def cpu_times(native_ids: list[int]) -> list[int | None]:
    return [thread_cpu_ns(tid) for tid in native_ids]
