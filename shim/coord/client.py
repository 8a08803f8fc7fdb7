"""The per-process side of the timekeeper protocol: ``Coordinator``.

One ``Coordinator`` per emulated process (thread-safe). The shim tells it which threads are
program threads and when each one enters and leaves a coordinated wait; the Coordinator reports
the process's aggregate state to the timekeeper and wakes the waits the timekeeper grants. It
never reads or sets the virtual clock: the shim owns the local virtual time (LVT) and passes
deadlines in; ``lvt_fn`` only labels messages for reports.
See Note [Virtual time coordination] in ``revati.shim.coord.core``.

API (all times are int ns of virtual time)::

    coord = Coordinator.connect(name, address=None, token=None, ticket=None,
                                start_lvt_ns=None, lvt_fn=None, register_thread=True)
    Coordinator.from_env(name, **kw) -> Coordinator | None   # REVATI_COORD_* variables
    coord.id, coord.start_lvt_ns
    coord.register_thread() / coord.unregister_thread()       # on the thread itself

    # waits that block inside the Coordinator (the fast path: the waiting thread itself
    # reads the timekeeper's answer, no thread hand-off)
    coord.sleep_until(deadline_ns, label="sleep") -> granted_ns
    coord.wait_io(rfds, wfds, deadline_ns | None, label="") -> IoWaitResult(granted_ns, r, w)
    coord.collective(group_key, seq, rank, world_size, arrival_ns, cost_ns, payload=None)
        -> CollectiveResult(completion_ns, payloads, gvt_ns)
    coord.collective_start(...) -> PendingCollective; pending.wait() / pending.done()

    # waits that block in the shim's own primitive (Event, Condition, lock, ...)
    token = coord.begin_wait(deadline_ns | None, io_check=None, on_wake=None, label="")
    coord.end_wait(token) -> granted_ns | None                 # None: ended for another reason

    coord.join_group(group_key, rank, world_size)  # an exit of a member fails its peers
    coord.touch()                    # any shim call: ends a stall-detected block, O(1)
    coord.gvt_ns()                   # latest global virtual time seen (for reports; not a floor)
    coord.coordination_cpu_ns()      # CPU time of the Coordinator's own thread
    coord.announce_child(timeout_s=None) -> ticket; coord.child_env(ticket) -> dict
    coord.child_started(ticket, pid); coord.cancel_child(ticket)
    coord.close()

After a wait the shim continues at LVT = max(LVT, granted) when the timekeeper ended it, or at
max(LVT, the data's stamps) when data did -- never at gvt_ns(), which is some other process's
granted deadline (docs/design_notes.md, items 2 and 7).

Rules for the callbacks the shim passes to ``begin_wait``:

- ``on_wake(granted_ns)`` runs on whichever thread reads the timekeeper's message (the
  Coordinator's reader thread, a thread pumping inside ``sleep_until``/``wait_io``/
  ``collective``, or inside ``begin_wait`` itself when the deadline is already past) while the
  Coordinator's lock is held: it must be quick (set an event, write a wake pipe, release a
  lock) and must not call the Coordinator. It is called at most once per wait and never after
  ``end_wait`` returned for that wait.
- ``io_check()`` runs under the same lock when the timekeeper probes: it returns True when the
  wait's condition is already satisfied (data readable, the joined thread ended, ...) without
  blocking, e.g. ``select([fd], [], [], 0)``. An exception counts as True.
- ``end_wait`` must be called by the waiting thread for every ``begin_wait``, also after an
  error. Another thread that wakes the waiter (notify) may call ``end_wait(token)`` first: the
  wait stops counting at once (see Note [Virtual time coordination], "Wake-ups inside a
  process"); the waiter's own call then returns the same result.
- Waits raise ``DeadlockError`` after a deadlock and ``TimekeeperLost`` when the timekeeper
  went away; collectives also raise ``CollectiveFailed``.

Threads and sockets. Exactly one thread reads the timekeeper's socket at a time (the holder of
the pump lock). A thread blocked in ``sleep_until``/``wait_io``/``collective`` takes that role
itself when it is free, so its own wake costs a single kernel wake-up. The reader thread takes
it while some ``begin_wait`` waiter needs waking ("hot"); otherwise it listens only on a second
connection, the doorbell, for stall checks (without one it polls the main connection every
``COLD_POLL_S``). The real ``time.sleep``, ``select.poll`` and ``_thread`` primitives of
revati/shim/real.py are used throughout, which ``revati.shim`` imports before any patch. The
reader thread is started with ``_thread.start_new_thread`` (not ``threading.Thread``), so
thread-start hooks do not see it; ``coordination_thread_idents()`` names it for the shim.

Layout. The protocol state -- wait table, thread registry, acks, collectives, tickets -- is the
pure ``client_core.ClientCore``, driven by tests without sockets; ``client_io.CoordinatorIO``
(the base class) sends what it queues, reads the socket, blocks, runs the stall check and
handles fork; this module holds the public API and connecting, and registers the fork hooks.

Example (a virtual sleep; the shim's LVT is ``lvt``)::

    coord = Coordinator.from_env("worker-rank0", lvt_fn=lambda: lvt)
    lvt = max(lvt, coord.sleep_until(lvt + 5_000_000))
    # the same through the shim's own primitive:
    woke = threading.Event()
    token = coord.begin_wait(lvt + 5_000_000, on_wake=lambda t: woke.set(), label="sleep")
    woke.wait()                      # the real wait; the shim uses its unpatched Event
    lvt = max(lvt, coord.end_wait(token) or lvt)
"""

