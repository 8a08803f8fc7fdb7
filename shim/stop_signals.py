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
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

from revati.shim import real
from revati.shim.patching import original, patch

WRITE_WAIT_S = 2.0
STOP_SIGNALS = (signal.SIGTERM,)

_WRAPPERS: dict[Any, Any] = {}   # our wrapper -> the program's handler


def install(write_summary: Callable[[str], None]) -> None:
    """Wrap the SIGTERM handlers the program installs from now on (and the one it has, if any)."""

    def wrap(signum: int, handler: Any) -> Any:
        if signum not in STOP_SIGNALS or not callable(handler) or handler in _WRAPPERS:
            return handler

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
    if threading.current_thread() is threading.main_thread():   # signal.signal works only there
        for signum in STOP_SIGNALS:
            current = original(signal, "getsignal")(signum)
            if callable(current) and current not in _WRAPPERS:
                original(signal, "signal")(signum, wrap(signum, current))


def program_handler(handler: Any) -> Any:
    """The program's handler behind one of revati's wrappers (the handler itself otherwise)."""
    return _WRAPPERS.get(handler, handler)


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
