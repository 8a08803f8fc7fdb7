"""The per-process side of the timekeeper protocol: ``Coordinator``.

One ``Coordinator`` per emulated process (thread-safe). The shim tells it which threads are
program threads and when each one enters and leaves a coordinated wait; the Coordinator reports
the process's aggregate state to the timekeeper and, from its own reader thread, wakes the
waits the timekeeper grants. It never reads or sets the virtual clock: the shim owns the local
virtual time (LVT) and passes deadlines in; ``lvt_fn`` only labels messages for reports.
See Note [Virtual time coordination] in ``revati.shim.coord.core``.

API (all times int ns of virtual time)::

    coord = Coordinator.connect(name, address=None, token=None, ticket=None,
                                start_lvt_ns=None, lvt_fn=None, register_thread=True)
    Coordinator.from_env(name, **kw) -> Coordinator | None   # REVATI_COORD_* variables
    coord.id, coord.start_lvt_ns
    coord.register_thread() / coord.unregister_thread()       # on the thread itself
    token = coord.begin_wait(deadline_ns | None, io_check=None, on_wake=None, label="")
    coord.end_wait(token) -> granted_ns | None                 # None: ended for another reason
    coord.collective(group_key, seq, rank, world_size, arrival_ns, cost_ns, payload=None)
        -> CollectiveResult(completion_ns, payloads, gvt_ns)
    coord.collective_start(...) -> PendingCollective; pending.wait() / pending.done()
    coord.join_group(group_key, rank, world_size)            # exit of a member fails its peers
    coord.touch()                    # any shim call: ends a stall-detected block, O(1)
    coord.gvt_ns()                   # latest global virtual time seen: floor for any wake-up
    coord.coordination_cpu_ns()      # CPU time of the Coordinator's own thread
    coord.announce_child(timeout_s=None) -> ticket; coord.child_env(ticket) -> dict
    coord.child_started(ticket, pid); coord.cancel_child(ticket)
    coord.close()

Rules for the callbacks the shim passes:

- ``on_wake(granted_ns)`` runs on the reader thread (or inside ``begin_wait`` when the deadline
  is already in the past) while the Coordinator's lock is held: it must be quick (set an event,
  write a wake pipe, release a lock) and must not call the Coordinator. It is called at most
  once per wait and never after ``end_wait`` returned for that wait.
- ``io_check()`` runs on the reader thread under the same lock when the timekeeper probes: it
  returns True when the wait's condition is already satisfied (data readable, the joined
  thread ended, ...) without blocking, e.g. ``select([fd], [], [], 0)``. An exception counts
  as True.
- ``end_wait`` must be called by the waiting thread for every ``begin_wait``, also after an
  error. Another thread that wakes the waiter (notify) may call ``end_wait(token)`` first: the
  wait stops counting at once (see Note [Virtual time coordination], "Wake-ups inside a
  process"); the waiter's own call then returns the same result.
- ``end_wait`` raises ``DeadlockError`` after a deadlock and ``TimekeeperLost`` when the
  timekeeper went away; ``collective`` also raises ``CollectiveFailed``.

This module captures the real ``time.sleep``, ``select.select``, ``_thread`` primitives at
import: import it before the shim patches them. Its reader thread is started with
``_thread.start_new_thread`` (not ``threading.Thread``), so thread-start hooks do not see it;
``coordination_thread_idents()`` names it for the shim.

Example (a virtual sleep; the shim's LVT is ``lvt``)::

    coord = Coordinator.from_env("worker-rank0", lvt_fn=lambda: lvt)
    woke = threading.Event()
    token = coord.begin_wait(lvt + 5_000_000, on_wake=lambda t: woke.set(), label="sleep")
    woke.wait()                      # the real wait; the shim uses its unpatched Event
    granted = coord.end_wait(token)
    lvt = max(lvt, granted, coord.gvt_ns())
"""

from __future__ import annotations

import _thread
import os
import select as _select_module
import socket
import sys
import time
import weakref
from typing import Any, Callable, NamedTuple