from __future__ import annotations

import os
import socket
import weakref
from typing import Any, Callable, NamedTuple

from revati.errors import TimekeeperLost
from revati.shim import real
from revati.shim.coord.client_core import (
    READY, WAITING, WOKEN, CollectiveResult, PendingCollective,
)
from revati.shim.coord.client_io import (
    COLD_POLL_S, CONNECT_TIMEOUT_S, FORK_SPAWN_TIMEOUT_S, RECV_BYTES, STALL_SAMPLE_GAP_S,
    CoordinatorIO, _close_pipe, _drain, _poll, open_connection,
)
from revati.shim.coord.wire import ENV_ADDRESS, ENV_TICKET, ENV_TOKEN, Address, address_from_env, \
    encode

__all__ = [
    "COLD_POLL_S", "CONNECT_TIMEOUT_S", "FORK_SPAWN_TIMEOUT_S", "RECV_BYTES",
    "STALL_SAMPLE_GAP_S", "CollectiveResult", "Coordinator", "IoWaitResult",
    "PendingCollective", "connect", "open_connection",
]

# The real primitives, before any shim patches them (revati/shim/real.py).
_start_new_thread = real.start_new_thread
_get_ident = real.get_ident
_os_write = real.os_write


class IoWaitResult(NamedTuple):
    granted_ns: int | None  # the deadline passed (the timeout wins ties with data)
    readable: list
    writable: list


class _Busy:
    __slots__ = ("coord",)

    def __init__(self, coord):
        self.coord = coord

    def __enter__(self):
        with self.coord._lock:
            self.coord._core.busy += 1
            self.coord._core.activity += 1
        return self

    def __exit__(self, *exc):
        with self.coord._lock:
            self.coord._core.busy -= 1
            self.coord._core.activity += 1
        return False


_instances: "weakref.WeakSet[Coordinator]" = weakref.WeakSet()


