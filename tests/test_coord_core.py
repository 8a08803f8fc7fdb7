"""The timekeeper's decision logic, driven deterministically (no sockets, no real clock)."""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revati.shim.coord.core import EXIT_DEADLOCK, CoreConfig, ProtocolViolation, Timekeeper
from revati.shim.coord.wire import FLAG_IO, FLAG_STALLED


def make(**kw) -> Timekeeper:
    return Timekeeper(CoreConfig(**kw))


def reg(core: Timekeeper, name: str, start_lvt=None, ticket=None, now=0.0) -> int:
    pid = core.register(name, 1000, 1, start_lvt, ticket, "participant", now)
    core.take()
    return pid


def block(core, pid, deadline=None, flags=0, ack=None, lvt=0, now=0.0):
    ack = core.participants[pid].wakes_sent if ack is None else ack
    core.message(pid, ("state", ack, True, deadline, flags, lvt), now)


def run(core, pid, ack=None, lvt=0, now=0.0):
    ack = core.participants[pid].wakes_sent if ack is None else ack
    core.message(pid, ("state", ack, False, None, 0, lvt), now)


def settle(core, now=0.0):
    core.settle(now)
    return core.take()


def kinds(out):
    return [(pid, msg[0]) for pid, msg in out]


def coll(core, pid, key, seq, rank, world, arrival, cost, payload=None, blocked=True, now=0.0):
    ack = core.participants[pid].wakes_sent
    core.message(pid, ("coll", ack, key, seq, rank, world, arrival, cost, payload, blocked, None,
                       0, arrival), now)


def test_config_rejects_bad_numbers():
    with pytest.raises(ValueError):
        CoreConfig(deadlock_timeout_s=-1)
    with pytest.raises(ValueError):
        CoreConfig(stall_check_s=0)


def test_advances_only_when_nobody_runs():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, deadline=100)
    assert settle(core) == []  # b still running
    block(core, b, deadline=200)
    out = settle(core)
    assert out == [(a, ("wake", 100, 1, 100))]
    assert core.gvt_ns == 100
    assert core.running_count == 1  # a counts as running from the moment it is woken
    block(core, a, deadline=300)
    assert settle(core) == [(b, ("wake", 200, 1, 200))]


def test_deadline_behind_gvt_ends_at_itself_and_gvt_never_decreases():
    # A process that ran behind the frontier (woken by data at its stamp) sleeps until 400 while
    # GVT is 500: the sleep ends at 400, not at 500 -- other processes' progress must not move
    # its clock (see Note [Virtual time coordination], "Advancing").
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, deadline=500)
    block(core, b, deadline=900)
    settle(core)
    assert core.gvt_ns == 500
    block(core, a, deadline=400)  # a stale LVT: the deadline is already past
    assert settle(core) == [(a, ("wake", 500, 2, 400))]
    assert core.gvt_ns == 500


def test_only_the_earliest_deadline_is_woken_so_order_stays_conservative():
    # a and c both lie behind GVT: a (300) runs first, alone; c (450) only once a blocked again,
    # so nothing a sends after 300 can reach c after c's timeout already fired.
    core = make()
    a, b, c = reg(core, "a"), reg(core, "b"), reg(core, "c")
    block(core, a, deadline=500)
    block(core, b, deadline=900)
    block(core, c, deadline=950)
    settle(core)
    block(core, a, deadline=300)
    run(core, c)
    block(core, c, deadline=450)
    assert settle(core) == [(a, ("wake", 500, 2, 300))]
    block(core, a, deadline=700)
    assert settle(core) == [(c, ("wake", 500, 1, 450))]
    block(core, c, deadline=800)
    assert settle(core) == [(a, ("wake", 700, 3, 700))]


def test_ties_wake_everybody_in_deadline_name_id_order():
    core = make()
    ids = {name: reg(core, name) for name in ["c", "a", "b", "a"]}  # two called "a"
    for pid in list(core.participants):
        block(core, pid, deadline=100)
    out = settle(core)
    woken = [core.participants[pid].name for pid, _ in out]
    assert woken == ["a", "a", "b", "c"]
    a_ids = [pid for pid, _ in out[:2]]
    assert a_ids == sorted(a_ids)
    assert ids["c"] == out[-1][0]


