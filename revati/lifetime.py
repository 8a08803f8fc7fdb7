"""Process lifetime: whatever revati starts ends when revati ends, by any signal.

Note [No orphans]
=================
``revati emulate`` starts a timekeeper and the emulated command (in a session of its own, so
that the whole command can be signalled as one process group); ``revati trace`` starts the
traced command. If revati died and left them running, they would be re-parented to PID 1 and
go on for ever (an emulation whose clock nobody reads). Three layers, each enough for a
different way to die:

- SIGTERM and SIGHUP raise ``Terminated`` (a ``BaseException``, like the ``KeyboardInterrupt``
  of Ctrl-C) in revati's main thread (``termination_signals``), so the
  launcher's ``finally`` blocks stop the command's process groups and the timekeeper in order:
  the program first, then the timekeeper, so no program sees its timekeeper vanish
  (``TimekeeperLost``) while it is still being stopped.
- SIGKILL cannot be caught. Children started with ``tie_to_parent`` get a signal from the
  kernel when revati's thread that started them dies (``PR_SET_PDEATHSIG``); the timekeeper
  (``--parent-pid``) also watches its parent and, when it is gone, stops every process group
  it was told about and every registered participant (``revati.shim.coord.server``).
- A process that loses its timekeeper while the emulation runs stops itself
  (``revati.shim.vtime._stop_this_process``): its virtual clock would mean nothing any more.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from typing import Iterator

PR_SET_PDEATHSIG = 1
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
GROUP_STOP_GRACE_S = 2.0  # between SIGTERM and SIGKILL


class Terminated(BaseException):
    """revati itself received a termination signal (``signum``); unwinds like Ctrl-C."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"terminated by {signal.Signals(signum).name}")


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent thread dies (Linux).

    Returns False where the call is unavailable (not Linux): the other layers of Note [No
    orphans] still hold there.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except OSError:
        return False


def tie_to_parent(signum: int = signal.SIGTERM):
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when we die.

    Also closes the race of a parent that died between fork and the prctl call.
    """
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(signum)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return preexec


@contextlib.contextmanager
def termination_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in the main thread.

    Outside the main thread (where handlers cannot be installed) it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, _frame):
        raise Terminated(signum)

    previous = {}
    for sig in TERMINATION_SIGNALS:
        previous[sig] = signal.signal(sig, raise_terminated)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_process_groups(pgids: list[int], pids: list[int] = (),
                        grace_s: float = GROUP_STOP_GRACE_S) -> None:
    """SIGTERM every group and process, then SIGKILL what is left after ``grace_s``."""
    targets = [(os.killpg, g) for g in pgids] + [(os.kill, p) for p in pids]
    alive = []
    for kill, target in targets:
        try:
            kill(target, signal.SIGTERM)
            alive.append((kill, target))
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        still = []
        for kill, target in alive:
            try:
                kill(target, 0)
                if kill is os.kill and not pid_alive(target):
                    continue
                still.append((kill, target))
            except (ProcessLookupError, PermissionError):
                pass
        alive = still
    for kill, target in alive:
        try:
            kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def pid_alive(pid: int) -> bool:
    """Whether a process exists on this host and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")
