"""Virtual waits: sleeps, timeouts and blocking I/O that cost no wall time.

Every wait the program can make with a timeout, and every blocking wait on I/O, goes through
the coordinator (Note [Virtual time coordination]): the waiting thread registers a virtual
deadline (or none) and really blocks on a private primitive; the coordinator wakes it when
virtual time reaches the deadline, or its I/O / a notify from another thread wakes it first.
Then the process clock jumps to the granted deadline; when data woke it, the data's causal stamp
moves the clock (not the global virtual time: docs/design_notes.md, item 2). Zero timeouts
never block.

Note [Threads in virtual time]
==============================
One emulated process has one virtual clock, shared by its threads (Note [Virtual host clock],
revati/shim/clock.py). The rule for the threads that share it:

- **Host work adds up.** The clock advances by the CPU time of all the program's threads. Their
  Python runs under one interpreter lock, so on the GPU box it runs one thread at a time too;
  what this rule leaves out is native work that a GPU box's spare cores would run in parallel
  (tokenizer or numpy work outside the lock while another thread runs Python): it is charged
  as if serial.
- **Waiting overlaps.** A thread that waits (a sleep, a timeout, a GPU synchronisation) costs
  the clock nothing while another thread runs. When a running thread moves the clock past a
  waiting thread's deadline (a synchronisation that waits for the GPU, a granted wait, a
  message's stamp), that wait ends at its own deadline (``ProcessClock.after_jump`` ->
  ``Waits._after_jump`` -> ``wake_due``): the sleeping thread does not wait for the busy one to
  block, as it would not on a GPU box. (Without this, HF continuous batching admitted no request
  while a generation step ran: the main job's requests after the first queued behind it, 2.8 s
  of 9.4.)
- **A woken thread runs at its deadline (its lag).** On the GPU box the woken thread ran while
  the other one waited for the GPU, so it sees its own deadline, not the jump's end: until it
  waits again its clock is its deadline plus its own thread CPU and charges, capped by the
  shared clock (``ProcessClock.begin_lag``); a sleep that ends before the shared present ends at
  once, still lagged (``lag_to``). The jumping thread *holds* (real time, no virtual time) until
  the threads it woke wait again, so what they hand over (a request put on a queue) is there
  when it goes on, as it would be on the box; their CPU meanwhile is excluded from the shared
  clock (``exclude_nested``). A hold gives up after HOLD_MAX_S (a thread blocked on a plain lock
  the holder owns) and stops holding for a thread after HOLD_MAX_MISSES such misses. Before the
  lag, the woken thread read the shared clock when the OS ran it (up to a step late), and
  whether its request made the next step depended on real-time scheduling: the main job's mean
  TTFT spread 21% over 5 runs, now 8% (the rest is where arrivals fall within a step:
  benchmarks/clock_repeatability.py prints that floor).
- The timekeeper grants waits only to processes whose threads all wait (Note [Virtual time
  coordination]); the rule above covers the waits of a process that is still running.
"""

from __future__ import annotations

import math
import select as _select
import selectors
import threading
from typing import Any, Callable

from revati.shim.real import allocate_lock as _allocate_lock
from revati.shim.real import get_ident as _get_ident
from revati.shim.real import monotonic as _real_monotonic
from revati.shim.real import process_time_ns as _cpu_ns
from revati.shim.real import select_select as _REAL_SELECT
from revati.shim.real import sleep as _real_sleep
from revati.shim.real import thread_time_ns as _thread_cpu_ns

# Settling on an overloaded machine (see _Settling._settle): a sleep that takes this many times
# longer than asked means other threads ran first; short sleeps, at most this many.
OVERSHOOT_FACTOR = 3.0
SETTLE_SLICE_S = 0.0002
MAX_SETTLE_SLICES = 100
# A hold (Note [Threads in virtual time]) polls in slices this long, gives up after HOLD_MAX_S,
# and stops holding for a thread it missed HOLD_MAX_MISSES times in a row.
HOLD_SLICE_S = 0.0001
HOLD_MAX_S = 1.0
HOLD_MAX_MISSES = 3


