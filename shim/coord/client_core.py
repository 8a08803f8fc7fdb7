"""The per-process side of the timekeeper protocol as a pure state machine: ``ClientCore``.

The wait table, thread registry, acknowledged state reports, collective bookkeeping and child
tickets of one emulated process -- no sockets, threads, sleeps or lock. ``client.Coordinator``
owns one, calls it under its lock and does the real work around it (the connection, the reader
thread, blocking, fork); tests drive it alone. It is one module (~520 lines) because waits,
collectives, tickets and stall checks all read and change the one wait table and state
report. See Note [Virtual time coordination] in ``revati.shim.coord.core``; the rules for
``on_wake`` and ``io_check`` are in ``client``'s module docstring.

Inputs are method calls (a thread registers, a wait begins or ends, a collective arrives) and
decoded server messages (``dispatch``); thread idents are arguments, native ids come from
``native_id_fn`` and /proc samples from ``sample_threads_fn`` (tests inject both). Outputs:

- messages to send, in order, handed out by ``take()`` (the caller sends them before it
  releases its lock, and calls ``fail_all`` if a send fails); none are queued after a failure;
- ``kick_wanted``: the reader thread must look again (a wait it must wake, a stall begun or
  ended); the caller clears it;
- wakes: each woken wait's ``on_wake(granted_ns)``, called at once. A wait without one belongs
  to a thread that reads the socket itself and sees ``status`` change -- or, after
  ``wake_due``, is sent a byte by the caller.

Example::

    core = ClientCore("w0", native_id_fn=lambda: 7)
    core.register_thread(1)
    w = core.new_wait(1, 500, None, woke.append, "sleep", hot=True)
    core.take()   # [("state", 0, True, 500, 0, 0)]: the process is blocked until 500
    core.dispatch(("wake", 500, 1, 500))   # woke == [500]; nothing to send: the server counts
    core.end_wait(w.token, 1)  # -> 500    # a process running once it sent it a wake
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, NamedTuple

from revati.errors import CollectiveFailed, DeadlockError, TimekeeperLost
from revati.shim.coord import procstat
from revati.shim.coord.core import format_report
from revati.shim.coord.wire import FLAG_IO, FLAG_STALLED, Address

# Wait.status: counting (WAITING), its I/O condition holds so it stops counting until the
# condition vanishes (READY), ended by the protocol or a failure (WOKEN), ended by end_wait.
WAITING, READY, WOKEN, ENDED = 0, 1, 2, 3
RUNNING_VIEW = (False, None, 0)  # (blocked, earliest deadline, flags) of a running process


class CollectiveResult(NamedTuple):
    completion_ns: int
    payloads: list  # bytes | None per rank
    gvt_ns: int


class Wait:
    __slots__ = ("token", "thread", "deadline", "io_check", "on_wake", "status", "granted",
                 "error", "label", "hot", "pipe")

    def __init__(self, token, thread, deadline, io_check, on_wake, label, hot):
        self.token = token
        self.thread = thread
        self.deadline = deadline  # int ns of virtual time, or None
        self.io_check = io_check
        self.on_wake = on_wake
        self.status = WAITING
        self.granted: int | None = None
        self.error: BaseException | None = None
        self.label = label
        self.hot = hot  # someone else (the reader thread) must deliver its wake
        self.pipe: int | None = None  # wake pipe whose byte on_wake writes and nobody read yet


class ThreadInfo:
    __slots__ = ("ident", "native_id", "n_waiting", "wake_pipe")

    def __init__(self, ident: int, native_id: int):
        self.ident = ident
        self.native_id = native_id
        self.n_waiting = 0
        self.wake_pipe: tuple[int, int] | None = None  # for waits that cannot pump (client's)


class PendingCollective:
    """A collective this process has arrived at; ``wait()`` blocks until it completes."""

    __slots__ = ("_coord", "key", "result", "error", "token")

    def __init__(self, coord: Any, key: tuple):
        self._coord = coord  # the Coordinator whose _collective_wait blocks for it
        self.key = key  # (group_key, seq, rank)
        self.result: CollectiveResult | None = None
        self.error: BaseException | None = None
        self.token: int | None = None

    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def wait(self) -> CollectiveResult:
        return self._coord._collective_wait(self)


class ClientCore:
    """See the module docstring. Attributes are read freely; change them through methods."""

    def __init__(self, name: str = "", address: Address | None = None,
                 lvt_fn: Callable[[], int] | None = None,
                 native_id_fn: Callable[[], int] = lambda: 0,
                 sample_threads_fn: Callable[[list[int]], dict] = procstat.sample_threads):
        self.name = name
        self.address = address  # for error messages only
        self.lvt_fn = lvt_fn  # labels messages; the core never moves the clock
        self.native_id_fn = native_id_fn  # the calling thread's native id
        self.sample_threads_fn = sample_threads_fn
        self.id = 0
        self.gvt = 0
        self.ack = 0  # sequence number of the last wake-class message handled
        self.threads: dict[int, ThreadInfo] = {}
        self.n_waiting_threads = 0  # registered threads with at least one WAITING wait
        self.waits: dict[int, Wait] = {}
        self.hot_waits = 0  # WAITING waits that the reader thread must wake
        self.next_token = 1
        self.view = RUNNING_VIEW  # the state the server was last told
        self.stalled = False
        self.stall_snapshot: dict[int, Any] = {}
        self.activity = 0  # bumped by every API call; a stall check spanning one is void
        self.busy = 0      # shim work under way that may sleep in native threads (busy())
        self.colls: dict[tuple, PendingCollective] = {}
        self.failure: BaseException | None = None
        self.tickets = 0
        self.outbox: list[tuple] = []
        self.kick_wanted = False

    # -- threads ------------------------------------------------------------------------

    def register_thread(self, ident: int) -> None:
        self.activity += 1
        self.stalled = False
        if ident not in self.threads:
            self.threads[ident] = ThreadInfo(ident, self.native_id_fn())
        self.sync()

    def unregister_thread(self, ident: int) -> ThreadInfo | None:
        """Returns the thread's entry (the caller closes its wake pipe), or None."""
        self.activity += 1
        th = self.threads.pop(ident, None)
        if th is not None and th.n_waiting:
            self.n_waiting_threads -= 1
        self.sync()
        return th

    def thread_info(self, ident: int) -> ThreadInfo:
        th = self.threads.get(ident)
        if th is None:  # a thread the shim did not announce: it is a program thread now
            th = self.threads[ident] = ThreadInfo(ident, self.native_id_fn())
        return th

    # -- waits --------------------------------------------------------------------------

    def new_wait(self, ident: int, deadline_ns: int | None, io_check, on_wake, label: str,
                 hot: bool) -> Wait:
        """Thread ``ident`` starts waiting. ``hot``: the reader thread must deliver its wake."""
        if self.failure is not None:
            raise self.failure
        self.activity += 1
        self.stalled = False
        th = self.thread_info(ident)
        if deadline_ns is not None and deadline_ns <= self.gvt and io_check is None:
            # Already past for the whole emulation, and nothing to observe: no need to ask
            # anybody. (A wait that can also end by I/O still goes through the timekeeper:
            # only there does "what arrived before the deadline" have one answer.) It ends at
            # its own deadline, not at GVT: see Note [Virtual time coordination], "Advancing".
            w = Wait(self.next_token, th, deadline_ns, None, on_wake, label, False)
            self.next_token += 1
            self.waits[w.token] = w
            w.status = WOKEN
            w.granted = deadline_ns
            self.call_wake(w, deadline_ns)
            self.sync()
            return w
        w = self.add_wait(th, deadline_ns, io_check, on_wake, label, hot)
        self.sync()
        return w

    def add_wait(self, th: ThreadInfo, deadline, io_check, on_wake, label, hot) -> Wait:
        """A WAITING entry, without reporting the new state (the caller does)."""
        w = Wait(self.next_token, th, deadline, io_check, on_wake, label, hot)
        self.next_token += 1
        self.waits[w.token] = w
        th.n_waiting += 1
        if th.n_waiting == 1 and self.threads.get(th.ident) is th:
            self.n_waiting_threads += 1
        if hot:
            self.hot_waits += 1
            if self.hot_waits == 1:
                self.kick_wanted = True
        return w

    def end_wait(self, token: int, ident: int) -> int | None:
        """The wait is over: the granted time if the timekeeper woke it, None if something
        else ended it; raises the wait's error. Only its own thread drops the entry, so the
        waiter's call after a waker's returns the same."""
        w = self.waits.get(token)
        if w is None:
            raise KeyError(f"unknown wait token {token}")
        self.activity += 1
        self.stalled = False
        w.pipe = None
        if w.status != ENDED:
            self.leave(w, ENDED)
        if w.thread.ident == ident:
            del self.waits[token]
        self.sync()
        if w.error is not None:
            raise w.error
        return w.granted

    def wake_due(self, now_ns: int, on_woken: Callable[[int, int], None] | None = None
                 ) -> list[Wait]:
        """Waits of other threads whose deadlines a running thread's clock (``now_ns``) passed
        end at their deadlines, in (deadline, token) order. Returns them; those without
        ``on_wake`` are the caller's to wake."""
        due = sorted((w for w in self.waits.values()
                      if w.status == WAITING and w.deadline is not None and w.deadline <= now_ns
                      and not (w.io_check is not None and self.ready(w))),
                     key=lambda w: (w.deadline, w.token))
        for w in due:
            if on_woken is not None:
                on_woken(w.thread.ident, w.deadline)
            self.leave(w, WOKEN)
            w.granted = w.deadline
            self.call_wake(w, w.deadline)
        if due:
            self.sync()
        return due

    def make_hot(self, w: Wait, on_wake: Callable[[int], None], pipe: int) -> bool:
        """``w``'s thread cannot read the socket: the reader thread wakes it through
        ``on_wake``, which writes ``pipe``. False if the wait already ended."""
        if w.status not in (WAITING, READY):
            return False
        w.on_wake = on_wake
        w.pipe = pipe
        w.hot = True  # (a READY wait counts as hot again if it goes back to waiting)
        if w.status == WAITING:
            self.hot_waits += 1
            if self.hot_waits == 1:
                self.kick_wanted = True
        return True

    def touch(self) -> None:
        """Any shim call: the process is visibly running (ends a stall-detected block)."""
        if self.stalled:
            self.activity += 1
            self.stalled = False
            self.sync()
            self.kick_wanted = True  # the reader need not read the main connection any more

    def leave(self, w: Wait, status: int) -> None:
        """A wait stops counting (woken, ready, ended)."""
        if w.status == WAITING:
            th = w.thread
            th.n_waiting -= 1
            if th.n_waiting == 0 and self.threads.get(th.ident) is th:
                self.n_waiting_threads -= 1
            if w.hot:
                self.hot_waits -= 1
        w.status = status

    def rewait(self, w: Wait) -> None:
        """A READY wait whose condition vanished counts again."""
        w.status = WAITING
        th = w.thread
        th.n_waiting += 1
        if th.n_waiting == 1 and self.threads.get(th.ident) is th:
            self.n_waiting_threads += 1
        if w.hot:
            self.hot_waits += 1
            if self.hot_waits == 1:
                self.kick_wanted = True

    @staticmethod
    def ready(w: Wait) -> bool:
        try:
            return bool(w.io_check())
        except Exception:
            return True

    def call_wake(self, w: Wait, granted: int) -> None:
        if w.on_wake is None:
            return
        try:
            w.on_wake(granted)
        except Exception as exc:  # a broken callback must not kill the reading thread
            print(f"revati: on_wake callback of {w.label or 'a wait'} failed: {exc!r}",
                  file=sys.stderr)

    def fail_all(self, error: BaseException) -> None:
        """Every current and future wait raises ``error`` (or the first failure)."""
        if self.failure is None:
            self.failure = error
        for key, pending in list(self.colls.items()):
            pending.error = self.failure
            del self.colls[key]
        for w in list(self.waits.values()):
            if w.status in (WAITING, READY):
                self.leave(w, WOKEN)
                w.error = self.failure
                self.call_wake(w, self.gvt)

    # -- state reports ------------------------------------------------------------------

    def lvt(self) -> int:
        fn = self.lvt_fn
        return int(fn()) if fn is not None else 0

    def send(self, msg: tuple) -> None:
        if self.failure is None:
            self.outbox.append(msg)

    def take(self) -> list[tuple]:
        """The queued messages, in order; the queue starts empty again."""
        msgs, self.outbox = self.outbox, []
        return msgs

    def current(self) -> tuple[bool, int | None, int]:
        """(blocked, earliest deadline, flags) of this process right now."""
        n = len(self.threads)
        if not (self.stalled or (n and self.n_waiting_threads >= n)) or self.failure:
            return RUNNING_VIEW
        deadline = None
        flags = FLAG_IO | FLAG_STALLED if self.stalled else 0
        for w in self.waits.values():
            if w.status == WAITING:
                if w.deadline is not None and (deadline is None or w.deadline < deadline):
                    deadline = w.deadline
                if w.io_check is not None:
                    flags |= FLAG_IO
        return (True, deadline, flags)

    def sync(self) -> None:
        """Report the state if it differs from what the server was last told."""
        state = self.current()
        if state != self.view:
            self.view = state
            self.send(("state", self.ack, state[0], state[1], state[2], self.lvt()))

    # -- collectives --------------------------------------------------------------------

    def join_group(self, group_key: Any, rank: int, world_size: int) -> None:
        if self.failure is not None:
            raise self.failure
        self.send(("join", group_key, rank, world_size))

    def collective_arrive(self, pending: PendingCollective, ident: int, world_size: int,
                          arrival_ns: int, cost_ns: int, payload: bytes | None,
                          wait: bool) -> None:
        """Rank ``pending.key`` arrives; with ``wait`` thread ``ident`` waits for it at once."""
        group_key, seq, rank = pending.key
        if self.failure is not None:
            raise self.failure
        if pending.key in self.colls:
            raise ValueError(f"already arrived at collective {group_key!r} #{seq} rank {rank}")
        self.activity += 1
        self.stalled = False
        self.colls[pending.key] = pending
        if wait:  # the arrival carries the state with this thread already waiting
            pending.token = self.add_wait(self.thread_info(ident), None, None, None,
                                          coll_label(pending.key), hot=False).token
        state = self.current()
        self.view = state
        self.send(("coll", self.ack, group_key, seq, rank, world_size, arrival_ns, cost_ns,
                   payload, state[0], state[1], state[2], self.lvt()))

    def collective_wait(self, pending: PendingCollective, ident: int) -> Wait | None:
        """Thread ``ident`` waits for ``pending``: its wait entry, or None if it is done."""
        if pending.token is None and not pending.done():
            pending.token = self.add_wait(self.thread_info(ident), None, None, None,
                                          coll_label(pending.key), hot=False).token
            self.sync()
        return self.waits.get(pending.token) if pending.token is not None else None

    # -- child processes ----------------------------------------------------------------

    def new_ticket(self, what: str) -> str:
        self.tickets += 1
        return f"{what}-{os.getpid()}-{self.id}-{self.tickets}"

    def announce_child(self, timeout_s: float | None) -> str:
        ticket = self.new_ticket("child")
        self.send(("spawn", ticket, float(timeout_s or 0.0)))
        return ticket

    # -- server messages ----------------------------------------------------------------

    def see_gvt(self, gvt_ns: int) -> None:
        if gvt_ns > self.gvt:
            self.gvt = gvt_ns

    def dispatch(self, msg: tuple) -> None:
        """Handle a decoded server message other than "check" (the caller's stall check)."""
        kind = msg[0]
        self.see_gvt(msg[1])
        if kind == "wake":
            _, _, seq, granted = msg
            self.ack = seq
            for w in sorted((w for w in self.waits.values()
                             if w.status == WAITING and w.deadline is not None
                             and w.deadline <= granted), key=lambda w: (w.deadline, w.token)):
                self.leave(w, WOKEN)
                w.granted = granted
                self.call_wake(w, granted)
            # The server counts us running until we re-report with this ack.
            # See Note [Virtual time coordination], "Acknowledged wakes".
            self.view = RUNNING_VIEW
            self.sync()
        elif kind == "coll_done" or kind == "coll_fail":
            seq, key = msg[2], (msg[3], msg[4], msg[5])
            self.ack = seq
            pending = self.colls.pop(key, None)
            if pending is not None:
                if kind == "coll_done":
                    pending.result = CollectiveResult(msg[6], msg[7], self.gvt)
                else:
                    pending.error = CollectiveFailed(msg[3], msg[4], msg[6], msg[7])
                w = self.waits.get(pending.token) if pending.token is not None else None
                if w is not None and w.status == WAITING:
                    self.leave(w, WOKEN)
                    self.call_wake(w, self.gvt)
            self.view = RUNNING_VIEW
            self.sync()
        elif kind == "probe":
            self.probe(msg[2])
        elif kind == "gvt":
            pass
        elif kind == "deadlock":
            report = DeadlockReport(msg[2])
            report["this_process"] = {
                "name": self.name, "pid": os.getpid(),
                "waits": [w.label or ("sleep" if w.io_check is None else "I/O")
                          for w in self.waits.values() if w.status == WAITING]}
            self.fail_all(DeadlockError(report))
        elif kind == "refused":
            self.fail_all(TimekeeperLost(self.address, f"refused: {msg[2]}"))

    def probe(self, round_: int) -> None:
        # See Note [Virtual time coordination], "Advancing": answer from what is true now.
        for w in self.waits.values():
            if w.status == WAITING and w.io_check is not None and self.ready(w):
                self.leave(w, READY)
        if self.stalled:
            tids = [th.native_id for th in self.threads.values() if th.n_waiting == 0]
            now = self.sample_threads_fn(tids)
            if not procstat.all_asleep(self.stall_snapshot, now):
                self.stalled = False
        state = self.current()
        if not state[0]:
            self.view = RUNNING_VIEW
            self.send(("probe_reply", round_, self.ack, False, self.lvt()))
        else:
            # A state that differs from what the server believes makes it start over (the
            # answer below is then ignored as a cancelled round's); one it already holds
            # changes nothing there, so only this answer ends the round.
            self.sync()
            self.send(("probe_reply", round_, self.ack, True, self.lvt()))

    # -- stall checks (the caller samples /proc between the two halves) -------------------

    def stall_check_start(self) -> tuple[list[ThreadInfo], int] | None:
        """Threads to sample and the activity count, or None when no check is needed."""
        for w in self.waits.values():  # a READY wait whose data vanished waits again
            if w.status == READY and not self.ready(w):
                self.rewait(w)
        if self.stalled or self.current()[0]:
            self.sync()
            return None
        return [th for th in self.threads.values() if th.n_waiting == 0], self.activity

    def stall_check_commit(self, threads: list[ThreadInfo], activity: int,
                           after: dict[int, Any]) -> bool:
        """``threads`` were all asleep (``after``: their last /proc samples): the process is
        stalled unless something happened meanwhile. True if it is."""
        if activity != self.activity or self.failure is not None or self.busy:
            return False
        for th in threads:  # threads that are gone stop counting
            if after.get(th.native_id) is None and self.threads.get(th.ident) is th:
                del self.threads[th.ident]
        self.stalled = True
        self.stall_snapshot = after
        self.sync()  # (the reader, which ran this check or is kicked, reads probes now)
        self.kick_wanted = True
        return True

    # -- fork ---------------------------------------------------------------------------

    def reset_after_fork(self) -> None:
        """In a forked child: no threads, waits or collectives; nothing acknowledged. GVT,
        the failure, tickets and tokens carry on."""
        self.threads = {}
        self.n_waiting_threads = 0
        self.waits = {}
        self.hot_waits = 0
        self.colls = {}
        self.ack = 0
        self.view = RUNNING_VIEW
        self.stalled = False
        self.outbox = []
        self.kick_wanted = False


def coll_label(key: tuple) -> str:
    return f"collective {key[0]!r} #{key[1]} rank {key[2]}"


class DeadlockReport(dict):
    """A deadlock report (plain dict) that prints as the formatted report."""

    def __str__(self) -> str:
        text = format_report(self)
        me = self.get("this_process")
        if me:
            text += f"\n  this process ({me['name']}, pid {me['pid']}) waits on: " \
                    f"{'; '.join(me['waits']) or 'nothing'}"
        return text