from revati.errors import CollectiveFailed, DeadlockError, TimekeeperLost
from revati.shim.coord import procstat
from revati.shim.coord.core import format_report
from revati.shim.coord.wire import (
    ENV_ADDRESS, ENV_TICKET, ENV_TOKEN, FLAG_IO, FLAG_STALLED, S2C, Address, FrameReader,
    ProtocolError, address_from_env, decode, encode, frame, handshake_body,
)

# The real primitives, before any shim patches them.
_real_sleep = time.sleep
_real_select = _select_module.select
_allocate_lock = _thread.allocate_lock
_start_new_thread = _thread.start_new_thread
_get_ident = _thread.get_ident
_get_native_id = _thread.get_native_id
_monotonic = time.monotonic
_thread_time_ns = time.thread_time_ns

CONNECT_TIMEOUT_S = 30.0
FORK_SPAWN_TIMEOUT_S = 30.0
STALL_SAMPLE_GAP_S = 0.001

_WAITING, _READY, _WOKEN, _ENDED = 0, 1, 2, 3
_RUNNING_VIEW = (False, None, 0)


class CollectiveResult(NamedTuple):
    completion_ns: int
    payloads: list  # bytes | None per rank
    gvt_ns: int


class _Wait:
    __slots__ = ("token", "thread", "deadline", "io_check", "on_wake", "status", "granted",
                 "error", "label")

    def __init__(self, token, thread, deadline, io_check, on_wake, label):
        self.token = token
        self.thread = thread
        self.deadline = deadline
        self.io_check = io_check
        self.on_wake = on_wake
        self.status = _WAITING
        self.granted: int | None = None
        self.error: BaseException | None = None
        self.label = label


class _ThreadInfo:
    __slots__ = ("ident", "native_id", "n_waiting")

    def __init__(self, ident: int, native_id: int):
        self.ident = ident
        self.native_id = native_id
        self.n_waiting = 0


class PendingCollective:
    """A collective this process has arrived at; ``wait()`` blocks until it completes."""

    __slots__ = ("_coord", "key", "result", "error", "token", "_lock")

    def __init__(self, coord: "Coordinator", key: tuple):
        self._coord = coord
        self.key = key  # (group_key, seq, rank)
        self.result: CollectiveResult | None = None
        self.error: BaseException | None = None
        self.token: int | None = None
        self._lock = None

    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def wait(self) -> CollectiveResult:
        return self._coord._collective_wait(self)


_instances: "weakref.WeakSet[Coordinator]" = weakref.WeakSet()