# Note [Timeouts round up]
# ========================
# A timeout in float seconds becomes a deadline in whole nanoseconds rounded *up*. asyncio's
# loop waits ``when - time()`` and then runs what is due before ``time() + 1e-9``; rounded down,
# a remainder just under 1 ns became a wait of 0 ns that ended where it began, and the loop
# asked again for ever. With host CPU counted the CPU of each round moved the clock on; in the
# repeatable mode (--no-host-cpu) `vllm serve` spun there at a fixed virtual time.
def timeout_ns(timeout_s: float) -> int:
    """A timeout as whole nanoseconds, rounded up (Note [Timeouts round up])."""
    return math.ceil(timeout_s * 1e9) if timeout_s > 0 else 0


class _Settling:
    """The coordinator, with the settle delay (Waits.settle) applied before any wait begins."""

    def __init__(self, coordinator, waits: "Waits"):
        self._coord = coordinator
        self._waits = waits

    def _settle(self) -> None:
        left = self._waits.settle_until - _real_monotonic()
        if left <= 0:
            return
        t0 = _real_monotonic()
        _real_sleep(left)
        if _real_monotonic() - t0 < OVERSHOOT_FACTOR * left:
            return
        # The sleep overshot: the cores are overloaded, and the I/O threads that carry the message
        # (libzmq's, here and at the receiver) may not have run yet. A timeout the timekeeper
        # granted meanwhile would fire before data sent earlier in virtual time (seen under
        # load: 7 empty polls for an answer sent after 2). Keep yielding in short sleeps until
        # one returns on time -- the scheduler got round to everybody -- or the bound is reached.
        for _ in range(MAX_SETTLE_SLICES):
            t0 = _real_monotonic()
            _real_sleep(SETTLE_SLICE_S)
            if _real_monotonic() - t0 < OVERSHOOT_FACTOR * SETTLE_SLICE_S:
                return

    def sleep_until(self, deadline_ns, label="sleep"):
        self._settle()
        return self._coord.sleep_until(deadline_ns, label)

    def wait_io(self, rfds, wfds, deadline_ns, label="", also_ready=None):
        self._settle()
        return self._coord.wait_io(rfds, wfds, deadline_ns, label, also_ready=also_ready)

    def begin_wait(self, deadline_ns, io_check=None, on_wake=None, label=""):
        self._settle()
        return self._coord.begin_wait(deadline_ns, io_check, on_wake, label)

    def __getattr__(self, name):
        return getattr(self._coord, name)


# A zero-timeout poll is a syscall: it takes real time on any machine. When the host's own CPU
# time is not counted (--no-host-cpu), this modelled cost keeps loops that poll until a deadline
# passes (multiprocessing.connection.wait, ...) from spinning at a frozen clock.
POLL_COST_NS = 2_000