def test_io_waiters_are_probed_and_all_blocked_answers_advance():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, deadline=None, flags=FLAG_IO)
    block(core, b, deadline=50)
    out = settle(core)
    assert out == [(a, ("probe", 0, 1))]
    core.message(a, ("probe_reply", 1, 0, True, 7), 0.0)
    out = settle(core)
    assert out == [(b, ("wake", 50, 1, 50)), (a, ("gvt", 50))]


def test_probe_answer_not_blocked_cancels_the_advance():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, flags=FLAG_IO)
    block(core, b, deadline=50)
    settle(core)
    core.message(a, ("probe_reply", 1, 0, False, 0), 0.0)
    assert settle(core) == []
    assert core.gvt_ns == 0
    assert core.participants[a].state == "running"


def test_running_message_cancels_a_probe_round_and_its_late_answers_are_ignored():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, flags=FLAG_IO)
    block(core, b, deadline=50)
    settle(core)  # round 1
    run(core, b)
    core.message(a, ("probe_reply", 1, 0, True, 0), 0.0)
    assert settle(core) == []
    assert core.gvt_ns == 0
    block(core, b, deadline=60)
    assert settle(core) == [(a, ("probe", 0, 2))]
    core.message(a, ("probe_reply", 1, 0, True, 0), 0.0)  # still the old round
    assert settle(core) == []
    core.message(a, ("probe_reply", 2, 0, True, 0), 0.0)
    assert [m for _, m in settle(core)][0] == ("wake", 60, 1, 60)


def test_a_late_not_blocked_answer_from_a_cancelled_round_still_counts_as_running():
    # The client that answered "not blocked" counts itself RUNNING and sends nothing more until
    # it blocks again; a server that kept it blocked would probe it in vain (a hang seen at
    # vLLM TP=2 shutdown: a stalled resource tracker answered round 1 after round 2 began).
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, flags=FLAG_IO | FLAG_STALLED)
    block(core, b, deadline=50)
    settle(core)  # round 1 probes a
    run(core, b)
    block(core, b, deadline=60)
    assert settle(core) == [(a, ("probe", 0, 2))]
    core.message(a, ("probe_reply", 1, 0, False, 0), 0.0)  # round 1's answer arrives now
    assert core.participants[a].state == "running"
    assert settle(core) == []  # nothing advances while a runs
    block(core, a, flags=FLAG_IO | FLAG_STALLED)
    assert settle(core) == [(a, ("probe", 0, 3))]


def test_an_unanswered_probe_is_sent_again_then_reported_as_a_deadlock():
    # Nothing runs and nobody is quiescent while a probe round waits: without a watchdog a
    # lost probe would hang the emulation with the timekeeper idle (seen: a ZeroMQ ping-pong).
    core = make(deadlock_timeout_s=5.0)
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, flags=FLAG_IO | FLAG_STALLED)
    block(core, b, deadline=50)
    assert settle(core) == [(a, ("probe", 0, 1))]
    core.tick(0.5)
    assert core.take() == []  # not yet
    core.tick(1.0)
    assert core.take() == [(a, ("probe", 0, 1))]  # the same round, asked again
    assert core.stats.reprobes == 1
    core.tick(4.9)
    assert core.stopped is None
    assert core.take() == [(a, ("probe", 0, 1))]
    core.tick(5.0)
    assert core.stopped is not None and core.stopped[0] == EXIT_DEADLOCK
    report = core.stopped[1]
    assert report["unanswered_probe"] == ["a"]
    assert report["probe_round"]["waiting_on"] == ["a"]
    assert {m[0] for _, m in core.take()} == {"deadlock"}


