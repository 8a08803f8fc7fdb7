"""In-process coordination of virtual waits, for an emulation of a single process.

It implements the same interface as the timekeeper client (revati.shim.coord.client) --
``begin_wait``/``end_wait``/``sleep_until``/``register_thread``/``gvt_ns``/``collective`` -- with
the same rule restricted to one process: virtual time moves past a waiting thread's deadline
only when every program thread of the process is waiting (Note [Virtual time coordination]),
and then the earliest deadline is granted. A thread blocked in a call revati does not
instrument (a raw lock, a C extension waiting on a socket) would stall that rule; a monitor
thread detects it from /proc (the thread sleeps and does not run) and treats it as waiting.
"""

from __future__ import annotations

import _thread
import itertools
import os
import select as _select
import threading
import time
from dataclasses import dataclass
from typing import Callable

from revati.errors import DeadlockError

_real_monotonic = time.monotonic
_real_sleep = time.sleep


@dataclass
class IoWaitResult:
    granted_ns: int | None
    readable: list[int]
    writable: list[int]


@dataclass(eq=False)
class _Waiter:
    thread: int
    deadline_ns: int | None
    io_check: Callable[[], bool] | None
    on_wake: Callable[[int], None]
    granted_ns: int | None = None




class LocalCoordinator:
    def __init__(self, start_ns: int = 0, stall_check_s: float = 0.02, deadlock_timeout_s: float = 30.0):
        self._lock = _thread.allocate_lock()
        self._threads: dict[int, int] = {}        # ident -> native id
        self._waiters: dict[int, _Waiter] = {}
        self._tokens = itertools.count(1)
        self._gvt = int(start_ns)
        self.start_lvt_ns = int(start_ns)
        self._ended: dict[int, int | None] = {}
        self._stall_check_s = stall_check_s
        self._deadlock_timeout_s = deadlock_timeout_s
        self._cpu_ns = 0
        self._presumed_waiting: set[int] = set()
        self._closed = False
        self.grants = 0
        self.register_thread()
        self._monitor = threading.Thread(target=self._watch, name="revati-local-coord", daemon=True)
        self._monitor._revati_internal = True  # type: ignore[attr-defined]
        self._monitor.start()

    # -- interface ------------------------------------------------------------------------------
    def gvt_ns(self) -> int:
        return self._gvt

    def coordination_cpu_ns(self) -> int:
        return self._cpu_ns

    def coordination_thread_idents(self) -> set[int]:
        """The monitor thread: its whole CPU time is in ``coordination_cpu_ns``, so the clock's
        full-collection exclusion must leave its collections alone (they were excluded twice)."""
        ident = self._monitor.ident
        return {ident} if ident is not None else set()

    def register_thread(self, key: object = None) -> None:
        """Count a program thread; ``key`` names a thread that is starting (no ident yet)."""
        with self._lock:
            if key is None:
                self._threads[threading.get_ident()] = threading.get_native_id()
            else:
                self._threads[key] = 0  # type: ignore[index]

    def unregister_thread(self, key: object = None) -> None:
        with self._lock:
            self._threads.pop(threading.get_ident() if key is None else key, None)  # type: ignore[call-overload]
            self._maybe_advance()

    def touch(self) -> None:
        if self._presumed_waiting:
            with self._lock:
                self._presumed_waiting.discard(threading.get_ident())

    def wake_due(self, now_ns: int, on_woken: Callable[[int, int], None] | None = None) -> list[int]:
        """See Coordinator.wake_due and Note [Threads in virtual time] (revati/shim/vwait.py)."""
        if not self._waiters:
            return []
        woken = []
        with self._lock:
            for w in sorted(self._waiters.values(), key=lambda w: w.deadline_ns or 0):
                if (w.granted_ns is None and w.deadline_ns is not None and w.deadline_ns <= now_ns
                        and not (w.io_check is not None and w.io_check())):
                    w.granted_ns = w.deadline_ns
                    self.grants += 1
                    if on_woken is not None:
                        on_woken(w.thread, w.deadline_ns)
                    woken.append(w.thread)
                    w.on_wake(w.deadline_ns)
        return woken

    def begin_wait(self, deadline_ns: int | None, io_check: Callable[[], bool] | None = None,
                   on_wake: Callable[[int], None] | None = None, label: str = "") -> int:
        with self._lock:
            token = next(self._tokens)
            ident = threading.get_ident()
            self._presumed_waiting.discard(ident)
            self._waiters[token] = _Waiter(ident, deadline_ns, io_check, on_wake or (lambda t: None))
            self._maybe_advance()
            return token

    def end_wait(self, token: int) -> int | None:
        """Stop counting a wait; another thread that woke the waiter (notify) may call it first."""
        with self._lock:
            w = self._waiters.pop(token, None)
            if w is None:
                return self._ended.pop(token, None)
            if w.thread != threading.get_ident():
                self._ended[token] = w.granted_ns  # for the waiter's own call
            return w.granted_ns

    def sleep_until(self, deadline_ns: int, label: str = "sleep") -> int:
        lock = _thread.allocate_lock()
        lock.acquire()
        token = self.begin_wait(deadline_ns, None, lambda t: lock.release())
        try:
            lock.acquire()
        finally:
            granted = self.end_wait(token)
        return granted if granted is not None else deadline_ns

    def wait_io(self, rfds: list[int], wfds: list[int], deadline_ns: int | None, label: str = "",
                also_ready: Callable[[], bool] | None = None) -> IoWaitResult:
        """Block until a descriptor is ready or the virtual deadline is granted (``also_ready``:
        as Coordinator.wait_io's)."""
        r_wake, w_wake = os.pipe()
        os.set_blocking(w_wake, False)

        def ready_now() -> bool:
            r, w, _ = _select.select(rfds, wfds, [], 0)
            return bool(r or w) or (also_ready is not None and also_ready())

        def poke(t: int) -> None:
            try:
                os.write(w_wake, b"x")
            except OSError:
                pass

        token = self.begin_wait(deadline_ns, ready_now, poke, label)
        try:
            poller = _select.poll()
            for fd in rfds:
                poller.register(fd, _select.POLLIN | _select.POLLPRI)
            for fd in wfds:
                poller.register(fd, _select.POLLOUT)
            poller.register(r_wake, _select.POLLIN)
            while True:
                try:
                    poller.poll(None)
                except InterruptedError:
                    continue
                break
        finally:
            granted = self.end_wait(token)
            os.close(r_wake)
            os.close(w_wake)
        r, w, _ = _select.select(rfds, wfds, [], 0)
        return IoWaitResult(granted, list(r), list(w))

    def collective(self, group_key, seq, rank, world_size, arrival_ns, cost_ns, payload=None):
        if world_size != 1:
            raise RuntimeError("in-process coordination cannot run a collective across processes; "
                               "start the emulation with `revati emulate`")
        return arrival_ns + cost_ns, [payload]

    def close(self) -> None:
        self._closed = True

    def after_fork_in_child(self) -> None:
        """Only the forking thread survives a fork: start over with it (and a new monitor)."""
        self._lock = _thread.allocate_lock()
        self._threads = {threading.get_ident(): threading.get_native_id()}
        self._waiters = {}
        self._presumed_waiting = set()
        self._closed = False
        self._monitor = threading.Thread(target=self._watch, name="revati-local-coord", daemon=True)
        self._monitor._revati_internal = True  # type: ignore[attr-defined]
        self._monitor.start()

    # -- the rule ---------------------------------------------------------------------------------
    def _maybe_advance(self) -> None:
        # Called with the lock held.
        t0 = time.thread_time_ns()
        try:
            live = [w for w in self._waiters.values() if w.granted_ns is None]
            waiting = {w.thread for w in live} | self._presumed_waiting
            if any(ident not in waiting for ident in self._threads):
                return
            timed = [w for w in live if w.deadline_ns is not None]
            if not timed:
                return
            for w in live:
                if w.io_check is not None and w.io_check():
                    return  # its I/O is ready: that thread is about to run
            t = min(w.deadline_ns for w in timed)  # type: ignore[type-var]
            self._gvt = max(self._gvt, t)
            self.grants += 1
            for w in timed:
                if w.deadline_ns == t:
                    w.granted_ns = t
                    w.on_wake(t)
        finally:
            self._cpu_ns += time.thread_time_ns() - t0

    def _watch(self) -> None:
        """Treat threads blocked outside revati's waits as waiting (see module docstring).

        A thread waiting for the GIL also sleeps in the kernel, so a sleeping thread alone
        proves nothing; the test is that the whole process used (almost) no CPU over a window
        while a deadline was pending and some thread was outside a coordinated wait.
        """
        while not self._closed:
            t_own = time.thread_time_ns()
            cpu0 = time.process_time_ns()
            _real_sleep(self._stall_check_s)
            with self._lock:
                pending = any(w.deadline_ns is not None and w.granted_ns is None for w in self._waiters.values())
                waiting = {w.thread for w in self._waiters.values() if w.granted_ns is None}
                running = {i for i in self._threads if i not in waiting and i not in self._presumed_waiting}
            own = time.thread_time_ns() - t_own
            busy = time.process_time_ns() - cpu0 - own
            window = int(self._stall_check_s * 1e9)
            if busy > window // 50:
                # someone ran: nobody may be presumed waiting any more
                if self._presumed_waiting:
                    with self._lock:
                        self._presumed_waiting.clear()
            elif pending and running:
                with self._lock:
                    self._presumed_waiting.update(running)
                    self._maybe_advance()
            self._cpu_ns += time.thread_time_ns() - t_own

    def check_deadlock(self) -> None:
        with self._lock:
            live = [w for w in self._waiters.values() if w.granted_ns is None]
            if live and len({w.thread for w in live}) == len(self._threads) and \
                    all(w.deadline_ns is None and w.io_check is None for w in live):
                raise DeadlockError({f"thread {w.thread}": "waiting with no deadline" for w in live})

    def _pid(self) -> int:
        return os.getpid()