class Waits:
    """The wait primitives, bound to one process's clock and coordinator."""

    def __init__(self, clock, coordinator):
        self.clock = clock
        self.coord = _Settling(coordinator, self)
        self.settle_until = 0.0  # real monotonic time; see settle()
        self._tls = threading.local()
        self._state_lock = _allocate_lock()
        self.waits = 0
        # Note [Threads in virtual time]: threads woken by another thread's jump, by ident, at
        # their deadlines, until they wait again; holds made for them; threads not held for
        self._woken_at: dict[int, int] = {}
        self.holds = 0
        self.hold_timeouts = 0
        self._hold_misses: dict[int, int] = {}
        self._wake_due = getattr(coordinator, "wake_due", None)
        if self._wake_due is not None:
            clock.after_jump = self._after_jump

    # -- helpers ------------------------------------------------------------------------------
    def settle(self, real_s: float) -> None:
        """Messages just sent through a channel that delivers asynchronously (libzmq's I/O
        threads) may still be in flight: before this process reports itself blocked, give them
        ``real_s`` of real time to land, so the timekeeper's probe of the receiver sees them."""
        self.settle_until = max(self.settle_until, _real_monotonic() + real_s)

    def polled(self) -> None:
        if not self.clock.count_host_cpu:
            self.clock.charge(POLL_COST_NS)

    def deadline(self, timeout_s: float | None) -> int | None:
        if timeout_s is None:
            return None
        return self.clock.now() + timeout_ns(timeout_s)

    def _after_wake(self, granted: int | None) -> None:
        # Woken by its deadline: the clock jumps there. Woken by data or by another thread: the
        # data's stamp moves the clock (Note [Causal stamps on channels]); the global virtual
        # time is no bound for it -- it is some other process's granted deadline. Woken by
        # another thread's jump past the deadline: it runs from its deadline (its lag).
        if granted is None:
            return
        if self._woken_at and self._woken_at.get(_get_ident()) == granted:
            if self.clock.begin_lag(granted):
                return
        self.clock.advance_to(granted)

    def _blocks(self) -> None:
        """This thread is about to wait: a lag it ran on ends, and a hold for it is over."""
        if self._woken_at:
            self._woken_at.pop(_get_ident(), None)
        self.clock.end_lag()

    # -- Note [Threads in virtual time]: jumps, lags and holds ---------------------------------
    def _after_jump(self, now_ns: int) -> None:
        woken = self._wake_due(now_ns, self._note_woken)
        if woken:
            self._hold(woken)

    def _note_woken(self, ident: int, deadline_ns: int) -> None:
        if ident != _get_ident():
            self._woken_at[ident] = deadline_ns

    def _hold(self, idents: list[int]) -> None:
        """This thread's jump woke ``idents``: let them run (at their deadlines) until they wait
        again before this thread goes on, as the GPU box would have run them while this thread
        waited for the GPU. Their CPU meanwhile is their own lagged time, not this clock's."""
        me = _get_ident()
        idents = [i for i in idents if i != me and self._hold_misses.get(i, 0) < HOLD_MAX_MISSES]
        if not idents:
            return
        clock = self.clock
        cpu0, own0, excl0 = _cpu_ns(), _thread_cpu_ns(), clock.excluded_ns()
        start = _real_monotonic()
        self.holds += 1
        while True:
            pending = [i for i in idents if i in self._woken_at]
            if not pending:
                break
            if _real_monotonic() - start > HOLD_MAX_S:
                # blocked on something that is not a virtual wait (a plain lock this thread
                # holds?): go on, and after a few such misses stop holding for that thread
                self.hold_timeouts += 1
                for i in pending:
                    self._hold_misses[i] = self._hold_misses.get(i, 0) + 1
                break
            _real_sleep(HOLD_SLICE_S)
        for i in idents:
            if i not in self._woken_at:
                self._hold_misses.pop(i, None)
        others = (_cpu_ns() - cpu0) - (_thread_cpu_ns() - own0) - (clock.excluded_ns() - excl0)
        clock.exclude_nested(cpu0, others)

    # -- a pure timer wait (time.sleep) ----------------------------------------------------------
    def sleep_until(self, deadline_ns: int) -> None:
        if self.clock.lagging() and self.clock.lag_to(deadline_ns):
            return   # it ends before the shared clock's present: the thread runs on, still lagged
        self._blocks()
        self.waits += 1
        granted = self.coord.sleep_until(deadline_ns, "sleep")
        self._after_wake(granted if granted is not None else deadline_ns)

    # -- a wait on file descriptors -------------------------------------------------------------------
    def wait_fds(self, poll_ready: Callable[[], Any], fds_events: list[tuple[int, int]],
                 timeout_s: float | None) -> Any:
        """Block until ``poll_ready()`` is truthy or the virtual timeout passes.

        ``poll_ready`` is a zero-timeout readiness check (it is also how the coordinator's probe
        asks whether this wait is about to end); ``fds_events`` are (fd, poll events) to really
        block on.
        """
        ready = poll_ready()
        if ready or (timeout_s is not None and timeout_s <= 0):
            self.polled()
            return ready
        deadline = self.deadline(timeout_s)
        self._blocks()
        self.waits += 1
        rfds = [fd for fd, ev in fds_events if ev & (_select.POLLIN | _select.POLLPRI)]
        wfds = [fd for fd, ev in fds_events if ev & _select.POLLOUT]
        res = self.coord.wait_io(rfds, wfds, deadline, "io")
        self._after_wake(res.granted_ns)
        return poll_ready()

    # -- threading.Condition -------------------------------------------------------------------------
    def condition_wait(self, cond: threading.Condition, timeout: float | None) -> bool:
        if not cond._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot wait on un-acquired lock")
        if getattr(self._tls, "raw", False):
            return _real_condition_wait(cond, timeout)
        waiter = _allocate_lock()
        waiter.acquire()
        state = _WaiterState()
        _STATES[waiter] = state
        cond._waiters.append(waiter)  # type: ignore[attr-defined]
        saved = cond._release_save()  # type: ignore[attr-defined]
        gotit = False
        try:
            if timeout is not None and timeout <= 0:
                gotit = waiter.acquire(False)
                return gotit
            deadline = self.deadline(timeout)
            self._blocks()
            self.waits += 1

            def on_wake(t: int) -> None:
                with self._state_lock:
                    if state.notified:
                        return
                    state.timed_out = True
                _release(waiter)

            state.token = self.coord.begin_wait(deadline, None, on_wake)
            try:
                waiter.acquire()
            finally:
                granted = self.coord.end_wait(state.token)
            gotit = state.notified
            self._after_wake(None if gotit else granted)
            return gotit
        finally:
            _STATES.pop(waiter, None)
            cond._acquire_restore(saved)  # type: ignore[attr-defined]
            if not gotit:
                try:
                    cond._waiters.remove(waiter)  # type: ignore[attr-defined]
                except ValueError:
                    pass

    def condition_notify(self, cond: threading.Condition, n: int = 1) -> None:
        if not cond._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = cond._waiters  # type: ignore[attr-defined]
        while waiters and n > 0:
            waiter = waiters[0]
            try:
                waiters.remove(waiter)
            except ValueError:
                pass
            state = _STATES.get(waiter)
            if state is None:
                try:
                    waiter.release()
                except RuntimeError:
                    continue
                n -= 1
                continue
            with self._state_lock:
                if state.timed_out:
                    continue
                state.notified = True
            if state.token is not None:
                self.coord.end_wait(state.token)  # it runs now: stop counting its wait first
            _release(waiter)
            n -= 1

    # -- Thread.join ----------------------------------------------------------------------------------
    def join(self, thread: threading.Thread, timeout: float | None, real_join: Callable) -> None:
        if not thread._started.is_set():  # type: ignore[attr-defined]
            raise RuntimeError("cannot join thread before it is started")
        if thread is threading.current_thread():
            raise RuntimeError("cannot join current thread")
        if not thread.is_alive():
            return real_join(thread, None)
        lock = _allocate_lock()
        lock.acquire()
        joiners = thread.__dict__.setdefault("_revati_joiners", [])
        deadline = self.deadline(timeout)
        self._blocks()
        token = self.coord.begin_wait(deadline, None, lambda t: _release(lock))
        joiners.append((lock, token))
        # thread_finished sets the flag before it wakes the joiners it sees: a joiner that
        # registered too late to be seen sees the flag here instead.
        if thread.__dict__.get("_revati_done"):
            _release(lock)  # the wait ends below, like any other
        try:
            lock.acquire()
        finally:
            granted = self.coord.end_wait(token)
            try:
                joiners.remove((lock, token))
            except ValueError:
                pass
        if thread.__dict__.get("_revati_done"):
            real_join(thread, None)  # only the interpreter's last bookkeeping is left
            self._after_wake(None)
        else:
            self._after_wake(granted)

    def raw_waits(self, on: bool) -> None:
        """While on, this thread's Condition waits are real: Thread.start waiting for the new
        thread to run must not count as waiting (the new thread is not registered yet)."""
        self._tls.raw = on

    def thread_finished(self, thread: threading.Thread) -> None:
        self._blocks()
        thread.__dict__["_revati_done"] = True
        for lock, token in list(thread.__dict__.get("_revati_joiners", [])):
            self.coord.end_wait(token)
            _release(lock)