def test_an_answer_to_a_probe_sent_again_still_ends_the_round():
    core = make(deadlock_timeout_s=5.0)
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, flags=FLAG_IO)
    block(core, b, deadline=50)
    settle(core)
    core.tick(1.0)
    core.take()
    core.message(a, ("probe_reply", 1, 0, True, 0), 1.1)
    core.message(a, ("probe_reply", 1, 0, True, 0), 1.1)  # the answer to the second probe
    assert core.take() == [(b, ("wake", 50, 1, 50)), (a, ("gvt", 50))]
    assert core.stopped is None


def test_state_sent_before_seeing_a_wake_is_ignored_until_reacknowledged():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, deadline=100)
    block(core, b, deadline=500)
    settle(core)  # wakes a (seq 1)
    # a's thread had ended its wait by I/O and blocked again before reading the wake:
    block(core, a, deadline=700, ack=0)
    assert settle(core) == []  # a is RUNNING as far as the timekeeper knows
    block(core, a, deadline=700, ack=1)  # after processing the wake it re-reports
    assert settle(core) == [(b, ("wake", 500, 1, 500))]


def test_acknowledging_an_unsent_wake_is_a_protocol_violation():
    core = make()
    a = reg(core, "a")
    with pytest.raises(ProtocolViolation):
        block(core, a, deadline=1, ack=3)


def test_registration_starts_at_gvt_or_later_and_cancels_an_advance():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, deadline=100)
    block(core, b, deadline=900)
    settle(core)
    c = core.register("c", 1, 1, 20, None, "participant", 0.0)
    assert core.take() == [(c, ("welcome", 100, c, 100))]
    d = core.register("d", 1, 1, 5000, None, "participant", 0.0)
    assert core.take() == [(d, ("welcome", 100, d, 5000))]


def test_announced_child_holds_gvt_until_it_registers():
    core = make()
    a = reg(core, "a")
    core.message(a, ("spawn", "t1", 0.0), 0.0)
    block(core, a, deadline=100)
    assert settle(core) == []
    child = reg(core, "child", ticket="t1")
    block(core, child, deadline=300)
    assert settle(core) == [(a, ("wake", 100, 1, 100))]
    core.message(a, ("spawn", "t1", 0.0), 0.0)  # late duplicate: the child already came
    assert core.spawns == {}


def test_announced_child_expires_when_its_pid_is_gone_or_after_the_timeout():
    alive = {42: True}
    core = Timekeeper(CoreConfig(spawn_timeout_s=5), pid_alive=lambda pid: alive.get(pid, False))
    a = reg(core, "a")
    core.message(a, ("spawn", "t1", 0.0), 0.0)
    core.message(a, ("spawn_pid", "t1", 42), 0.0)
    core.message(a, ("spawn", "t2", 0.0), 0.0)
    block(core, a, deadline=100)
    core.tick(1.0)
    assert settle(core, 1.0) == []
    alive[42] = False
    core.tick(1.2)
    assert 42 in [s.pid for s in core.spawns.values()]  # pids are looked up every 0.5 s
    core.tick(2.0)
    assert settle(core, 2.0) == []  # t2 (no pid) still pending
    core.tick(5.5)
    assert settle(core, 5.5)[-1] == (a, ("wake", 100, 1, 100))
    assert ("spawn_expired", "t1", "exited") in core.log
    assert ("spawn_expired", "t2", "timeout") in core.log


def test_collective_completes_at_max_arrival_plus_max_cost_for_every_rank():
    core = make()
    ids = [reg(core, f"w{r}") for r in range(3)]
    coll(core, ids[0], "tp", 0, 0, 3, 1000, 10, b"x")
    coll(core, ids[2], "tp", 0, 2, 3, 3000, 30, b"z")
    assert settle(core) == []  # rank 1 still running
    coll(core, ids[1], "tp", 0, 1, 3, 2000, 20, None)
    out = core.take()
    assert out == [(ids[r], ("coll_done", 0, 1, "tp", 0, r, 3030, [b"x", None, b"z"]))
                   for r in range(3)]
    assert core.running_count == 3
    assert core.collectives == {}


