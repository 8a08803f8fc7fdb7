"""A process stopped by SIGTERM still reports: its summary is written when the signal arrives.

Serving engines stop their helper processes with SIGTERM and then kill them: vLLM's API server
sends its engine core SIGTERM and, in its default abort mode, SIGKILL at once; the engine core
does the same to its TP workers. Those processes never reach ``atexit`` or multiprocessing's
exit function, so they wrote no summary: ``emulate -v`` had no wall-time breakdown for the
processes doing the GPU work, and their import hooks looked as if they had never fired.

A program that handles SIGTERM installs its handler with ``signal.signal``; revati wraps such a
handler so that it first writes the process's summary (``write_summary``, given at install),
then runs the program's handler. ``signal.getsignal`` answers with the program's own handler.
A process that leaves SIGTERM at its default is not touched: a Python-level handler would change
how it dies (only between bytecodes, not in the middle of native code), and it dies at once
anyway. A summary written at the signal is replaced by the final one if the process goes on to
exit normally.

The summary is written by a raw helper thread that the handler waits for (at most ``WRITE_WAIT_S``):
the handler runs on the main thread between two bytecodes, possibly while that thread holds a
lock the summary needs (the clock's); waiting without limit there would hang the process.

Writing takes milliseconds, and a killer that sends SIGKILL right after SIGTERM (vLLM's process
manager with its default timeout of 0 s) wins that race. So when summaries are kept (a stats
folder), a process with such a handler leaves a marker beside its summary, and an emulated
process that sends SIGKILL to it (``os.kill``, which ``Process.kill`` and ``Popen.kill`` use)
first waits, at most ``KILL_GRACE_S`` of real time, for that summary to appear. A process without
a handler of its own (SGLang's scheduler and detokenizer, which SGLang kills with SIGKILL
alone) is asked first: every emulated process keeping a summary handles ``REPORT_SIGNAL`` (a
real-time signal programs leave alone) by writing it, and the killer sends that signal and waits,
at most ``KILL_GRACE_S``, for the summary before it sends SIGKILL. The process still dies by
SIGKILL.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable

from revati.shim import real
from revati.shim.patching import original, patch

WRITE_WAIT_S = 2.0
KILL_GRACE_S = 1.0
STOP_SIGNALS = (signal.SIGTERM,)
REPORT_SIGNAL = signal.SIGRTMIN + 3

_WRAPPERS: dict[Any, Any] = {}   # our wrapper -> the program's handler


def install(write_summary: Callable[[str], None], summaries_dir: Path | None = None) -> None:
    """Wrap the SIGTERM handlers the program installs from now on (and the one it has, if any).
    ``summaries_dir``: where processes keep their summaries (``process-PID.json``), if anywhere."""

    def wrap(signum: int, handler: Any) -> Any:
        if signum not in STOP_SIGNALS or not callable(handler) or handler in _WRAPPERS:
            return handler
        if summaries_dir is not None:
            _marker(summaries_dir, os.getpid()).touch()

        def on_stop_signal(sig, frame):
            _write_bounded(write_summary, signal.Signals(sig).name)
            return handler(sig, frame)

        _WRAPPERS[on_stop_signal] = handler
        return on_stop_signal

    def signal_(signum, handler):
        previous = original(signal, "signal")(signum, wrap(signum, handler))
        return _WRAPPERS.get(previous, previous)

    def getsignal(signum):
        current = original(signal, "getsignal")(signum)
        return _WRAPPERS.get(current, current)

    patch(signal, "signal", signal_)
    patch(signal, "getsignal", getsignal)
    if summaries_dir is not None:
        def kill(pid, sig):
            if sig == signal.SIGKILL and pid > 0 and pid != os.getpid():
                _await_summary(summaries_dir, pid)
            return original(os, "kill")(pid, sig)

        if threading.current_thread() is threading.main_thread() and \
                original(signal, "getsignal")(REPORT_SIGNAL) == signal.SIG_DFL:
            def on_report_signal(sig, frame):
                _write_bounded(write_summary, "SIGKILL")
                _reported(summaries_dir, os.getpid()).touch()

            original(signal, "signal")(REPORT_SIGNAL, on_report_signal)
            _report_marker(summaries_dir, os.getpid()).touch()

        patch(os, "kill", kill)
    if threading.current_thread() is threading.main_thread():   # signal.signal works only there
        for signum in STOP_SIGNALS:
            current = original(signal, "getsignal")(signum)
            if callable(current) and current not in _WRAPPERS:
                original(signal, "signal")(signum, wrap(signum, current))


def program_handler(handler: Any) -> Any:
    """The program's handler behind one of revati's wrappers (the handler itself otherwise)."""
    return _WRAPPERS.get(handler, handler)


def summary_path(summaries_dir: Path, pid: int) -> Path:
    return summaries_dir / f"process-{pid}.json"


def _marker(summaries_dir: Path, pid: int) -> Path:
    """Beside a process's summary: it handles SIGTERM, so it writes its summary when stopped."""
    return summaries_dir / f"process-{pid}.stop-handler"


def _report_marker(summaries_dir: Path, pid: int) -> Path:
    """Beside a process's summary: it writes its summary on REPORT_SIGNAL."""
    return summaries_dir / f"process-{pid}.report-signal"


def _reported(summaries_dir: Path, pid: int) -> Path:
    return summaries_dir / f"process-{pid}.reported"


def request_reports(summaries_dir: Path, pgid: int) -> None:
    """Before a whole process group is stopped (SIGTERM kills at once those without a handler):
    every emulated process of group ``pgid`` that answers REPORT_SIGNAL writes its summary; waits
    at most KILL_GRACE_S in all."""
    waiting = []
    for marker in summaries_dir.glob("process-*.report-signal"):
        try:
            pid = int(marker.name.split("-", 1)[1].split(".", 1)[0])
            if os.getpgid(pid) != pgid or _reported(summaries_dir, pid).exists():
                continue
            original(os, "kill")(pid, REPORT_SIGNAL)
        except (ValueError, OSError):
            continue
        waiting.append(_reported(summaries_dir, pid))
    deadline = real.monotonic() + KILL_GRACE_S
    while waiting and real.monotonic() < deadline:
        waiting = [w for w in waiting if not w.exists()]
        real.sleep(0.005)


def _await_summary(summaries_dir: Path, pid: int) -> None:
    if _marker(summaries_dir, pid).exists():
        done = summary_path(summaries_dir, pid)
    elif _report_marker(summaries_dir, pid).exists():
        done = _reported(summaries_dir, pid)
        try:
            original(os, "kill")(pid, REPORT_SIGNAL)
        except OSError:
            return
    else:
        return
    deadline = real.monotonic() + KILL_GRACE_S
    while not done.exists() and real.monotonic() < deadline:
        real.sleep(0.005)


def _write_bounded(write_summary: Callable[[str], None], reason: str) -> None:
    # A raw thread and a raw lock (shim/real.py): the program's threads and waits are virtual,
    # and this is revati's own work, outside the program's time.
    done = real.allocate_lock()
    done.acquire()
    real.start_new_thread(_write_quietly, (write_summary, reason, done))
    done.acquire(True, WRITE_WAIT_S)


def _write_quietly(write_summary: Callable[[str], None], reason: str, done: Any) -> None:
    try:
        write_summary(reason)
    except Exception as exc:   # the program's own handler must still run
        import sys

        print(f"revati: could not write this process's summary at {reason} ({exc!r})", file=sys.stderr)
    finally:
        done.release()
