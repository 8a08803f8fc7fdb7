"""The timekeeper's decisions as a pure, synchronous state machine (no sockets, no clock).

``Timekeeper`` takes events -- a registration, a message from a participant, a disconnect, a
tick of real time -- and queues the messages to send as ``(participant_id, message)`` pairs that
``take()`` hands out. Real time enters only as the ``now_s`` argument, so tests drive it
deterministically. ``server.py`` wraps it in sockets; ``client_core.py`` is the other side's
state machine and ``client.py`` its sockets. It stays one module of ~670 lines because the
Note below is the protocol's one full statement and ``Timekeeper`` is a single state machine
whose handlers share its counters and invariants.

Note [Virtual time coordination]
================================
Every emulated process (a *participant*) has a local virtual time (LVT, int ns) that its shim
owns; it grows with the process's own CPU time and with local GPU-sync jumps, independently of
other processes. This module decides only when *waiting* ends.

States. A participant is BLOCKED when every one of its program threads is inside a coordinated
wait -- a sleep or timeout (a wait with a virtual deadline), a wait on I/O (possibly with a
deadline), a collective -- and RUNNING otherwise. The client aggregates its threads' waits and
reports each transition: BLOCK(min deadline or None, flags, lvt) or RUNNING(lvt). FLAG_IO says
some waiting thread could be woken by I/O (or by anything outside the protocol).

Advancing. Global virtual time (GVT) only advances while NO participant is RUNNING and no
announced child process is still starting (conservative synchronisation). Then, if any blocked
participant has FLAG_IO, the server first PROBEs those: each client checks from its reader
thread whether any I/O wait is already satisfied (``select(fds, [], [], 0)``) and answers.
This closes the race of a message written just before its sender blocked, which the receiver
has not yet been woken for. If every answer is "still blocked" the server grants the earliest
deadline T: GVT = max(GVT, T), and sends WAKE(T) to every participant whose deadline is T, in
the deterministic order (name, id). T can lie behind GVT: a process woken by data continues
at the data's stamp, not at GVT (docs/design_notes.md, item 2), so it may run and sleep behind
the frontier. Its sleep ends at its own deadline, alone -- granting it GVT instead dragged
its clock forward by however far other processes (a launcher's monitor loop polling while
its workers waited for each other in real time) had pushed GVT, which depended on which
process the OS ran first. Waking only the earliest deadline keeps the order conservative: the
next earliest is granted once those have run and blocked again. A RUNNING message, a
registration or a "not blocked" answer cancels the advance; the next time everybody is
blocked starts anew.

Acknowledged wakes. A wake-class message (WAKE, COLL_DONE, COLL_FAIL) makes the server count
the receiver as RUNNING at once: it will run when it reads the message. Each one carries a
per-participant sequence number, and every state message carries the last one the client has
processed (``ack``). A state message with an older ack was sent before the client saw the wake
and is ignored (the server keeps it RUNNING); after processing a wake, a client that is still
blocked (nothing of its was woken) re-sends its state with the new ack. So the server never
believes a participant blocked while a wake to it is in flight.

Wake-ups. The client's reader thread wakes exactly the waits whose deadline <= the granted
time, through callbacks the shim registered. Every server message carries the GVT
(``Coordinator.gvt_ns()``); a participant blocked on I/O is told each new GVT. A wait ended by
its deadline continues at the granted time; a wait ended by data continues at max(LVT, the
data's stamp) -- not at GVT, which is some other process's granted deadline (see
docs/design_notes.md, item 2).

Data channels. Causality on data is the shim's: a message carries its sender's LVT stamp s and
is received at max(LVT, s). A wait with deadline D that ends by I/O with a message stamped
s >= D must keep the message and wait for D instead (the timeout wins ties): after the
advance to D no message stamped < D can still arrive, so this keeps timeouts exact and runs
reproducible whatever the real-time order of the WAKE and the data. Delivery at max(LVT, s)
is deterministic per single-sender FIFO channel; a channel with several senders that must
deliver in stamp order waits until GVT >= s (a wait with deadline s) before delivering.

Wake-ups inside a process. A thread that wakes another thread of its own process (notify,
set an Event, thread exit for a join) ends the wakee's wait itself (``end_wait(token)`` from
the waker's thread) before it may block; otherwise the process could be reported blocked while
the wake-up is in flight, and GVT could jump past it.

Collectives. A rank's arrival (group_key, seq, rank, world_size, arrival_ns, cost_ns, payload)
blocks its thread, without deadline, until all world_size ranks have arrived; then every rank
gets completion_ns = max(arrival_ns) + max(cost_ns) and all payloads by rank. A member that
exits (EOF) fails the group's pending and future collectives for the others with an error
naming the group, seq and missing ranks.

Child processes. A parent announces a child before starting it (SPAWN ticket); the pending
child counts as RUNNING until it registers with the ticket, is cancelled, its pid is gone, or
a real-time limit passes. Without this GVT could jump while the child is still starting. A
participant registers with start LVT max(GVT, its start LVT); after fork() the child registers
afresh with the parent's LVT.

Deadlock. When every participant is blocked without a deadline (so nothing can advance) for
``deadlock_timeout_s`` of real time -- a process may be waiting for real external I/O -- and a
final probe round still finds everybody blocked, the server reports each participant's state,
sends DEADLOCK to all (their waits raise DeadlockError) and stops with EXIT_DEADLOCK.
The other state in which nothing can advance is a probe round that is never answered (a
probe lost to a client that no longer reads it): the round's probes are sent again every
``REPROBE_AFTER_S`` of real time, and a round still unanswered after ``deadlock_timeout_s``
is reported as a deadlock naming who did not answer -- an emulation never hangs silently.

Un-instrumented waits. A RUNNING participant silent for ``stall_check_s`` is asked to CHECK
(sooner when somebody waits for GVT to advance, with a doubling interval while it stays
silent): its reader thread inspects the program threads not in a coordinated wait -- CPU
clocks, then /proc state and context-switch counts -- and if all sleep it reports BLOCKED with
FLAG_IO|FLAG_STALLED (probed like I/O, re-checking /proc). Its next shim call turns it RUNNING
again. This bounds a missed wait to some real latency instead of a hang. Checks travel on a
second connection (the doorbell), so the reader thread can wait for them at no cost while the
process's waiting threads read the main connection themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from revati.shim.coord.wire import FLAG_IO, FLAG_STALLED

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DEADLOCK = 3

IDLE_CHECK_FACTOR = 20  # stall checks when nobody is blocked: 20x rarer
MAX_CHECK_FACTOR = 64  # the longest interval between checks of one silent participant
PID_CHECK_PERIOD_S = 0.5  # how often announced children's pids are looked up
REPROBE_AFTER_S = 1.0  # real seconds before an unanswered probe round's probes are sent again


@dataclass
class CoreConfig:
    deadlock_timeout_s: float = 10.0
    stall_check_s: float = 0.1
    spawn_timeout_s: float = 600.0  # default real-time limit for an announced child to register
    exit_when_empty: bool = False  # stop once everybody has left (after at least one came)

    def __post_init__(self) -> None:
        if not self.deadlock_timeout_s >= 0:
            raise ValueError(f"deadlock_timeout_s must be >= 0, got {self.deadlock_timeout_s}")
        if not self.stall_check_s > 0:
            raise ValueError(f"stall_check_s must be > 0, got {self.stall_check_s}")
        if not self.spawn_timeout_s > 0:
            raise ValueError(f"spawn_timeout_s must be > 0, got {self.spawn_timeout_s}")

    @property
    def tick_period_s(self) -> float:
        """How often the server should call ``tick`` (timers are checked at this granularity)."""
        return max(0.001, min(self.stall_check_s / 2, 0.05, max(self.deadlock_timeout_s, 0.004) / 4))


@dataclass(eq=False)
class Participant:
    id: int
    name: str
    pid: int
    ppid: int
    lvt_ns: int
    last_msg_s: float
    blocked: bool = False
    deadline_ns: int | None = None
    flags: int = 0
    wakes_sent: int = 0
    last_check_s: float = float("-inf")
    check_interval_s: float | None = None  # None: the base interval; doubles per silent check
    groups: set = field(default_factory=set)  # group keys this participant is a member of

    @property
    def state(self) -> str:
        if not self.blocked:
            return "running"
        return "stalled" if self.flags & FLAG_STALLED else "blocked"


@dataclass
class PendingSpawn:
    ticket: str
    parent_id: int | None
    since_s: float
    timeout_s: float
    pid: int | None = None


@dataclass
class Group:
    world_size: int
    members: dict[int, int] = field(default_factory=dict)  # rank -> participant id
    exited: dict[int, str] = field(default_factory=dict)  # rank -> who exited


@dataclass
class PendingCollective:
    group_key: Any
    seq: int
    world_size: int
    # rank -> (participant id, arrival_ns, cost_ns, payload)
    arrivals: dict[int, tuple[int, int, int, bytes | None]] = field(default_factory=dict)


@dataclass
class Stats:
    messages: int = 0  # received
    messages_out: int = 0
    state_messages: int = 0
    advances: int = 0
    wakes: int = 0
    probe_rounds: int = 0
    probes: int = 0
    collectives_done: int = 0
    collectives_failed: int = 0
    checks: int = 0
    registrations: int = 0
    reprobes: int = 0  # probes sent again to a participant that had not answered (should be 0)


class ProtocolViolation(Exception):
    """A participant's message is well-formed but impossible in its state; drop it."""