def test_collective_arrival_that_completes_wakes_the_sender_whatever_state_it_sent():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    coll(core, a, "g", 0, 0, 2, 10, 1)
    coll(core, b, "g", 0, 1, 2, 20, 1)
    core.take()
    assert core.participants[b].state == "running"
    block(core, a, deadline=5)
    block(core, b, deadline=9)
    assert [m[0] for _, m in settle(core)] == ["wake"]


def test_collective_shape_mismatch_and_duplicate_rank_fail_cleanly():
    core = make()
    a, b = reg(core, "a"), reg(core, "b")
    coll(core, a, "g", 0, 0, 2, 10, 1)
    coll(core, b, "g", 0, 1, 4, 10, 1)  # wrong world size
    out = core.take()
    assert kinds(out) == [(b, "coll_fail")]
    assert "does not fit" in out[0][1][7]
    coll(core, b, "g", 0, 0, 2, 10, 1)  # rank 0 again
    out = core.take()
    assert kinds(out) == [(a, "coll_fail"), (b, "coll_fail")]
    assert all("twice" in msg[7] for _, msg in out)
    assert core.collectives == {}


def test_exit_mid_collective_fails_the_others_naming_group_seq_and_missing_rank():
    core = make()
    ids = [reg(core, f"w{r}") for r in range(3)]
    core.message(ids[2], ("join", "tp", 2, 3), 0.0)
    coll(core, ids[0], "tp", 7, 0, 3, 10, 1)
    coll(core, ids[1], "tp", 7, 1, 3, 10, 1)
    core.disconnect(ids[2], 0.0)
    out = core.take()
    assert kinds(out) == [(ids[0], "coll_fail"), (ids[1], "coll_fail")]
    _, _, _, key, seq, rank, missing, reason = out[0][1]
    assert (key, seq, rank, missing) == ("tp", 7, 0, [2])
    assert "w2" in reason
    coll(core, ids[0], "tp", 8, 0, 3, 10, 1)  # the group stays broken
    assert kinds(core.take()) == [(ids[0], "coll_fail")]


def test_member_that_arrived_then_exits_fails_the_collective_for_the_rest():
    core = make()
    ids = [reg(core, f"w{r}") for r in range(3)]
    coll(core, ids[0], "tp", 0, 0, 3, 10, 1)
    coll(core, ids[1], "tp", 0, 1, 3, 10, 1)
    core.disconnect(ids[1], 0.0)
    out = core.take()
    assert kinds(out) == [(ids[0], "coll_fail")]
    assert out[0][1][6] == [1, 2]


def test_deadlock_after_the_timeout_reports_everybody_and_stops():
    core = make(deadlock_timeout_s=5)
    a, b = reg(core, "a"), reg(core, "b")
    coll(core, a, "g", 0, 0, 2, 10, 1)
    block(core, b)
    assert settle(core, 1.0) == []
    assert core.quiescent_since_s == 1.0
    core.tick(5.9)
    assert core.take() == [] and core.stopped is None
    core.tick(6.0)
    out = core.take()
    assert kinds(out) == [(a, "deadlock"), (b, "deadlock")]
    status, report = core.stopped
    assert status == EXIT_DEADLOCK
    names = {row["name"]: row for row in report["participants"]}
    assert set(names) == {"a", "b"}
    assert names["a"]["state"] == "blocked"
    assert any("collective 'g' #0" in w for w in names["a"]["waits_on"])
    assert report["pending_collectives"][0]["missing_ranks"] == [1]


def test_deadlock_with_io_waiters_needs_a_final_probe_and_io_can_save_it():
    core = make(deadlock_timeout_s=2)
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a, flags=FLAG_IO)
    block(core, b)
    assert kinds(settle(core)) == [(a, "probe")]
    core.message(a, ("probe_reply", 1, 0, True, 0), 0.0)
    assert settle(core) == []
    core.tick(2.5)
    assert kinds(core.take()) == [(a, "probe")]
    core.message(a, ("probe_reply", 2, 0, False, 0), 2.6)  # data arrived after all
    assert core.stopped is None
    block(core, a, flags=FLAG_IO, now=3.0)
    assert kinds(settle(core, 3.0)) == [(a, "probe")]
    core.message(a, ("probe_reply", 3, 0, True, 0), 3.0)
    settle(core, 3.0)
    core.tick(5.1)
    core.message(a, ("probe_reply", 4, 0, True, 0), 5.1)
    assert core.stopped is not None and core.stopped[0] == EXIT_DEADLOCK