def _real_condition_wait(cond: threading.Condition, timeout: float | None) -> bool:
    """A real (wall-clock) Condition.wait, for the few waits that must not count as waiting."""
    waiter = _allocate_lock()
    waiter.acquire()
    cond._waiters.append(waiter)  # type: ignore[attr-defined]
    saved = cond._release_save()  # type: ignore[attr-defined]
    gotit = False
    try:
        gotit = waiter.acquire() if timeout is None else waiter.acquire(True, max(timeout, 0))
        return gotit
    finally:
        cond._acquire_restore(saved)  # type: ignore[attr-defined]
        if not gotit:
            try:
                cond._waiters.remove(waiter)  # type: ignore[attr-defined]
            except ValueError:
                pass


class _WaiterState:
    __slots__ = ("token", "notified", "timed_out")

    def __init__(self) -> None:
        self.token: int | None = None
        self.notified = False
        self.timed_out = False


_STATES: dict[Any, _WaiterState] = {}


def _release(lock) -> None:
    try:
        lock.release()
    except RuntimeError:
        pass


# -- selectors / select ----------------------------------------------------------------------------

_POLL_OF = {selectors.EVENT_READ: _select.POLLIN, selectors.EVENT_WRITE: _select.POLLOUT}


def selector_fds(sel: selectors.BaseSelector) -> list[tuple[int, int]]:
    fileno = getattr(sel, "fileno", None)
    if fileno is not None:
        try:
            return [(fileno(), _select.POLLIN)]
        except (OSError, ValueError, NotImplementedError):
            pass
    out = []
    for key in sel.get_map().values():
        ev = 0
        if key.events & selectors.EVENT_READ:
            ev |= _select.POLLIN
        if key.events & selectors.EVENT_WRITE:
            ev |= _select.POLLOUT
        out.append((key.fd, ev))
    return out