class Coordinator:
    """See the module docstring."""

    def __init__(self) -> None:
        self._lock = _allocate_lock()
        self._sock: socket.socket | None = None
        self._address: Address | None = None
        self._token = ""
        self._name = ""
        self._lvt_fn: Callable[[], int] | None = None
        self.id = 0
        self.start_lvt_ns = 0
        self._gvt = 0
        self._ack = 0
        self._threads: dict[int, _ThreadInfo] = {}
        self._n_waiting_threads = 0
        self._waits: dict[int, _Wait] = {}
        self._next_token = 1
        self._view = _RUNNING_VIEW
        self._stalled = False
        self._stall_snapshot: dict[int, Any] = {}
        self._activity = 0  # bumped by every API call; a stall check spanning one is void
        self._colls: dict[tuple, PendingCollective] = {}
        self._failure: BaseException | None = None
        self._closed = False
        self._reader_ident: int | None = None
        self._reader_cpu_ns = 0
        self._tickets = 0
        self._fork_ticket: str | None = None
        self._follow_fork = True

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
        coord._lvt_fn = lvt_fn
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
        sock, welcome, extra, reader = open_connection(self._address, self._token, register)
        _, gvt, pid_, start = welcome
        self._sock = sock
        self.id = pid_
        self.start_lvt_ns = start
        self._gvt = gvt
        self._reader_ident = _start_new_thread(self._reader, (sock, reader, extra))

    def close(self) -> None:
        """Leave the emulation (the timekeeper stops counting this process)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._failure is None:
                self._failure = TimekeeperLost(self._address, "this process closed its connection")
            sock = self._sock
            if sock is not None:
                try:
                    sock.sendall(encode(("bye",)))
                except OSError:
                    pass
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self) -> "Coordinator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- threads ------------------------------------------------------------------------

    def register_thread(self) -> None:
        """Count the calling thread as a program thread (call it on that thread)."""
        ident = _get_ident()
        with self._lock:
            self._activity += 1
            self._stalled = False
            if ident not in self._threads:
                self._threads[ident] = _ThreadInfo(ident, _get_native_id())
            self._sync()

    def unregister_thread(self) -> None:
        """The calling thread ends (or stops being a program thread)."""
        ident = _get_ident()
        with self._lock:
            self._activity += 1
            th = self._threads.pop(ident, None)
            if th is not None and th.n_waiting:
                self._n_waiting_threads -= 1
            self._sync()

    def coordination_thread_idents(self) -> set[int]:
        """Idents of the threads this Coordinator runs (the shim leaves them alone)."""
        return {self._reader_ident} if self._reader_ident is not None else set()

    # -- waits --------------------------------------------------------------------------

    def begin_wait(self, deadline_ns: int | None, io_check: Callable[[], bool] | None = None,
                   on_wake: Callable[[int], None] | None = None, label: str = "") -> int:
        """The calling thread starts waiting; returns a token for ``end_wait``.

        ``deadline_ns``: virtual time at which the wait times out (None: no timeout).
        ``io_check``: for waits that something outside the protocol can end (I/O, see module
        docstring). ``on_wake(granted_ns)``: how to wake the real wait.
        """
        ident = _get_ident()
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._activity += 1
            self._stalled = False
            th = self._threads.get(ident)
            if th is None:  # a thread the shim did not announce: it is a program thread now
                th = self._threads[ident] = _ThreadInfo(ident, _get_native_id())
            token = self._next_token
            self._next_token += 1
            w = _Wait(token, th, deadline_ns, io_check, on_wake, label)
            self._waits[token] = w
            if deadline_ns is not None and deadline_ns <= self._gvt and io_check is None:
                # Already past for the whole emulation, and nothing to observe: no need to ask
                # anybody. (A wait that can also end by I/O still goes through the timekeeper:
                # only there does "what arrived before the deadline" have one answer.)
                w.status = _WOKEN
                w.granted = self._gvt
                self._call_wake(w, self._gvt)
                self._sync()
                return token
            th.n_waiting += 1
            if th.n_waiting == 1:
                self._n_waiting_threads += 1
            self._sync()
            return token

    def end_wait(self, token: int) -> int | None:
        """The wait is over: returns the granted virtual time if the timekeeper woke it.

        Returns None if it ended for another reason (I/O, a notify). The shim continues at
        LVT = max(LVT, granted or data stamps, gvt_ns()).
        """
        ident = _get_ident()
        with self._lock:
            w = self._waits.get(token)
            if w is None:
                raise KeyError(f"unknown wait token {token}")
            self._activity += 1
            self._stalled = False
            if w.status != _ENDED:
                self._uncount(w)
                w.status = _ENDED
            if w.thread.ident == ident:
                del self._waits[token]
            self._sync()
            if w.error is not None:
                raise w.error
            return w.granted

    def touch(self) -> None:
        """Any shim call: the process is visibly running (ends a stall-detected block)."""
        if self._stalled:
            with self._lock:
                self._activity += 1
                self._stalled = False
                self._sync()

    def gvt_ns(self) -> int:
        return self._gvt

    def coordination_cpu_ns(self) -> int:
        """CPU time spent by this Coordinator's reader thread (to leave out of the LVT).

        Sampled by that thread after each batch of messages it handles, so it is exact up to
        the last message (the thread uses no CPU while it waits for the next).
        """
        return self._reader_cpu_ns

    # -- collectives --------------------------------------------------------------------

    def join_group(self, group_key: Any, rank: int, world_size: int) -> None:
        """Declare membership: if this process exits, its peers' collectives fail cleanly."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._send(("join", group_key, rank, world_size))

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
        key = (group_key, seq, rank)
        ident = _get_ident()
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if key in self._colls:
                raise ValueError(f"already arrived at collective {group_key!r} #{seq} rank {rank}")
            self._activity += 1
            self._stalled = False
            pending = PendingCollective(self, key)
            self._colls[key] = pending
            if wait:
                self._add_collective_wait(pending, ident)
            state = self._current()
            self._view = state
            self._send(("coll", self._ack, group_key, seq, rank, world_size, arrival_ns, cost_ns,
                        payload, state[0], state[1], state[2], self._lvt()))
        return pending

    def _add_collective_wait(self, pending: PendingCollective, ident: int) -> None:
        th = self._threads.get(ident)
        if th is None:
            th = self._threads[ident] = _ThreadInfo(ident, _get_native_id())
        lock = _allocate_lock()
        lock.acquire()
        pending._lock = lock
        token = self._next_token
        self._next_token += 1
        w = _Wait(token, th, None, None, lambda _t: lock.release(),
                  f"collective {pending.key[0]!r} #{pending.key[1]} rank {pending.key[2]}")
        self._waits[token] = w
        pending.token = token
        th.n_waiting += 1
        if th.n_waiting == 1:
            self._n_waiting_threads += 1

    def _collective_wait(self, pending: PendingCollective) -> CollectiveResult:
        with self._lock:
            if pending.token is None:
                if not pending.done():
                    self._add_collective_wait(pending, _get_ident())
                    self._sync()
        if pending.token is not None:
            pending._lock.acquire()  # released by on_wake (done, failed, deadlock, lost)
            with self._lock:
                w = self._waits.pop(pending.token)
                if w.status != _ENDED:
                    self._uncount(w)
                    w.status = _ENDED
                pending.token = None
                self._sync()
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
            ticket = self._new_ticket("child")
            self._send(("spawn", ticket, float(timeout_s or 0.0)))
            return ticket

    def child_started(self, ticket: str, pid: int) -> None:
        with self._lock:
            self._send(("spawn_pid", ticket, pid))

    def cancel_child(self, ticket: str) -> None:
        with self._lock:
            self._send(("spawn_cancel", ticket))

    def child_env(self, ticket: str | None = None) -> dict[str, str]:
        env = {ENV_ADDRESS: str(self._address), ENV_TOKEN: self._token}
        if ticket is not None:
            env[ENV_TICKET] = ticket
        return env

    def _new_ticket(self, what: str) -> str:
        self._tickets += 1
        return f"{what}-{os.getpid()}-{self.id}-{self._tickets}"

    # -- internals (hold self._lock) -----------------------------------------------------

    def _lvt(self) -> int:
        fn = self._lvt_fn
        return int(fn()) if fn is not None else 0

    def _send(self, msg: tuple) -> None:
        sock = self._sock
        if sock is None or self._failure is not None:
            return
        try:
            sock.sendall(encode(msg))
        except OSError as exc:
            self._fail_all(TimekeeperLost(self._address, f"send failed: {exc}"))

    def _uncount(self, w: _Wait) -> None:
        if w.status == _WAITING:
            th = w.thread
            th.n_waiting -= 1
            if th.n_waiting == 0 and self._threads.get(th.ident) is th:
                self._n_waiting_threads -= 1

    def _current(self) -> tuple[bool, int | None, int]:
        """(blocked, earliest deadline, flags) of this process right now."""
        n = len(self._threads)
        if not (self._stalled or (n and self._n_waiting_threads >= n)) or self._failure:
            return _RUNNING_VIEW
        deadline = None
        flags = FLAG_IO | FLAG_STALLED if self._stalled else 0
        for w in self._waits.values():
            if w.status == _WAITING:
                if w.deadline is not None and (deadline is None or w.deadline < deadline):
                    deadline = w.deadline
                if w.io_check is not None:
                    flags |= FLAG_IO
        return (True, deadline, flags)

    def _sync(self) -> None:
        state = self._current()
        if state != self._view:
            self._view = state
            self._send(("state", self._ack, state[0], state[1], state[2], self._lvt()))

    def _call_wake(self, w: _Wait, granted: int) -> None:
        if w.on_wake is None:
            return
        try:
            w.on_wake(granted)
        except Exception as exc:  # a broken callback must not kill the reader thread
            print(f"revati: on_wake callback of {w.label or 'a wait'} failed: {exc!r}",
                  file=sys.stderr)

    def _fail_all(self, error: BaseException) -> None:
        """Every current and future wait raises ``error``."""
        if self._failure is None:
            self._failure = error
        for w in list(self._waits.values()):
            if w.status in (_WAITING, _READY):
                self._uncount(w)
                w.status = _WOKEN
                w.error = self._failure
                self._call_wake(w, self._gvt)
        for key, pending in list(self._colls.items()):
            pending.error = self._failure
            del self._colls[key]

    # -- reader thread ------------------------------------------------------------------

    def _reader(self, sock: socket.socket, reader: FrameReader, first: list[tuple]) -> None:
        try:
            if first:
                with self._lock:
                    for msg in first:
                        self._dispatch(msg)
            while True:
                try:
                    data = sock.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    break
                try:
                    msgs = [decode(body, S2C) for body in reader.feed(data)]
                except ProtocolError as exc:
                    with self._lock:
                        if sock is self._sock:
                            self._fail_all(TimekeeperLost(self._address, f"bad message: {exc}"))
                    break
                checks = 0
                with self._lock:
                    if sock is not self._sock:  # a fork replaced the connection
                        break
                    for msg in msgs:
                        if msg[0] == "check":
                            checks += 1
                        else:
                            self._dispatch(msg)
                if checks:
                    self._stall_check()
                self._reader_cpu_ns = _thread_time_ns()
        finally:
            self._reader_cpu_ns = _thread_time_ns()
            with self._lock:
                if sock is self._sock and not self._closed:
                    self._fail_all(TimekeeperLost(self._address, "the timekeeper closed the "
                                                  "connection"))

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        gvt = msg[1]
        if gvt > self._gvt:
            self._gvt = gvt
        if kind == "wake":
            _, _, seq, granted = msg
            self._ack = seq
            for w in sorted((w for w in self._waits.values()
                             if w.status == _WAITING and w.deadline is not None
                             and w.deadline <= granted), key=lambda w: (w.deadline, w.token)):
                self._uncount(w)
                w.status = _WOKEN
                w.granted = granted
                self._call_wake(w, granted)
            self._view = _RUNNING_VIEW  # the server counts us running until we re-report
            self._sync()
        elif kind == "coll_done" or kind == "coll_fail":
            seq, key = msg[2], (msg[3], msg[4], msg[5])
            self._ack = seq
            pending = self._colls.pop(key, None)
            if pending is not None:
                if kind == "coll_done":
                    pending.result = CollectiveResult(msg[6], msg[7], self._gvt)
                else:
                    pending.error = CollectiveFailed(msg[3], msg[4], msg[6], msg[7])
                w = self._waits.get(pending.token) if pending.token is not None else None
                if w is not None and w.status == _WAITING:
                    self._uncount(w)
                    w.status = _WOKEN
                    self._call_wake(w, self._gvt)
            self._view = _RUNNING_VIEW
            self._sync()
        elif kind == "probe":
            self._probe(msg[2])
        elif kind == "gvt":
            pass
        elif kind == "deadlock":
            report = _Report(msg[2])
            report["this_process"] = {
                "name": self._name, "pid": os.getpid(),
                "waits": [w.label or ("sleep" if w.io_check is None else "I/O")
                          for w in self._waits.values() if w.status == _WAITING]}
            self._fail_all(DeadlockError(report))
        elif kind == "refused":
            self._fail_all(TimekeeperLost(self._address, f"refused: {msg[2]}"))

    def _probe(self, round_: int) -> None:
        for w in self._waits.values():
            if w.status == _WAITING and w.io_check is not None and self._ready(w):
                self._uncount(w)
                w.status = _READY
        if self._stalled:
            tids = [th.native_id for th in self._threads.values() if th.n_waiting == 0]
            now = procstat.sample_threads(tids)
            if not procstat.all_asleep(self._stall_snapshot, now):
                self._stalled = False
        state = self._current()
        if not state[0]:
            self._view = _RUNNING_VIEW
            self._send(("probe_reply", round_, self._ack, False, self._lvt()))
        elif state == self._view:
            self._send(("probe_reply", round_, self._ack, True, self._lvt()))
        else:
            self._sync()  # a different state than the server probed: it starts over

    @staticmethod
    def _ready(w: _Wait) -> bool:
        try:
            return bool(w.io_check())
        except Exception:
            return True

    def _stall_check(self) -> None:
        """Are the threads outside coordinated waits all asleep? (runs on the reader thread)"""
        with self._lock:
            for w in self._waits.values():  # a READY wait whose data vanished waits again
                if w.status == _READY and not self._ready(w):
                    w.status = _WAITING
                    w.thread.n_waiting += 1
                    if w.thread.n_waiting == 1 and self._threads.get(w.thread.ident) is w.thread:
                        self._n_waiting_threads += 1
            if self._stalled or self._current()[0]:
                self._sync()
                return
            threads = [th for th in self._threads.values() if th.n_waiting == 0]
            activity = self._activity
        tids = [th.native_id for th in threads]
        before = procstat.sample_threads(tids)
        _real_sleep(STALL_SAMPLE_GAP_S)
        after = procstat.sample_threads(tids)
        if not procstat.all_asleep(before, after):
            return
        with self._lock:
            if activity != self._activity or self._failure is not None:
                return
            for th in threads:  # threads that are gone stop counting
                if after.get(th.native_id) is None and self._threads.get(th.ident) is th:
                    del self._threads[th.ident]
            self._stalled = True
            self._stall_snapshot = after
            self._sync()

    # -- fork ---------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._lock.acquire()
        self._fork_ticket = None
        if self._follow_fork and self._failure is None and self._sock is not None:
            ticket = self._new_ticket("fork")
            self._send(("spawn", ticket, FORK_SPAWN_TIMEOUT_S))
            self._fork_ticket = ticket

    def _after_fork_parent(self) -> None:
        self._fork_ticket = None
        self._lock.release()

    def _after_fork_child(self) -> None:
        self._lock = _allocate_lock()
        ticket = self._fork_ticket
        old = self._sock
        self._sock = None
        if old is not None:
            old.close()  # only our copy of the descriptor: the parent's connection lives on
        ident = _get_ident()
        self._threads = {}
        self._n_waiting_threads = 0
        self._waits = {}
        self._colls = {}
        self._ack = 0
        self._view = _RUNNING_VIEW
        self._stalled = False
        self._reader_ident = None
        self._reader_cpu_ns = 0
        if ticket is None or not self._follow_fork:
            self._failure = self._failure or TimekeeperLost(self._address, "forked child")
            return
        try:
            self._open(ticket, self._lvt())
        except Exception as exc:
            self._failure = TimekeeperLost(self._address, f"re-registering after fork: {exc}")
            return
        with self._lock:  # the forking thread carries on as the child's program thread
            self._threads[ident] = _ThreadInfo(ident, _get_native_id())


