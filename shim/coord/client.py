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
it while some ``begin_wait`` waiter needs waking ("hot"); otherwise it only polls every
``COLD_POLL_S`` for messages to a running process (stall checks). This module uses the real
``time.sleep``, ``select.poll`` and ``_thread`` primitives of revati/shim/real.py, which
``revati.shim`` imports before any patch. The reader thread is started with
``_thread.start_new_thread`` (not ``threading.Thread``), so thread-start hooks do not see it;
``coordination_thread_idents()`` names it for the shim.

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
import select as _select_module
import socket
import sys
import weakref
from typing import Any, Callable, NamedTuple

from revati.errors import CollectiveFailed, DeadlockError, TimekeeperLost
from revati.shim import real
from revati.shim.coord import procstat
from revati.shim.coord.core import format_report
from revati.shim.coord.wire import (
    ENV_ADDRESS, ENV_TICKET, ENV_TOKEN, FLAG_IO, FLAG_STALLED, S2C, Address, FrameReader,
    ProtocolError, address_from_env, decode, encode, frame, handshake_body,
)

# The real primitives, before any shim patches them (revati/shim/real.py).
_real_sleep = real.sleep
_real_poll = real.select_poll
_POLLIN = (_select_module.POLLIN | _select_module.POLLHUP | _select_module.POLLERR
           | _select_module.POLLNVAL)
_POLLOUT = _select_module.POLLOUT | _select_module.POLLERR | _select_module.POLLNVAL
_allocate_lock = real.allocate_lock
_start_new_thread = real.start_new_thread
_get_ident = real.get_ident
_get_native_id = real.get_native_id
_thread_time_ns = real.thread_time_ns
_os_read = real.os_read
_os_write = real.os_write
_MSG_DONTWAIT = socket.MSG_DONTWAIT

CONNECT_TIMEOUT_S = 30.0
FORK_SPAWN_TIMEOUT_S = 30.0
STALL_SAMPLE_GAP_S = 0.001
COLD_POLL_S = 0.1  # how often an idle reader thread looks for messages to a running process
RECV_BYTES = 1 << 16

_WAITING, _READY, _WOKEN, _ENDED = 0, 1, 2, 3
_RUNNING_VIEW = (False, None, 0)


class CollectiveResult(NamedTuple):
    completion_ns: int
    payloads: list  # bytes | None per rank
    gvt_ns: int


class IoWaitResult(NamedTuple):
    granted_ns: int | None  # the deadline passed (the timeout wins ties with data)
    readable: list
    writable: list


class _Wait:
    __slots__ = ("token", "thread", "deadline", "io_check", "on_wake", "status", "granted",
                 "error", "label", "hot", "pipe")

    def __init__(self, token, thread, deadline, io_check, on_wake, label, hot):
        self.token = token
        self.thread = thread
        self.deadline = deadline
        self.io_check = io_check
        self.on_wake = on_wake
        self.status = _WAITING
        self.granted: int | None = None
        self.error: BaseException | None = None
        self.label = label
        self.hot = hot  # someone else (the reader thread) must deliver its wake
        self.pipe: int | None = None  # wake pipe whose byte on_wake writes and nobody read yet


class _Busy:
    __slots__ = ("coord",)

    def __init__(self, coord):
        self.coord = coord

    def __enter__(self):
        with self.coord._lock:
            self.coord._busy += 1
            self.coord._activity += 1
        return self

    def __exit__(self, *exc):
        with self.coord._lock:
            self.coord._busy -= 1
            self.coord._activity += 1
        return False


class _ThreadInfo:
    __slots__ = ("ident", "native_id", "n_waiting", "wake_pipe")

    def __init__(self, ident: int, native_id: int):
        self.ident = ident
        self.native_id = native_id
        self.n_waiting = 0
        self.wake_pipe: tuple[int, int] | None = None  # for waits that cannot pump