class Timekeeper:
    """The decision logic. See Note [Virtual time coordination]."""

    def __init__(self, config: CoreConfig | None = None,
                 pid_alive: Callable[[int], bool] | None = None):
        self.config = config or CoreConfig()
        self._pid_alive = pid_alive or (lambda pid: True)
        self.gvt_ns = 0
        self.participants: dict[int, Participant] = {}
        self.controls: set[int] = set()
        self.spawns: dict[str, PendingSpawn] = {}
        self._used_tickets: set[str] = set()
        self.groups: dict[Any, Group] = {}
        self.collectives: dict[tuple[Any, int], PendingCollective] = {}
        self.stats = Stats()
        self._next_id = 1
        self._running = 0  # RUNNING participants + pending spawns
        self._ever_registered = False
        self._round = 0
        self._round_waiting: set[int] | None = None  # participants a probe round still waits on
        self._round_purpose = ""
        self._round_since_s = 0.0  # real time the current round's probes were (re)sent
        self._round_started_s = 0.0
        self.quiescent_since_s: float | None = None
        self._last_pid_check_s = float("-inf")
        self.stopped: tuple[int, dict | None] | None = None  # (exit status, deadlock report)
        self._out: list[tuple[int, tuple]] = []
        self.log: list[tuple] = []  # decisions, for tests and --verbose: (kind, ...)

    # -- outputs -------------------------------------------------------------------------

    def take(self) -> list[tuple[int, tuple]]:
        out, self._out = self._out, []
        self.stats.messages_out += len(out)
        return out

    @property
    def running_count(self) -> int:
        return self._running

    # -- inputs --------------------------------------------------------------------------

    def register(self, name: str, pid: int, ppid: int, start_lvt_ns: int | None,
                 ticket: str | None, role: str, now_s: float) -> int:
        """A new connection identified itself; returns its participant id."""
        if role not in ("participant", "control"):
            raise ProtocolViolation(f"unknown role {role!r}")
        pid_ = self._next_id
        self._next_id += 1
        if role == "control":
            self.controls.add(pid_)
            self._out.append((pid_, ("welcome", self.gvt_ns, pid_, self.gvt_ns)))
            return pid_
        start = max(self.gvt_ns, start_lvt_ns or 0)
        self.participants[pid_] = Participant(pid_, name, pid, ppid, start, now_s)
        self._running += 1
        self._ever_registered = True
        self.stats.registrations += 1
        if ticket is not None:
            self._used_tickets.add(ticket)
            if self.spawns.pop(ticket, None) is not None:
                self._running -= 1
        self._out.append((pid_, ("welcome", self.gvt_ns, pid_, start)))
        self.log.append(("register", pid_, name, start))
        self._invalidate()
        return pid_

    def message(self, pid: int, msg: tuple, now_s: float) -> None:
        """A decoded message (see wire.C2S) from participant or control connection ``pid``."""
        self.stats.messages += 1
        kind = msg[0]
        if pid in self.controls:
            self._control_message(pid, msg, now_s)
            return
        p = self.participants[pid]
        p.last_msg_s = now_s
        p.check_interval_s = None
        if kind == "state":
            _, ack, blocked, deadline, flags, lvt = msg
            self.stats.state_messages += 1
            self._apply_state(p, ack, blocked, deadline, flags, lvt)
        elif kind == "coll":
            (_, ack, key, seq, rank, world, arrival, cost, payload,
             blocked, deadline, flags, lvt) = msg
            # The state first, then the arrival: an arrival that completes the collective
            # wakes the sender, whatever state it reported. See Note [Virtual time coordination].
            self._apply_state(p, ack, blocked, deadline, flags, lvt)
            self._arrive(p, key, seq, rank, world, arrival, cost, payload)
        elif kind == "probe_reply":
            _, round_, ack, still_blocked, lvt = msg
            p.lvt_ns = lvt
            self._probe_reply(p, round_, ack, still_blocked, now_s)
        elif kind == "join":
            _, key, rank, world = msg
            self._join(p, key, rank, world)
        elif kind in ("spawn", "spawn_pid", "spawn_cancel"):
            self._spawn_message(pid, msg, now_s)
        elif kind == "bye":
            self.disconnect(pid, now_s)
        else:
            raise ProtocolViolation(f"unexpected {kind!r}")

    def disconnect(self, pid: int, now_s: float) -> None:
        """The connection closed (exit, crash, or bye)."""
        if pid in self.controls:
            self.controls.discard(pid)
            return
        p = self.participants.pop(pid, None)
        if p is None:
            return
        if not p.blocked:
            self._running -= 1
        if self._round_waiting is not None:
            self._round_waiting.discard(pid)
        self.log.append(("exit", pid, p.name))
        for key in sorted(p.groups, key=repr):
            group = self.groups[key]
            for rank, member in list(group.members.items()):
                if member == pid:
                    group.exited[rank] = f"{p.name} (pid {p.pid})"
            for ckey in [k for k in self.collectives if k[0] == key]:
                pc = self.collectives[ckey]
                for rank in [r for r, a in pc.arrivals.items() if a[0] == pid]:
                    del pc.arrivals[rank]
                self._fail_collective(pc, self._exited_reason(group, pc))
        self._invalidate()
        if (self.config.exit_when_empty and self._ever_registered and not self.participants
                and not self.spawns):
            self.stopped = (EXIT_OK, None)

    def tick(self, now_s: float) -> None:
        """Real time passed: spawn expiry, stall checks, the deadlock timer."""
        if self.stopped:
            return
        check_pids = now_s - self._last_pid_check_s >= PID_CHECK_PERIOD_S
        if check_pids:
            self._last_pid_check_s = now_s
        for ticket, spawn in list(self.spawns.items()):
            gone = check_pids and spawn.pid is not None and not self._pid_alive(spawn.pid)
            if gone or now_s - spawn.since_s >= spawn.timeout_s:
                del self.spawns[ticket]
                self._running -= 1
                self.log.append(("spawn_expired", ticket, "exited" if gone else "timeout"))
                self._invalidate()
        self._stall_checks(now_s)
        if self._round_waiting is not None:
            self._watch_round(now_s)
            if self.stopped:
                return
        if (self.quiescent_since_s is not None and self._round_waiting is None
                and now_s - self.quiescent_since_s >= self.config.deadlock_timeout_s):
            probe = [p for p in self.participants.values() if p.flags & FLAG_IO]
            if probe:
                self._start_round(probe, "deadlock", now_s)
            else:
                self._declare_deadlock()

    def _stall_checks(self, now_s: float) -> None:
        # See Note [Virtual time coordination], "Un-instrumented waits". A silent RUNNING
        # participant matters at once when somebody waits for GVT to advance (a deadline, or
        # I/O that a probe could settle); a participant blocked without either -- in a
        # collective, say -- waits for the others to arrive, not for time. Otherwise only the
        # silent one's own threads could be waiting, and a slower check suffices. Each check
        # that finds it still running (it stays silent) doubles its interval, so a long
        # computation costs a few checks, not one per period.
        stall = self.config.stall_check_s
        participants = self.participants.values()
        urgent = any(p.blocked and (p.deadline_ns is not None or p.flags & FLAG_IO)
                     for p in participants)
        base = stall if urgent else stall * IDLE_CHECK_FACTOR
        for p in participants:
            if p.blocked:
                continue
            interval = p.check_interval_s or base
            if now_s - max(p.last_msg_s, p.last_check_s) >= interval:
                p.last_check_s = now_s
                p.check_interval_s = min(2 * interval, stall * MAX_CHECK_FACTOR)
                self.stats.checks += 1
                self._out.append((p.id, ("check", self.gvt_ns)))

    def settle(self, now_s: float) -> None:
        """Decide: start a probe round or advance GVT, when nobody is running."""
        if (self.stopped or self._running or self._round_waiting is not None
                or self.quiescent_since_s is not None or not self.participants):
            return
        probe = [p for p in self.participants.values() if p.flags & FLAG_IO]
        if probe:
            self._start_round(probe, "advance", now_s)
        else:
            self._advance(now_s)

    # -- internals -----------------------------------------------------------------------

    def _invalidate(self) -> None:
        # Any change to who is blocked cancels a probe round and the deadlock timer.
        self._round_waiting = None
        self.quiescent_since_s = None

    def _set_running(self, p: Participant) -> None:
        if p.blocked:
            p.blocked = False
            p.deadline_ns = None
            p.flags = 0
            self._running += 1
            self._invalidate()

    def _apply_state(self, p: Participant, ack: int, blocked: bool, deadline: int | None,
                     flags: int, lvt: int) -> None:
        p.lvt_ns = lvt
        if ack > p.wakes_sent:
            raise ProtocolViolation(f"{p.name} acknowledged wake {ack} of {p.wakes_sent}")
        if ack < p.wakes_sent:
            # Sent before it saw our latest wake: it is RUNNING until it re-reports.
            # See Note [Virtual time coordination], "Acknowledged wakes".
            return
        if not blocked:
            self._set_running(p)
            return
        if p.blocked and p.deadline_ns == deadline and p.flags == flags:
            return
        if not p.blocked:
            self._running -= 1
        p.blocked = True
        p.deadline_ns = deadline
        p.flags = flags
        self._invalidate()

    def _send_wake(self, p: Participant, msg_tail: tuple, kind: str) -> None:
        p.wakes_sent += 1
        self._out.append((p.id, (kind, self.gvt_ns, p.wakes_sent, *msg_tail)))
        self._set_running(p)

    def _start_round(self, probe: list[Participant], purpose: str, now_s: float) -> None:
        self._round += 1
        self._round_waiting = {p.id for p in probe}
        self._round_purpose = purpose
        self._round_since_s = self._round_started_s = now_s
        self.stats.probe_rounds += 1
        self.stats.probes += len(probe)
        for p in probe:
            self._out.append((p.id, ("probe", self.gvt_ns, self._round)))

    def _watch_round(self, now_s: float) -> None:
        # See Note [Virtual time coordination], "Deadlock": an unanswered round is the one
        # state the deadlock timer alone would never see (nobody is quiescent, nobody runs).
        waiting = self._round_waiting
        timeout = self.config.deadlock_timeout_s
        if timeout > 0 and now_s - self._round_started_s >= max(timeout, REPROBE_AFTER_S):
            names = sorted(self.participants[i].name for i in waiting if i in self.participants)
            self.log.append(("unanswered_round", self._round, tuple(names)))
            self._declare_deadlock(unanswered=names)
            return
        if now_s - self._round_since_s >= REPROBE_AFTER_S:
            self._round_since_s = now_s
            for pid in sorted(waiting):
                if pid in self.participants:
                    self.stats.reprobes += 1
                    self._out.append((pid, ("probe", self.gvt_ns, self._round)))
            self.log.append(("reprobe", self._round, tuple(sorted(waiting))))

    def _probe_reply(self, p: Participant, round_: int, ack: int, still_blocked: bool,
                     now_s: float) -> None:
        if not still_blocked:
            # Whatever round it answers: the client now counts itself RUNNING and sends nothing
            # more until it blocks again, so the server must agree. (Ignoring a late "not
            # blocked" from a cancelled round left a stalled participant blocked here, the
            # next round's probe unread by its now-cold reader, and the emulation hung.)
            self._set_running(p)
            return
        if self._round_waiting is None or round_ != self._round or ack != p.wakes_sent:
            return  # a cancelled round's answer
        self._round_waiting.discard(p.id)
        if self._round_waiting:
            return
        self._round_waiting = None
        if self._round_purpose == "deadlock":
            self._declare_deadlock()
        else:
            self._advance(now_s)

    def _advance(self, now_s: float) -> None:
        # Only called when nobody runs and every probe said "still blocked".
        # See Note [Virtual time coordination], "Advancing".
        waiting = [(p.deadline_ns, p.name, p.id) for p in self.participants.values()
                   if p.deadline_ns is not None]
        if not waiting:
            self.quiescent_since_s = now_s
            self.log.append(("quiescent", self.gvt_ns))
            return
        earliest = min(waiting)[0]
        old = self.gvt_ns
        self.gvt_ns = gvt = max(old, earliest)
        self.stats.advances += 1
        woken = sorted(w for w in waiting if w[0] == earliest)
        self.log.append(("advance", gvt, tuple(w[1] for w in woken)))
        for _, _, pid in woken:
            self.stats.wakes += 1
            self._send_wake(self.participants[pid], (earliest,), "wake")
        if gvt != old:
            for p in self.participants.values():
                if p.blocked and p.flags & FLAG_IO:
                    self._out.append((p.id, ("gvt", gvt)))

    def _declare_deadlock(self, unanswered: list[str] | None = None) -> None:
        report = self.report()
        if unanswered:
            report["unanswered_probe"] = unanswered
        self.log.append(("deadlock", self.gvt_ns))
        for p in self.participants.values():
            self._out.append((p.id, ("deadlock", self.gvt_ns, report)))
        self.stopped = (EXIT_DEADLOCK, report)

    def report(self) -> dict:
        """Everybody's state as plain data (JSON-ready): the deadlock report."""
        waiting_in: dict[int, list[str]] = {}
        pending = []
        for (key, seq), pc in self.collectives.items():
            missing = sorted(set(range(pc.world_size)) - set(pc.arrivals))
            pending.append({"group": repr(key), "seq": seq, "world_size": pc.world_size,
                            "arrived_ranks": sorted(pc.arrivals), "missing_ranks": missing})
            for rank, (pid, *_rest) in pc.arrivals.items():
                waiting_in.setdefault(pid, []).append(
                    f"collective {key!r} #{seq} rank {rank} (missing ranks {missing})")
        rows = []
        for p in self.participants.values():
            waits = list(waiting_in.get(p.id, []))
            if p.blocked and p.flags & FLAG_STALLED:
                waits.append("threads asleep outside coordinated waits")
            elif p.blocked and p.flags & FLAG_IO:
                waits.append("I/O")
            if p.deadline_ns is not None:
                waits.append(f"deadline {p.deadline_ns} ns")
            rows.append({"id": p.id, "name": p.name, "pid": p.pid, "ppid": p.ppid,
                         "state": p.state, "lvt_ns": p.lvt_ns, "deadline_ns": p.deadline_ns,
                         "waits_on": waits})
        spawns = [{"ticket": s.ticket, "pid": s.pid} for s in self.spawns.values()]
        probe_round = None
        if self._round_waiting is not None:
            probe_round = {"round": self._round, "purpose": self._round_purpose,
                           "waiting_on": sorted(self.participants[i].name for i in self._round_waiting
                                                if i in self.participants)}
        return {"gvt_ns": self.gvt_ns, "participants": rows, "pending_collectives": pending,
                "pending_spawns": spawns, "probe_round": probe_round,
                "running": self._running}

    # collectives

    def _join(self, p: Participant, key: Any, rank: int, world: int) -> None:
        group = self._group(key, world)
        if group is None or not 0 <= rank < world:
            raise ProtocolViolation(f"{p.name}: bad membership rank {rank} of {world} in {key!r}")
        group.members[rank] = p.id
        group.exited.pop(rank, None)
        p.groups.add(key)

    def _group(self, key: Any, world: int) -> Group | None:
        group = self.groups.get(key)
        if group is None:
            try:
                hash(key)
            except TypeError:
                return None
            group = self.groups[key] = Group(world)
        return group if group.world_size == world else None

    def _arrive(self, p: Participant, key: Any, seq: int, rank: int, world: int, arrival: int,
                cost: int, payload: bytes | None) -> None:
        group = self._group(key, world) if world >= 1 else None
        if group is None or not 0 <= rank < world:
            known = self.groups.get(key)
            why = (f"rank {rank} of world size {world} does not fit group of size "
                   f"{known.world_size if known else '?'}")
            self._fail_one(p, key, seq, rank, [], why)
            return
        group.members[rank] = p.id
        p.groups.add(key)
        pc = self.collectives.get((key, seq))
        if pc is None:
            pc = self.collectives[(key, seq)] = PendingCollective(key, seq, world)
        if group.exited:
            pc.arrivals[rank] = (p.id, arrival, cost, payload)
            self._fail_collective(pc, self._exited_reason(group, pc))
            return
        if rank in pc.arrivals:
            why = f"rank {rank} arrived twice"
            self._fail_collective(pc, why)
            self._fail_one(p, key, seq, rank, [], why)
            return
        pc.arrivals[rank] = (p.id, arrival, cost, payload)
        if len(pc.arrivals) < world:
            return
        del self.collectives[(key, seq)]
        arrivals = pc.arrivals
        completion = (max(a[1] for a in arrivals.values())
                      + max(a[2] for a in arrivals.values()))
        payloads = [arrivals[r][3] for r in range(world)]
        self.stats.collectives_done += 1
        for r in range(world):
            q = self.participants[arrivals[r][0]]
            self._send_wake(q, (key, seq, r, completion, payloads), "coll_done")

    @staticmethod
    def _exited_reason(group: Group, pc: PendingCollective) -> str:
        who = ", ".join(f"rank {r}: {w}" for r, w in sorted(group.exited.items()))
        return f"a member exited ({who})"

    def _fail_collective(self, pc: PendingCollective, reason: str) -> None:
        self.collectives.pop((pc.group_key, pc.seq), None)
        missing = sorted(set(range(pc.world_size)) - set(pc.arrivals))
        self.stats.collectives_failed += 1
        self.log.append(("coll_fail", repr(pc.group_key), pc.seq, tuple(missing)))
        for rank, (pid, *_rest) in sorted(pc.arrivals.items()):
            q = self.participants.get(pid)
            if q is not None:
                self._send_wake(q, (pc.group_key, pc.seq, rank, missing, reason), "coll_fail")

    def _fail_one(self, p: Participant, key: Any, seq: int, rank: int, missing: list[int],
                  reason: str) -> None:
        self.stats.collectives_failed += 1
        self._send_wake(p, (key, seq, rank, missing, reason), "coll_fail")

    # child processes

    def _control_message(self, pid: int, msg: tuple, now_s: float) -> None:
        if msg[0] in ("spawn", "spawn_pid", "spawn_cancel"):
            self._spawn_message(None, msg, now_s)
        elif msg[0] == "bye":
            self.disconnect(pid, now_s)
        else:
            raise ProtocolViolation(f"a control connection cannot send {msg[0]!r}")

    def expect_child(self, ticket: str, timeout_s: float, now_s: float,
                     parent: int | None = None) -> None:
        """A child will register with ``ticket``: count it RUNNING until then."""
        if ticket in self.spawns or ticket in self._used_tickets:
            return  # the child may have registered before its parent's message arrived
        timeout = timeout_s if timeout_s > 0 else self.config.spawn_timeout_s
        self.spawns[ticket] = PendingSpawn(ticket, parent, now_s, timeout)
        self._running += 1
        self._invalidate()

    def _spawn_message(self, parent: int | None, msg: tuple, now_s: float) -> None:
        kind, ticket = msg[0], msg[1]
        if kind == "spawn":
            self.expect_child(ticket, msg[2], now_s, parent)
        elif kind == "spawn_pid":
            spawn = self.spawns.get(ticket)
            if spawn is not None:
                spawn.pid = msg[2]
        elif kind == "spawn_cancel":
            if self.spawns.pop(ticket, None) is not None:
                self._running -= 1
                self._invalidate()


def format_report(report: dict) -> str:
    """The deadlock report as lines for a terminal."""
    lines = [f"deadlock at virtual time {report['gvt_ns']} ns: every process is blocked and "
             f"nothing can wake any of them"]
    for row in report["participants"]:
        waits = "; ".join(row["waits_on"]) or "nothing the timekeeper knows of"
        lines.append(f"  {row['name']} (pid {row['pid']}): {row['state']} at "
                     f"{row['lvt_ns']} ns, waiting on {waits}")
    for pc in report["pending_collectives"]:
        lines.append(f"  collective {pc['group']} #{pc['seq']}: arrived {pc['arrived_ranks']}, "
                     f"missing {pc['missing_ranks']}")
    for sp in report["pending_spawns"]:
        lines.append(f"  child {sp['ticket']} (pid {sp['pid']}) announced but not registered")
    if report.get("unanswered_probe"):
        lines.append(f"  no answer to the timekeeper's probe from: {', '.join(report['unanswered_probe'])}")
    return "\n".join(lines)