class _Report(dict):
    """A deadlock report (plain dict) that prints as the formatted report."""

    def __str__(self) -> str:
        text = format_report(self)
        me = self.get("this_process")
        if me:
            text += f"\n  this process ({me['name']}, pid {me['pid']}) waits on: " \
                    f"{'; '.join(me['waits']) or 'nothing'}"
        return text


def open_connection(address: Address, token: str, register: tuple,
                    timeout_s: float = CONNECT_TIMEOUT_S):
    """Connect and handshake; returns (socket, welcome, messages after it, FrameReader)."""
    try:
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = address.path
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET,
                                 socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            target = (address.host, address.port)
        sock.settimeout(timeout_s)
        sock.connect(target)
        sock.sendall(frame(handshake_body(token, register)))
        reader = FrameReader()
        msgs: list[tuple] = []
        while not msgs:
            data = sock.recv(1 << 16)
            if not data:
                raise TimekeeperLost(address, "connection closed during the handshake")
            msgs = [decode(body, S2C) for body in reader.feed(data)]
        sock.settimeout(None)
    except (OSError, ProtocolError) as exc:
        raise TimekeeperLost(address, f"cannot connect: {exc}") from None
    if msgs[0][0] == "refused":
        sock.close()
        raise TimekeeperLost(address, f"refused: {msgs[0][2]}")
    if msgs[0][0] != "welcome":
        sock.close()
        raise TimekeeperLost(address, f"unexpected first message {msgs[0][0]!r}")
    return sock, msgs[0], msgs[1:], reader


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