class PendingCollective:
    """A collective this process has arrived at; ``wait()`` blocks until it completes."""

    __slots__ = ("_coord", "key", "result", "error", "token")

    def __init__(self, coord: "Coordinator", key: tuple):
        self._coord = coord
        self.key = key  # (group_key, seq, rank)
        self.result: CollectiveResult | None = None
        self.error: BaseException | None = None
        self.token: int | None = None

    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def wait(self) -> CollectiveResult:
        return self._coord._collective_wait(self)


_instances: "weakref.WeakSet[Coordinator]" = weakref.WeakSet()


class Coordinator:
    """See the module docstring."""

    def __init__(self) -> None:
        self._lock = _allocate_lock()  # guards the state below and every send
        self._pump_lock = _allocate_lock()  # held by the one thread reading the socket
        self._sock: socket.socket | None = None
        self._frames = FrameReader()
        self._ctl: tuple[int, int] | None = None  # pipe that kicks the reader thread
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
        self._hot_waits = 0
        self._next_token = 1
        self._view = _RUNNING_VIEW
        self._stalled = False
        self._stall_snapshot: dict[int, Any] = {}
        self._activity = 0  # bumped by every API call; a stall check spanning one is void
        self._busy = 0      # shim work under way that may sleep in native threads (busy())
        self._colls: dict[tuple, PendingCollective] = {}
        self._failure: BaseException | None = None
        self._closed = False
        self._reader_ident: int | None = None
        self._reader_cpu_ns = 0
        self._tickets = 0
        self._fork_ticket: str | None = None
        self._follow_fork = True
        # Called once (under the lock, from the thread that noticed) when the timekeeper goes
        # away unannounced: no deadlock notice, no close() of ours. See Note [No orphans].
        self.on_lost: Callable[[TimekeeperLost], None] | None = None

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
        self.id = pid_
        self.start_lvt_ns = start
        self._gvt = gvt
        self._reader_ident = _start_new_thread(self._reader, (sock, bell, self._ctl, extra))

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
            if th is not None:
                if th.n_waiting:
                    self._n_waiting_threads -= 1
                _close_pipe(th.wake_pipe)
            self._sync()

    def coordination_thread_idents(self) -> set[int]:
        """Idents of the threads this Coordinator runs (the shim leaves them alone)."""
        return {self._reader_ident} if self._reader_ident is not None else set()

    # -- waits that block inside the Coordinator -----------------------------------------

    def sleep_until(self, deadline_ns: int, label: str = "sleep") -> int:
        """Block the calling thread until virtual time ``deadline_ns``; returns the grant."""
        with self._lock:
            w = self._new_wait(deadline_ns, None, None, label, hot=False)
        if w.status == _WAITING:
            self._own_wait(w)
        return self.end_wait(w.token)

    def wait_io(self, rfds: list[int], wfds: list[int], deadline_ns: int | None,
                label: str = "") -> IoWaitResult:
        """Block until a file descriptor is ready or virtual time reaches ``deadline_ns``.

        The coordinated form of ``select``: ``granted_ns`` is set (and no descriptor is
        reported) when the deadline passed first -- see Note [Virtual time coordination],
        "Data channels", for why data stamped at or after the deadline must not win.
        """
        rfds, wfds = list(rfds), list(wfds)

        def io_check() -> bool:
            r, w = _poll(rfds, wfds, 0)
            return bool(r or w)

        with self._lock:
            w = self._new_wait(deadline_ns, io_check, None, label or "I/O", hot=False)
        ready: tuple[list, list] = ([], [])
        if w.status in (_WAITING, _READY):
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
            return self._new_wait(deadline_ns, io_check, on_wake, label, hot=True).token

    def end_wait(self, token: int) -> int | None:
        """The wait is over: returns the granted virtual time if the timekeeper woke it.

        Returns None if it ended for another reason (I/O, a notify).
        """
        ident = _get_ident()
        with self._lock:
            w = self._waits.get(token)
            if w is None:
                raise KeyError(f"unknown wait token {token}")
            self._activity += 1
            self._stalled = False
            if w.pipe is not None and w.status == _WOKEN:
                _drain(w.pipe)  # woken after its descriptors were ready: drop the byte
            w.pipe = None
            if w.status != _ENDED:
                self._leave(w, _ENDED)
            if w.thread.ident == ident:
                del self._waits[token]
            self._sync()
            if w.error is not None:
                raise w.error
            return w.granted

    def wake_due(self, now_ns: int, on_woken: Callable[[int, int], None] | None = None) -> list[int]:
        """A running thread moved this process's clock to ``now_ns``: the other threads' waits
        whose deadlines it passed end now, at their deadlines. ``on_woken(thread ident,
        deadline)`` runs for each before it is woken. Returns the idents woken. See Note
        [Threads in virtual time] in revati/shim/vwait.py."""
        if not self._waits:
            return []
        with self._lock:
            due = sorted((w for w in self._waits.values()
                          if w.status == _WAITING and w.deadline is not None and w.deadline <= now_ns
                          and not (w.io_check is not None and self._ready(w))),
                         key=lambda w: (w.deadline, w.token))
            for w in due:
                if on_woken is not None:
                    on_woken(w.thread.ident, w.deadline)
                self._leave(w, _WOKEN)
                w.granted = w.deadline
                if w.on_wake is None:   # the thread pumps the socket itself (_pump_until)
                    try:
                        _os_write(self._wake_pipe(w.thread)[1], b"w")
                    except OSError:
                        pass            # full: a byte is already waiting
                else:
                    self._call_wake(w, w.deadline)
            if due:
                self._sync()
        return [w.thread.ident for w in due]

    def touch(self) -> None:
        """Any shim call: the process is visibly running (ends a stall-detected block)."""
        if self._stalled:
            with self._lock:
                self._activity += 1
                self._stalled = False
                self._sync()
                self._kick()  # the reader need not read the main connection any more

    def gvt_ns(self) -> int:
        return self._gvt

    def coordination_cpu_ns(self) -> int:
        """CPU time spent by this Coordinator's reader thread (to leave out of the LVT).

        Sampled by that thread after each round of work, so it is exact up to the last
        message it handled (it uses no CPU while it waits). Time spent inside Coordinator
        calls on program threads -- including reading the socket while they wait -- is the
        caller's, like any other shim call.
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
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if key in self._colls:
                raise ValueError(f"already arrived at collective {group_key!r} #{seq} rank {rank}")
            self._activity += 1
            self._stalled = False
            pending = PendingCollective(self, key)
            self._colls[key] = pending
            if wait:  # the arrival carries the state with this thread already waiting
                pending.token = self._add_wait(self._thread_info(), None, None, None,
                                               _coll_label(key), hot=False).token
            state = self._current()
            self._view = state
            self._send(("coll", self._ack, group_key, seq, rank, world_size, arrival_ns, cost_ns,
                        payload, state[0], state[1], state[2], self._lvt()))
        return pending

    def _collective_wait(self, pending: PendingCollective) -> CollectiveResult:
        with self._lock:
            if pending.token is None and not pending.done():
                pending.token = self._add_wait(self._thread_info(), None, None, None,
                                               _coll_label(pending.key), hot=False).token
                self._sync()
            w = self._waits.get(pending.token) if pending.token is not None else None
        if w is not None:
            if w.status == _WAITING:
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

    # -- wait bookkeeping (hold self._lock) ----------------------------------------------

    def _thread_info(self) -> _ThreadInfo:
        ident = _get_ident()
        th = self._threads.get(ident)
        if th is None:  # a thread the shim did not announce: it is a program thread now
            th = self._threads[ident] = _ThreadInfo(ident, _get_native_id())
        return th

    def _new_wait(self, deadline_ns, io_check, on_wake, label, hot: bool) -> _Wait:
        if self._failure is not None:
            raise self._failure
        self._activity += 1
        self._stalled = False
        th = self._thread_info()
        if deadline_ns is not None and deadline_ns <= self._gvt and io_check is None:
            # Already past for the whole emulation, and nothing to observe: no need to ask
            # anybody. (A wait that can also end by I/O still goes through the timekeeper:
            # only there does "what arrived before the deadline" have one answer.) It ends at
            # its own deadline, not at GVT: see Note [Virtual time coordination], "Advancing".
            w = _Wait(self._next_token, th, deadline_ns, None, on_wake, label, False)
            self._next_token += 1
            self._waits[w.token] = w
            w.status = _WOKEN
            w.granted = deadline_ns
            self._call_wake(w, deadline_ns)
            self._sync()
            return w
        w = self._add_wait(th, deadline_ns, io_check, on_wake, label, hot)
        self._sync()
        return w

    def _add_wait(self, th: _ThreadInfo, deadline, io_check, on_wake, label, hot) -> _Wait:
        w = _Wait(self._next_token, th, deadline, io_check, on_wake, label, hot)
        self._next_token += 1
        self._waits[w.token] = w
        th.n_waiting += 1
        if th.n_waiting == 1 and self._threads.get(th.ident) is th:
            self._n_waiting_threads += 1
        if hot:
            self._hot_waits += 1
            if self._hot_waits == 1:
                self._kick()
        return w

    def _leave(self, w: _Wait, status: int) -> None:
        """A wait stops counting (woken, ready, ended)."""
        if w.status == _WAITING:
            th = w.thread
            th.n_waiting -= 1
            if th.n_waiting == 0 and self._threads.get(th.ident) is th:
                self._n_waiting_threads -= 1
            if w.hot:
                self._hot_waits -= 1
        w.status = status

    def _rewait(self, w: _Wait) -> None:
        """A READY wait whose condition vanished counts again."""
        w.status = _WAITING
        th = w.thread
        th.n_waiting += 1
        if th.n_waiting == 1 and self._threads.get(th.ident) is th:
            self._n_waiting_threads += 1
        if w.hot:
            self._hot_waits += 1
            if self._hot_waits == 1:
                self._kick()

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

    def _kick(self) -> None:
        if self._ctl is not None:
            try:
                _os_write(self._ctl[1], b"k")
            except OSError:
                pass  # full: a kick is pending anyway

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
        except Exception as exc:  # a broken callback must not kill the reading thread
            print(f"revati: on_wake callback of {w.label or 'a wait'} failed: {exc!r}",
                  file=sys.stderr)

    def _fail_all(self, error: BaseException) -> None:
        """Every current and future wait raises ``error``."""
        if self._failure is None:
            self._failure = error
        for key, pending in list(self._colls.items()):
            pending.error = self._failure
            del self._colls[key]
        for w in list(self._waits.values()):
            if w.status in (_WAITING, _READY):
                self._leave(w, _WOKEN)
                w.error = self._failure
                self._call_wake(w, self._gvt)

    # -- reading the socket ---------------------------------------------------------------

    def _own_wait(self, w: _Wait, rfds: list[int] = (), wfds: list[int] = ()):
        """Block the calling thread until ``w`` is woken or a descriptor is ready.

        Reads the socket itself if nobody else does; otherwise waits to be woken.
        Returns (readable, writable) descriptors.
        """
        if self._pump_lock.acquire(False):
            try:
                return self._pump_until(w, rfds, wfds)
            finally:
                self._pump_lock.release()
                if self._hot_waits or self._stalled:
                    self._kick()  # the reader takes over the main connection
        return self._woken_wait(w, rfds, wfds)

    def _pump_until(self, w: _Wait, rfds, wfds):
        sock = self._sock
        if sock is None:
            return [], []
        # Another thread of this process may end the wait too (wake_due writes the thread's wake
        # pipe): the pipe exists before the status is read, so that write is never missed.
        with self._lock:
            wake_r = self._wake_pipe(w.thread)[0]
        sockfd = sock.fileno()
        fds = [sockfd, wake_r, *rfds]
        while w.status in (_WAITING, _READY):
            try:
                r, wr = _poll(fds, wfds)
            except (OSError, ValueError):
                return [], []
            if wake_r in r:
                _drain(wake_r)
                r = [fd for fd in r if fd != wake_r]
            if sockfd in r:
                if not self._pump_once(sock):
                    return [], []
                r = [fd for fd in r if fd != sockfd]
            if r or wr:
                return r, wr
        return [], []

    @staticmethod
    def _wake_pipe(th: _ThreadInfo) -> tuple[int, int]:
        if th.wake_pipe is None:
            th.wake_pipe = os.pipe()
            for fd in th.wake_pipe:
                os.set_blocking(fd, False)
        return th.wake_pipe

    def _woken_wait(self, w: _Wait, rfds, wfds):
        """Somebody else reads the socket: wait for on_wake through this thread's pipe."""
        th = w.thread
        with self._lock:
            if w.status not in (_WAITING, _READY):
                return [], []
            wake_r, wake_w = self._wake_pipe(th)
            w.on_wake = lambda _t: _os_write(wake_w, b"w")
            w.pipe = wake_r
            w.hot = True  # (a READY wait counts as hot again if it goes back to waiting)
            if w.status == _WAITING:
                self._hot_waits += 1
                if self._hot_waits == 1:
                    self._kick()
        while True:
            r, wr = _poll([wake_r, *rfds], wfds)
            if wake_r in r:
                _drain(wake_r)  # on_wake ran, exactly once
                w.pipe = None
                return [], []
            if r or wr:
                return r, wr

    def _pump_once(self, sock: socket.socket, blocking: bool = False) -> bool:
        """Read what the socket has and handle it (the caller holds the pump lock).

        False when the connection is gone.
        """
        try:
            data = sock.recv(RECV_BYTES, 0 if blocking else _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            self._connection_lost(sock, "the timekeeper closed the connection")
            return False
        try:
            msgs = [decode(body, S2C) for body in self._frames.feed(data)]
        except ProtocolError as exc:
            self._connection_lost(sock, f"bad message: {exc}")
            return False
        checks = 0
        with self._lock:
            if sock is not self._sock:
                return False
            for msg in msgs:
                if msg[0] == "check":
                    checks += 1
                else:
                    self._dispatch(msg)
        if checks:
            self._stall_check()
        return True

    def _connection_lost(self, sock: socket.socket, why: str) -> None:
        with self._lock:
            if sock is self._sock and not self._closed:
                unannounced = self._failure is None
                self._fail_all(TimekeeperLost(self._address, why))
                if unannounced and self.on_lost is not None:
                    self.on_lost(self._failure)

    def _reader(self, sock: socket.socket, bell: socket.socket | None, ctl: tuple[int, int],
                first: list[tuple]) -> None:
        """The reader thread.

        Hot -- some ``begin_wait`` waiter needs waking, or the process is stalled and must
        answer probes -- it reads the main connection. Cold, it leaves that connection to the
        program threads that wait inside the Coordinator and only listens on the doorbell,
        where the timekeeper sends stall checks: no cost while nothing happens. (Without a
        doorbell it looks at the main connection every COLD_POLL_S instead.)
        """
        ctl_r = ctl[0]
        bell_frames = FrameReader()
        try:
            if first:
                with self._lock:
                    for msg in first:
                        self._dispatch(msg)
            sockfd = sock.fileno()
            bellfd = bell.fileno() if bell is not None else ctl_r
            while not self._closed and sock is self._sock:
                wants_main = self._hot_waits or self._stalled
                if wants_main and self._pump_lock.acquire(False):
                    try:
                        r = _poll([sockfd, ctl_r, bellfd])[0]
                        if ctl_r in r:
                            _drain(ctl_r)
                        if sockfd in r and not self._pump_once(sock):
                            break
                        if bell is not None and bellfd in r and not self._ring(bell, bell_frames):
                            bell.close()  # the main connection tells why (EOF, deadlock)
                            bell, bellfd = None, ctl_r
                    finally:
                        self._pump_lock.release()
                elif bell is not None:
                    # Cold, or a program thread reads the main connection (it kicks us when
                    # it stops): listen for stall checks only.
                    r = _poll([ctl_r, bellfd])[0]
                    if ctl_r in r:
                        _drain(ctl_r)
                    if bellfd in r and not self._ring(bell, bell_frames):
                        bell.close()
                        bell, bellfd = None, ctl_r
                else:
                    if _poll([ctl_r], (), COLD_POLL_S)[0]:
                        _drain(ctl_r)
                    if not self._hot_waits and self._pump_lock.acquire(False):
                        try:
                            if not self._pump_once(sock):
                                break
                        finally:
                            self._pump_lock.release()
                self._reader_cpu_ns = _thread_time_ns()
        except (OSError, ValueError):
            pass  # the socket or pipe was closed under us: close() or fork
        finally:
            self._reader_cpu_ns = _thread_time_ns()
            self._connection_lost(sock, "the timekeeper closed the connection")
            with self._lock:
                if self._ctl is ctl:  # nobody may kick a descriptor number that gets reused
                    self._ctl = None
                if sock is self._sock or self._closed:
                    sock.close()
            if bell is not None:
                bell.close()
            _close_pipe(ctl)

    def _ring(self, bell: socket.socket, frames: FrameReader) -> bool:
        """Stall checks from the doorbell; False when it closed (the timekeeper is gone)."""
        try:
            data = bell.recv(RECV_BYTES, _MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            return False
        try:
            msgs = [decode(body, S2C) for body in frames.feed(data)]
        except ProtocolError:
            return False
        gvt = max(msg[1] for msg in msgs) if msgs else 0
        if gvt > self._gvt:
            self._gvt = gvt
        if any(msg[0] == "check" for msg in msgs):
            self._stall_check()
        return True

    # -- messages (hold self._lock) --------------------------------------------------------

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
                self._leave(w, _WOKEN)
                w.granted = granted
                self._call_wake(w, granted)
            # The server counts us running until we re-report with this ack.
            # See Note [Virtual time coordination], "Acknowledged wakes".
            self._view = _RUNNING_VIEW
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
                    self._leave(w, _WOKEN)
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
        # See Note [Virtual time coordination], "Advancing": answer from what is true now.
        for w in self._waits.values():
            if w.status == _WAITING and w.io_check is not None and self._ready(w):
                self._leave(w, _READY)
        if self._stalled:
            tids = [th.native_id for th in self._threads.values() if th.n_waiting == 0]
            now = procstat.sample_threads(tids)
            if not procstat.all_asleep(self._stall_snapshot, now):
                self._stalled = False
        state = self._current()
        if not state[0]:
            self._view = _RUNNING_VIEW
            self._send(("probe_reply", round_, self._ack, False, self._lvt()))
        else:
            # A state that differs from what the server believes makes it start over (the
            # answer below is then ignored as a cancelled round's); one it already holds
            # changes nothing there, so only this answer ends the round.
            self._sync()
            self._send(("probe_reply", round_, self._ack, True, self._lvt()))

    @staticmethod
    def _ready(w: _Wait) -> bool:
        try:
            return bool(w.io_check())
        except Exception:
            return True

    def busy(self) -> "_Busy":
        """``with coord.busy():`` -- revati's own work under way (loading the kernel tables:
        DuckDB/Arrow threads work while the calling thread sleeps in native code): no stall
        check may take the process for blocked meanwhile. Without it, a thread's first op
        looked like a stall and the timekeeper granted another thread's sleep early."""
        return _Busy(self)

    def _stall_check(self) -> None:
        """Are the threads outside coordinated waits all asleep? (not holding self._lock)"""
        if self._busy:
            return
        with self._lock:
            for w in self._waits.values():  # a READY wait whose data vanished waits again
                if w.status == _READY and not self._ready(w):
                    self._rewait(w)
            if self._stalled or self._current()[0]:
                self._sync()
                return
            threads = [th for th in self._threads.values() if th.n_waiting == 0]
            activity = self._activity
        tids = [th.native_id for th in threads]
        # Cheap first: a thread that gains CPU time within the gap is running.
        cpu = procstat.cpu_times(tids)
        _real_sleep(STALL_SAMPLE_GAP_S)
        if procstat.cpu_times(tids) != cpu:
            return
        # No CPU in the gap: asleep, or waiting for a core. Ask /proc (state, switches).
        before = procstat.sample_threads(tids)
        _real_sleep(STALL_SAMPLE_GAP_S)
        after = procstat.sample_threads(tids)
        if procstat.cpu_times(tids) != cpu or not procstat.all_asleep(before, after):
            return
        with self._lock:
            if activity != self._activity or self._failure is not None or self._busy:
                return
            for th in threads:  # threads that are gone stop counting
                if after.get(th.native_id) is None and self._threads.get(th.ident) is th:
                    del self._threads[th.ident]
            self._stalled = True
            self._stall_snapshot = after
            self._sync()  # (the reader, which ran this check or is kicked, reads probes now)
            self._kick()

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
        # Only the forking thread exists here: fresh locks, our own connection and pipes.
        self._lock = _allocate_lock()
        self._pump_lock = _allocate_lock()
        ticket = self._fork_ticket
        old, self._sock = self._sock, None
        if old is not None:
            old.close()  # only our copy of the descriptor: the parent's connection lives on
        _close_pipe(self._ctl)
        self._ctl = None
        for th in self._threads.values():
            _close_pipe(th.wake_pipe)
        ident = _get_ident()
        self._threads = {}
        self._n_waiting_threads = 0
        self._waits = {}
        self._hot_waits = 0
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


def _poll(rfds, wfds=(), timeout_s: float | None = None) -> tuple[list, list]:
    """``select`` for readiness with ``poll`` (no limit on descriptor numbers).

    Takes descriptors or objects with ``fileno()``; returns the ready ones as given.
    """
    poller = _real_poll()
    given: dict[int, Any] = {}
    masks: dict[int, int] = {}
    for obj, mask in [(o, _POLLIN) for o in rfds] + [(o, _POLLOUT) for o in wfds]:
        fd = obj if isinstance(obj, int) else obj.fileno()
        given[fd] = obj
        masks[fd] = masks.get(fd, 0) | mask
    for fd, mask in masks.items():
        poller.register(fd, mask)
    events = poller.poll(None if timeout_s is None else int(timeout_s * 1000))
    readable, writable = [], []
    for fd, ev in events:
        if ev & _POLLIN and masks[fd] & _select_module.POLLIN:
            readable.append(given[fd])
        if ev & _POLLOUT and masks[fd] & _select_module.POLLOUT:
            writable.append(given[fd])
    return readable, writable


def _coll_label(key: tuple) -> str:
    return f"collective {key[0]!r} #{key[1]} rank {key[2]}"


def _drain(fd: int) -> None:
    try:
        _os_read(fd, 4096)
    except OSError:
        pass


def _close_pipe(pipe: tuple[int, int] | None) -> None:
    if pipe is not None:
        for fd in pipe:
            try:
                os.close(fd)
            except OSError:
                pass


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
            data = sock.recv(RECV_BYTES)
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