class Coordinator(CoordinatorIO):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._token = ""
        self._name = ""
        self.start_lvt_ns = 0

    @property
    def id(self) -> int:
        """This participant's id at the timekeeper."""
        return self._core.id

    # -- connection ---------------------------------------------------------------------

    @classmethod
    def connect(cls, name: str, *, address: str | Address | None = None, token: str | None = None,
                ticket: str | None = None, start_lvt_ns: int | None = None,
                lvt_fn: Callable[[], int] | None = None, register_thread: bool = True,
                follow_fork: bool = True) -> "Coordinator":
        """Register this process with the timekeeper (address/token default to the env)."""
        if address is None:
            env = address_from_env()
            if env is None:
                raise TimekeeperLost(None, f"no timekeeper address ({ENV_ADDRESS} is not set)")
            address, env_token, env_ticket = env
            token = env_token if token is None else token
            ticket = env_ticket if ticket is None else ticket
        coord = cls()
        coord._address = address if isinstance(address, Address) else Address.parse(address)
        coord._token = token if token is not None else os.environ.get(ENV_TOKEN, "")
        coord._name = name
        coord._core.name = name
        coord._core.address = coord._address
        coord._core.lvt_fn = lvt_fn
        coord._follow_fork = follow_fork
        coord._open(ticket, start_lvt_ns)
        if register_thread:
            coord.register_thread()
        _instances.add(coord)
        return coord

    @classmethod
    def from_env(cls, name: str, **kwargs: Any) -> "Coordinator | None":
        """Connect if ``REVATI_COORD_ADDRESS`` is set, else None."""
        if not os.environ.get(ENV_ADDRESS):
            return None
        return cls.connect(name, **kwargs)

    def _open(self, ticket: str | None, start_lvt_ns: int | None) -> None:
        register = ("register", self._name, os.getpid(), os.getppid(), start_lvt_ns, ticket,
                    "participant")
        sock, welcome, extra, frames = open_connection(self._address, self._token, register)
        _, gvt, pid_, start = welcome
        try:
            bell = open_connection(self._address, self._token, ("doorbell", pid_))[0]
        except TimekeeperLost:
            bell = None  # the reader then polls the main connection instead
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        self._ctl = (r, w)
        self._sock = sock
        self._frames = frames
        self._core.id = pid_
        self.start_lvt_ns = start
        self._core.gvt = gvt
        self._reader_ident = _start_new_thread(self._reader, (sock, bell, self._ctl, extra))

    def close(self) -> None:
        """Leave the emulation (the timekeeper stops counting this process)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._core.failure is None:
                self._core.failure = TimekeeperLost(self._address,
                                                    "this process closed its connection")
            sock = self._sock
            if sock is not None:
                try:
                    sock.sendall(encode(("bye",)))
                except OSError:
                    pass
            self._kick()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- threads ------------------------------------------------------------------------

    def register_thread(self) -> None:
        """Count the calling thread as a program thread (call it on that thread)."""
        ident = _get_ident()
        with self._lock:
            self._core.register_thread(ident)
            self._flush()

    def unregister_thread(self) -> None:
        """The calling thread ends (or stops being a program thread)."""
        ident = _get_ident()
        with self._lock:
            th = self._core.unregister_thread(ident)
            if th is not None:
                _close_pipe(th.wake_pipe)
            self._flush()

    def coordination_thread_idents(self) -> set[int]:
        """Idents of the threads this Coordinator runs (the shim leaves them alone)."""
        return {self._reader_ident} if self._reader_ident is not None else set()

    # -- waits that block inside the Coordinator -----------------------------------------

    def sleep_until(self, deadline_ns: int, label: str = "sleep") -> int:
        """Block the calling thread until virtual time ``deadline_ns``; returns the grant."""
        with self._lock:
            try:
                w = self._core.new_wait(_get_ident(), deadline_ns, None, None, label, hot=False)
            finally:
                self._flush()
        if w.status == WAITING:
            self._own_wait(w)
        return self.end_wait(w.token)

    def wait_io(self, rfds: list[int], wfds: list[int], deadline_ns: int | None,
                label: str = "", also_ready: Callable[[], bool] | None = None) -> IoWaitResult:
        """Block until a file descriptor is ready or virtual time reaches ``deadline_ns``.

        The coordinated form of ``select``: ``granted_ns`` is set (and no descriptor is
        reported) when the deadline passed first -- see Note [Virtual time coordination],
        "Data channels", for why data stamped at or after the deadline must not win.
        ``also_ready()``: the data the descriptors announce is already there although their
        signal may still be in flight (a shared-memory write whose ZMQ notification libzmq's I/O
        threads have not delivered yet): the timekeeper's probe counts the wait as ready and
        grants no deadline past it; the thread still wakes on the descriptors.
        """
        rfds, wfds = list(rfds), list(wfds)

        def io_check() -> bool:
            r, w = _poll(rfds, wfds, 0)
            return bool(r or w) or (also_ready is not None and also_ready())

        with self._lock:
            try:
                w = self._core.new_wait(_get_ident(), deadline_ns, io_check, None,
                                        label or "I/O", hot=False)
            finally:
                self._flush()
        ready: tuple[list, list] = ([], [])
        if w.status in (WAITING, READY):
            ready = self._own_wait(w, rfds, wfds)
        granted = self.end_wait(w.token)
        if granted is not None:
            return IoWaitResult(granted, [], [])
        return IoWaitResult(None, *ready)

    # -- waits that block in the shim's primitive --------------------------------------------

    def begin_wait(self, deadline_ns: int | None, io_check: Callable[[], bool] | None = None,
                   on_wake: Callable[[int], None] | None = None, label: str = "") -> int:
        """The calling thread starts waiting; returns a token for ``end_wait``.

        ``deadline_ns``: virtual time at which the wait times out (None: no timeout).
        ``io_check``: for waits that something outside the protocol can end (I/O, see module
        docstring). ``on_wake(granted_ns)``: how to wake the real wait.
        """
        with self._lock:
            try:
                return self._core.new_wait(_get_ident(), deadline_ns, io_check, on_wake, label,
                                           hot=True).token
            finally:
                self._flush()

    def end_wait(self, token: int) -> int | None:
        """The wait is over: returns the granted virtual time if the timekeeper woke it.

        Returns None if it ended for another reason (I/O, a notify).
        """
        ident = _get_ident()
        with self._lock:
            w = self._core.waits.get(token)
            if w is not None and w.pipe is not None and w.status == WOKEN:
                _drain(w.pipe)  # woken after its descriptors were ready: drop the byte
            try:
                return self._core.end_wait(token, ident)
            finally:
                self._flush()

    def wake_due(self, now_ns: int, on_woken: Callable[[int, int], None] | None = None) -> list[int]:
        """A running thread moved this process's clock to ``now_ns``: the other threads' waits
        whose deadlines it passed end now, at their deadlines. ``on_woken(thread ident,
        deadline)`` runs for each before it is woken. Returns the idents woken. See Note
        [Threads in virtual time] in revati/shim/vwait.py."""
        if not self._core.waits:
            return []
        with self._lock:
            due = self._core.wake_due(now_ns, on_woken)
            for w in due:
                if w.on_wake is None:   # the thread pumps the socket itself (_pump_until)
                    try:
                        _os_write(self._wake_pipe(w.thread)[1], b"w")
                    except OSError:
                        pass            # full: a byte is already waiting
            self._flush()
        return [w.thread.ident for w in due]

    def touch(self) -> None:
        """Any shim call: the process is visibly running (ends a stall-detected block)."""
        if self._core.stalled:
            with self._lock:
                self._core.touch()
                self._flush()

    def gvt_ns(self) -> int:
        return self._core.gvt

    def coordination_cpu_ns(self) -> int:
        """CPU time spent by this Coordinator's reader thread (to leave out of the LVT).

        Sampled by that thread after each round of work, so it is exact up to the last
        message it handled (it uses no CPU while it waits). Time spent inside Coordinator
        calls on program threads -- including reading the socket while they wait -- is the
        caller's, like any other shim call.
        """
        return self._reader_cpu_ns

    def busy(self) -> "_Busy":
        """``with coord.busy():`` -- revati's own work under way (loading the kernel tables:
        DuckDB/Arrow threads work while the calling thread sleeps in native code): no stall
        check may take the process for blocked meanwhile. Without it, a thread's first op
        looked like a stall and the timekeeper granted another thread's sleep early."""
        return _Busy(self)

    # -- collectives --------------------------------------------------------------------

    def join_group(self, group_key: Any, rank: int, world_size: int) -> None:
        """Declare membership: if this process exits, its peers' collectives fail cleanly."""
        with self._lock:
            self._core.join_group(group_key, rank, world_size)
            self._flush()

    def collective(self, group_key: Any, seq: int, rank: int, world_size: int, arrival_ns: int,
                   cost_ns: int, payload: bytes | None = None) -> CollectiveResult:
        """Arrive and wait until all ranks of (group_key, seq) arrived.

        Everybody gets completion_ns = max(arrival_ns) + max(cost_ns) and the payloads by rank.
        """
        return self._collective_wait(
            self._collective_arrive(group_key, seq, rank, world_size, arrival_ns, cost_ns,
                                    payload, wait=True))

    def collective_start(self, group_key: Any, seq: int, rank: int, world_size: int,
                         arrival_ns: int, cost_ns: int,
                         payload: bytes | None = None) -> PendingCollective:
        """Arrive without waiting (an async op); ``.wait()`` later."""
        return self._collective_arrive(group_key, seq, rank, world_size, arrival_ns, cost_ns,
                                       payload, wait=False)

    def _collective_arrive(self, group_key, seq, rank, world_size, arrival_ns, cost_ns, payload,
                           wait: bool) -> PendingCollective:
        pending = PendingCollective(self, (group_key, seq, rank))
        with self._lock:
            self._core.collective_arrive(pending, _get_ident(), world_size, arrival_ns, cost_ns,
                                         payload, wait)
            self._flush()
        return pending

    def _collective_wait(self, pending: PendingCollective) -> CollectiveResult:
        with self._lock:
            w = self._core.collective_wait(pending, _get_ident())
            self._flush()
        if w is not None:
            if w.status == WAITING:
                self._own_wait(w)
            pending.token = None
            self.end_wait(w.token)  # raises after a deadlock or a lost connection
        if pending.error is not None:
            raise pending.error
        return pending.result

    # -- child processes ----------------------------------------------------------------

    def announce_child(self, timeout_s: float | None = None) -> str:
        """A child process is about to start: GVT waits for it to register with the ticket.

        Put ``child_env(ticket)`` into its environment; report ``child_started(ticket, pid)``
        so the timekeeper notices if it dies before registering, or ``cancel_child``.
        """
        with self._lock:
            ticket = self._core.announce_child(timeout_s)
            self._flush()
            return ticket

    def child_started(self, ticket: str, pid: int) -> None:
        with self._lock:
            self._core.send(("spawn_pid", ticket, pid))
            self._flush()

    def cancel_child(self, ticket: str) -> None:
        with self._lock:
            self._core.send(("spawn_cancel", ticket))
            self._flush()

    def child_env(self, ticket: str | None = None) -> dict[str, str]:
        env = {ENV_ADDRESS: str(self._address), ENV_TOKEN: self._token}
        if ticket is not None:
            env[ENV_TICKET] = ticket
        return env


def _fork_before() -> None:
    for c in list(_instances):
        c._before_fork()


def _fork_parent() -> None:
    for c in list(_instances):
        c._after_fork_parent()


def _fork_child() -> None:
    for c in list(_instances):
        c._after_fork_child()


os.register_at_fork(before=_fork_before, after_in_parent=_fork_parent,
                    after_in_child=_fork_child)


def connect(name: str, **kwargs: Any) -> Coordinator:
    """Same as ``Coordinator.connect``."""
    return Coordinator.connect(name, **kwargs)