def test_any_change_resets_the_deadlock_timer():
    core = make(deadlock_timeout_s=2)
    a, b = reg(core, "a"), reg(core, "b")
    block(core, a)
    block(core, b)
    settle(core, 0.0)
    run(core, b, now=1.5)
    block(core, b, now=1.6)
    settle(core, 1.6)
    core.tick(2.5)
    assert core.stopped is None
    core.tick(3.6)
    assert core.stopped is not None


def test_silent_running_participants_get_stall_checks_with_backoff():
    core = make(stall_check_s=0.05)
    a, b = reg(core, "a"), reg(core, "b")
    block(core, b, deadline=10)
    core.tick(0.04)
    assert core.take() == []
    core.tick(0.06)
    assert core.take() == [(a, ("check", 0))]
    core.tick(0.12)
    assert core.take() == []  # the next one waits twice as long
    core.tick(0.17)
    assert core.take() == [(a, ("check", 0))]
    core.tick(0.30)
    assert core.take() == []
    core.tick(0.38)
    assert core.take() == [(a, ("check", 0))]
    run(core, a, now=0.40)  # a message resets the interval
    core.tick(0.46)
    assert core.take() == [(a, ("check", 0))]
    # a stalled participant is probed like one waiting on I/O
    block(core, a, flags=FLAG_IO | FLAG_STALLED, now=0.47)
    assert kinds(settle(core, 0.47)) == [(a, "probe")]
    assert core.report()["participants"][0]["state"] == "stalled"


def test_stall_checks_are_rare_while_nobody_waits_for_time():
    core = make(stall_check_s=0.05)
    a, b = reg(core, "a"), reg(core, "b")
    coll(core, b, "g", 0, 1, 2, 0, 0)  # waits for a's arrival, not for GVT
    core.tick(0.9)
    assert core.take() == []
    core.tick(1.0)
    assert core.take() == [(a, ("check", 0))]


def test_exit_when_empty_stops_after_the_last_participant_left():
    core = make(exit_when_empty=True)
    a = reg(core, "a")
    core.disconnect(a, 0.0)
    assert core.stopped == (0, None)


def test_control_connections_announce_children_but_never_count_as_participants():
    core = make()
    ctl = core.register("launcher", 1, 1, None, None, "control", 0.0)
    core.message(ctl, ("spawn", "root", 0.0), 0.0)
    core.take()
    assert core.participants == {} and core.running_count == 1
    with pytest.raises(ProtocolViolation):
        core.message(ctl, ("state", 0, True, None, 0, 0), 0.0)
    reg(core, "root", ticket="root")
    assert core.running_count == 1


# -- model-based property: the decisions do not depend on message interleaving -------------