def virtual_selector_select(waits: Waits, real_select: Callable) -> Callable:
    def select(self, timeout=None):
        if timeout is not None and timeout <= 0:
            waits.polled()
            return real_select(self, 0)
        if not self.get_map():  # nothing to wait on: a plain sleep
            if timeout is None:
                return real_select(self, None)
            waits.sleep_until(waits.deadline(timeout))  # type: ignore[arg-type]
            return []
        return waits.wait_fds(lambda: real_select(self, 0), selector_fds(self), timeout) or []
    select.__revati__ = True  # type: ignore[attr-defined]
    return select


def virtual_select_select(waits: Waits) -> Callable:
    def select(rlist, wlist, xlist, timeout=None):
        if timeout is not None and timeout <= 0:
            waits.polled()
            return _REAL_SELECT(rlist, wlist, xlist, 0)
        fds: list[tuple[int, int]] = []
        for objs, ev in ((rlist, _select.POLLIN), (wlist, _select.POLLOUT), (xlist, _select.POLLPRI)):
            for o in objs:
                fds.append((o if isinstance(o, int) else o.fileno(), ev))
        if not fds:
            if timeout is not None:
                waits.sleep_until(waits.deadline(timeout))  # type: ignore[arg-type]
            return [], [], []

        def ready():
            r = _REAL_SELECT(rlist, wlist, xlist, 0)
            return r if any(r) else None

        return waits.wait_fds(ready, fds, timeout) or ([], [], [])
    select.__revati__ = True  # type: ignore[attr-defined]
    return select