class _SimClient:
    """A protocol-following single-thread process: sleeps, computes, and all-reduces."""

    def __init__(self, name: str, rank: int, world: int, script: list, io: bool):
        self.name, self.rank, self.world, self.script, self.io = name, rank, world, script, io
        self.pc = 0
        self.lvt = 0
        self.ack = 0
        self.waiting: tuple | None = None
        self.coll_seq = 0
        self.log: list = []
        self.done = False

    def run(self) -> list[tuple]:
        sends = []
        while self.waiting is None and self.pc < len(self.script):
            op, arg = self.script[self.pc]
            self.pc += 1
            if op == "compute":
                self.lvt += arg
            elif op == "sleep":
                deadline = self.lvt + arg
                self.waiting = ("sleep", deadline)
                sends.append(("state", self.ack, True, deadline, FLAG_IO if self.io else 0,
                              self.lvt))
            else:
                self.waiting = ("coll", self.coll_seq)
                sends.append(("coll", self.ack, "world", self.coll_seq, self.rank, self.world,
                              self.lvt, arg, None, True, None, 0, self.lvt))
                self.coll_seq += 1
        if self.waiting is None and not self.done:
            self.done = True
            sends.append(("bye",))
        return sends

    def receive(self, msg: tuple) -> list[tuple]:
        kind = msg[0]
        if kind == "wake":
            self.ack = msg[2]
            if self.waiting and self.waiting[0] == "sleep" and self.waiting[1] <= msg[3]:
                self.lvt = max(self.lvt, msg[3])
                self.log.append(("slept", self.lvt))
                self.waiting = None
                return self.run()
            return [("state", self.ack, True, self.waiting[1], 0, self.lvt)]
        if kind == "coll_done":
            self.ack = msg[2]
            self.lvt = msg[6]
            self.log.append(("coll", msg[4], self.lvt))
            self.waiting = None
            return self.run()
        if kind == "probe":
            return [("probe_reply", msg[2], self.ack, True, self.lvt)]
        return []


def _simulate(scripts: list[list], io: list[bool], rng: random.Random | None) -> tuple:
    core = make()
    world = len(scripts)
    for r in range(world):
        core.expect_child(f"t{r}", 0.0, 0.0)
    clients = {}
    to_server: dict[int, deque] = {}
    to_client: dict[int, deque] = {}
    for r, script in enumerate(scripts):
        pid = core.register(f"p{r}", 1, 1, 0, f"t{r}", "participant", 0.0)
        clients[pid] = _SimClient(f"p{r}", r, world, script, io[r])
        to_server[pid] = deque(clients[pid].run())
        to_client[pid] = deque()
    for pid, msg in core.take():
        to_client[pid].append(msg)
    steps = 0
    while True:
        queues = [("s", pid) for pid, q in to_server.items() if q] + \
                 [("c", pid) for pid, q in to_client.items() if q]
        if not queues:
            core.settle(0.0)
            out = core.take()
            if not out:
                break
            for pid, msg in out:
                to_client[pid].append(msg)
            continue
        side, pid = rng.choice(queues) if rng else queues[0]
        if side == "s":
            msg = to_server[pid].popleft()
            if pid in core.participants:
                core.message(pid, msg, 0.0)
            if rng is None or rng.random() < 0.5:
                core.settle(0.0)
        else:
            msg = to_client[pid].popleft()
            to_server[pid].extend(clients[pid].receive(msg))
        for opid, omsg in core.take():
            to_client[opid].append(omsg)
        steps += 1
        assert steps < 100_000
    assert all(c.done for c in clients.values()), "a simulated process never finished"
    advances = [entry for entry in core.log if entry[0] == "advance"]
    return advances, [c.log for c in clients.values()], core.gvt_ns


_op = st.one_of(
    st.tuples(st.just("sleep"), st.integers(0, 50)),
    st.tuples(st.just("compute"), st.integers(0, 50)),
)
_phase = st.lists(_op, max_size=4)


@settings(max_examples=40, deadline=None)
@given(world=st.integers(1, 4), data=st.data())
def test_decisions_do_not_depend_on_message_interleaving(world, data):
    n_phases = data.draw(st.integers(1, 3))
    scripts = []
    for _ in range(world):
        script = []
        for k in range(n_phases):
            script += data.draw(_phase)
            if k < n_phases - 1:
                script.append(("coll", data.draw(st.integers(0, 20))))
        scripts.append(script)
    io = data.draw(st.lists(st.booleans(), min_size=world, max_size=world))
    reference = _simulate(scripts, io, None)
    seed = data.draw(st.integers(0, 2**32 - 1))
    assert _simulate(scripts, io, random.Random(seed)) == reference
    # GVT only moves forward, and each advance wakes exactly the earliest deadlines
    gvts = [entry[1] for entry in reference[0]]
    assert gvts == sorted(gvts)
