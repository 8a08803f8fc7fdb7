"""The client's protocol state (``ClientCore``), driven without sockets, threads or sleeps.

Thread idents are plain ints; server messages are built by hand in the wire format (each is
checked against ``wire.S2C``, and every message the core queues against ``wire.C2S``).
"""

from __future__ import annotations

import os

import pytest

from revati.errors import CollectiveFailed, DeadlockError, TimekeeperLost
from revati.shim.coord.client_core import (
    ENDED, READY, WAITING, WOKEN, ClientCore, CollectiveResult, PendingCollective,
)
from revati.shim.coord.core import CoreConfig, Timekeeper
from revati.shim.coord.wire import C2S, FLAG_IO, FLAG_STALLED, S2C, decode, encode

T1, T2 = 101, 102  # thread idents


def make(*threads: int, lvt: int = 0, samples=None) -> ClientCore:
    native_ids = iter(range(1, 1000))
    core = ClientCore("w0", lvt_fn=lambda: lvt, native_id_fn=lambda: next(native_ids),
                      sample_threads_fn=samples or (lambda tids: {t: (ord("S"), 0, 0) for t in tids}))
    for ident in threads:
        core.register_thread(ident)
    assert take(core) == []  # a process with running threads reports nothing
    return core


def take(core: ClientCore) -> list[tuple]:
    msgs = core.take()
    for msg in msgs:
        assert decode(encode(msg)[4:], C2S) == msg  # what the server would accept
    return msgs


def server(msg: tuple) -> tuple:
    return decode(encode(msg)[4:], S2C)


def wait(core, ident, deadline, woke=None, io_check=None, label="sleep", hot=True):
    on_wake = woke.append if woke is not None else None
    return core.new_wait(ident, deadline, io_check, on_wake, label, hot)


# -- waits and wakes --------------------------------------------------------------------------

def test_blocked_only_when_every_thread_waits_and_reports_the_earliest_deadline():
    core = make(T1, T2, lvt=7)
    w1 = wait(core, T1, 300)
    assert take(core) == []  # T2 still runs
    wait(core, T2, 200)
    assert take(core) == [("state", 0, True, 200, 0, 7)]
    assert core.n_waiting_threads == 2
    core.end_wait(w1.token, T1)  # T1 runs again (a notify): the process runs
    assert take(core) == [("state", 0, False, None, 0, 7)]


def test_a_wake_ends_the_waits_due_in_deadline_order_at_the_granted_time():
    core = make(T1, T2)
    order = []
    a = core.new_wait(T1, 300, None, lambda t: order.append(("a", t)), "a", True)
    b = core.new_wait(T2, 200, None, lambda t: order.append(("b", t)), "b", True)
    take(core)
    core.dispatch(server(("wake", 250, 1, 300)))
    assert order == [("b", 300), ("a", 300)]
    assert (a.status, b.status) == (WOKEN, WOKEN)
    assert core.ack == 1 and core.gvt == 250
    assert take(core) == []  # the server already counts a woken process running
    assert core.end_wait(a.token, T1) == 300
    assert a.status == ENDED and a.token not in core.waits


def test_a_wake_that_wakes_nothing_is_acknowledged_with_the_state_again():
    # See Note [Virtual time coordination], "Acknowledged wakes".
    core = make(T1)
    woke = []
    w = wait(core, T1, 500, woke)
    assert take(core) == [("state", 0, True, 500, 0, 0)]
    core.dispatch(server(("wake", 100, 4, 100)))
    assert woke == [] and w.status == WAITING
    assert take(core) == [("state", 4, True, 500, 0, 0)]


def test_a_deadline_already_behind_gvt_ends_at_once_at_its_own_deadline():
    core = make(T1)
    core.dispatch(server(("gvt", 1000)))
    woke = []
    w = wait(core, T1, 400, woke)
    assert w.status == WOKEN and woke == [400]  # not GVT: Note [...], "Advancing"
    assert take(core) == [] and core.hot_waits == 0
    assert core.end_wait(w.token, T1) == 400


def test_hot_waits_ask_for_the_reader_thread():
    core = make(T1, T2)
    wait(core, T1, 100, hot=False)
    assert not core.kick_wanted and core.hot_waits == 0
    w = wait(core, T2, None, [], hot=True)
    assert core.kick_wanted and core.hot_waits == 1
    core.end_wait(w.token, T2)
    assert core.hot_waits == 0


def test_end_wait_by_the_waker_stops_the_count_and_the_waiter_gets_the_same_answer():
    core = make(T1, T2)
    w = wait(core, T1, None, [])
    wait(core, T2, None, [])
    take(core)
    assert core.end_wait(w.token, T2) is None  # T2 notified T1
    assert take(core) == [("state", 0, False, None, 0, 0)]
    assert w.token in core.waits  # the waiter still has to call end_wait
    assert core.end_wait(w.token, T1) is None
    assert w.token not in core.waits
    with pytest.raises(KeyError):
        core.end_wait(w.token, T1)


def test_wake_due_ends_other_threads_waits_at_their_deadlines():
    core = make(T1, T2, 103)
    woke, seen = [], []
    late = wait(core, T1, 900, woke)
    due = wait(core, T2, 300, woke)
    pumping = core.new_wait(103, 200, None, None, "pumps itself", False)
    ready_io = core.new_wait(T1, 100, lambda: True, None, "I/O", True)
    take(core)
    returned = core.wake_due(500, lambda ident, t: seen.append((ident, t)))
    assert returned == [pumping, due]  # ready_io: its data decides, not the clock
    assert seen == [(103, 200), (T2, 300)] and woke == [300]
    assert (pumping.granted, due.granted) == (200, 300)
    assert late.status == WAITING and ready_io.status == WAITING


def test_io_waits_are_flagged_and_answer_probes_from_what_is_true_now():
    core = make(T1)
    data = [False]
    w = core.new_wait(T1, 800, lambda: data[0], None, "recv", True)
    assert take(core) == [("state", 0, True, 800, FLAG_IO, 0)]
    core.dispatch(server(("probe", 0, 1)))
    assert take(core) == [("probe_reply", 1, 0, True, 0)]
    data[0] = True
    core.dispatch(server(("probe", 0, 2)))
    assert w.status == READY
    assert take(core) == [("probe_reply", 2, 0, False, 0)]
    # The data went away before anyone read it: the wait counts again (stall-check path).
    data[0] = False
    assert core.stall_check_start() is None
    assert w.status == WAITING
    assert take(core) == [("state", 0, True, 800, FLAG_IO, 0)]


def test_a_failing_io_check_counts_as_ready():
    core = make(T1)

    def broken():
        raise OSError("closed")

    w = core.new_wait(T1, None, broken, None, "recv", True)
    take(core)
    core.dispatch(server(("probe", 0, 1)))
    assert w.status == READY
    assert take(core) == [("probe_reply", 1, 0, False, 0)]


def test_unregistering_the_last_running_thread_blocks_the_process():
    core = make(T1, T2)
    wait(core, T1, 50)
    assert take(core) == []
    th = core.unregister_thread(T2)
    assert th is not None and th.ident == T2
    assert take(core) == [("state", 0, True, 50, 0, 0)]
    assert core.unregister_thread(T2) is None


def test_an_unannounced_thread_becomes_a_program_thread_when_it_waits():
    core = make(T1)
    wait(core, 555, 10)
    assert 555 in core.threads
    assert take(core) == []  # T1 still runs


# -- failures ---------------------------------------------------------------------------------

def test_a_deadlock_fails_current_and_future_waits_with_a_report():
    core = make(T1)
    woke = []
    w = wait(core, T1, None, woke, label="recv from rank 1")
    take(core)
    report = {"gvt_ns": 5, "participants": [], "pending_collectives": [], "pending_spawns": []}
    core.dispatch(server(("deadlock", 5, report)))
    assert woke == [5]
    with pytest.raises(DeadlockError) as info:
        core.end_wait(w.token, T1)
    assert info.value.states["this_process"] == {
        "name": "w0", "pid": os.getpid(), "waits": ["recv from rank 1"]}
    assert "waits on: recv from rank 1" in str(info.value)
    with pytest.raises(DeadlockError):
        wait(core, T1, 10)
    core.sync()
    assert take(core) == []  # nothing is sent after a failure


def test_refused_fails_with_timekeeper_lost():
    core = make(T1)
    core.dispatch(server(("refused", 0, "bad token")))
    assert isinstance(core.failure, TimekeeperLost)
    with pytest.raises(TimekeeperLost):
        core.join_group("g", 0, 2)


# -- collectives ------------------------------------------------------------------------------

def test_a_blocking_arrival_carries_the_waiting_state_and_completes_on_coll_done():
    core = make(T1, lvt=40)
    pending = PendingCollective(None, ("tp", 3, 0))
    core.collective_arrive(pending, T1, 2, 40, 10, b"x", wait=True)
    assert take(core) == [("coll", 0, "tp", 3, 0, 2, 40, 10, b"x", True, None, 0, 40)]
    with pytest.raises(ValueError, match="already arrived"):
        core.collective_arrive(PendingCollective(None, ("tp", 3, 0)), T1, 2, 40, 10, None, True)
    w = core.collective_wait(pending, T1)
    assert w is not None and w.label == "collective 'tp' #3 rank 0"
    core.dispatch(server(("coll_done", 60, 1, "tp", 3, 0, 55, [b"x", b"y"])))
    assert pending.done() and pending.result == CollectiveResult(55, [b"x", b"y"], 60)
    assert w.status == WOKEN and core.ack == 1
    assert ("tp", 3, 0) not in core.colls


def test_an_async_arrival_waits_later_and_a_failure_names_the_missing_ranks():
    core = make(T1)
    pending = PendingCollective(None, ("dp", 0, 1))
    core.collective_arrive(pending, T1, 2, 0, 5, None, wait=False)
    assert take(core) == [("coll", 0, "dp", 0, 1, 2, 0, 5, None, False, None, 0, 0)]
    w = core.collective_wait(pending, T1)
    assert take(core) == [("state", 0, True, None, 0, 0)]
    core.dispatch(server(("coll_fail", 0, 1, "dp", 0, 1, [0], "rank exited")))
    assert isinstance(pending.error, CollectiveFailed) and pending.error.missing_ranks == [0]
    assert w.status == WOKEN
    # Done before anyone waited: no wait entry at all.
    done = PendingCollective(None, ("dp", 1, 1))
    core.collective_arrive(done, T1, 2, 0, 5, None, wait=False)
    core.dispatch(server(("coll_done", 0, 2, "dp", 1, 1, 9, [None, None])))
    assert core.collective_wait(done, T1) is None


def test_a_lost_connection_fails_pending_collectives():
    core = make(T1)
    pending = PendingCollective(None, ("g", 0, 0))
    core.collective_arrive(pending, T1, 2, 0, 0, None, wait=False)
    take(core)
    lost = TimekeeperLost(None, "gone")
    core.fail_all(lost)
    assert pending.error is lost and core.colls == {}


# -- child tickets ----------------------------------------------------------------------------

def test_child_tickets_are_unique_and_announced():
    core = make(T1)
    core.id = 7
    first = core.announce_child(2.5)
    second = core.announce_child(None)
    assert first == f"child-{os.getpid()}-7-1" and second == f"child-{os.getpid()}-7-2"
    assert take(core) == [("spawn", first, 2.5), ("spawn", second, 0.0)]
    assert core.new_ticket("fork") == f"fork-{os.getpid()}-7-3"


# -- stall checks -----------------------------------------------------------------------------

def test_a_stall_check_with_no_activity_in_between_marks_the_process_stalled():
    core = make(T1, T2)
    wait(core, T1, 900)
    take(core)
    started = core.stall_check_start()
    assert started is not None
    threads, activity = started
    assert [th.ident for th in threads] == [T2]
    assert core.stall_check_commit(threads, activity, {threads[0].native_id: (ord("S"), 1, 0)})
    assert core.stalled and core.kick_wanted
    assert take(core) == [("state", 0, True, 900, FLAG_IO | FLAG_STALLED, 0)]
    core.kick_wanted = False
    core.touch()  # any shim call: the stalled thread runs after all
    assert not core.stalled and core.kick_wanted
    assert take(core) == [("state", 0, False, None, 0, 0)]


def test_a_stall_check_spanning_an_api_call_is_void_and_gone_threads_stop_counting():
    core = make(T1, T2)
    threads, activity = core.stall_check_start()
    wait(core, T1, 100)  # activity in between
    assert not core.stall_check_commit(threads, activity, {})
    assert not core.stalled
    threads, activity = core.stall_check_start()
    assert [th.ident for th in threads] == [T2]
    assert core.stall_check_commit(threads, activity, {})  # T2's sample: gone
    assert T2 not in core.threads


def test_no_stall_check_while_blocked_or_busy():
    core = make(T1)
    wait(core, T1, 100)
    assert core.stall_check_start() is None
    core = make(T1)
    threads, activity = core.stall_check_start()
    core.busy += 1
    assert not core.stall_check_commit(threads, activity, {})


def test_a_probe_ends_the_stall_when_the_thread_moved():
    samples = {"now": (ord("S"), 1, 0)}
    core = make(T1, T2, samples=lambda tids: {t: samples["now"] for t in tids})
    wait(core, T1, 900)
    threads, activity = core.stall_check_start()
    core.stall_check_commit(threads, activity, {th.native_id: samples["now"] for th in threads})
    take(core)
    core.dispatch(server(("probe", 0, 1)))
    assert take(core) == [("probe_reply", 1, 0, True, 0)]  # still asleep, unchanged
    samples["now"] = (ord("S"), 2, 0)  # it context-switched: not stalled
    core.dispatch(server(("probe", 0, 2)))
    assert not core.stalled
    assert take(core) == [("probe_reply", 2, 0, False, 0)]


# -- fork -------------------------------------------------------------------------------------

def test_reset_after_fork_keeps_gvt_and_tickets_only():
    core = make(T1)
    core.dispatch(server(("gvt", 70)))
    wait(core, T1, 100)
    core.announce_child(1.0)
    core.reset_after_fork()
    assert (core.threads, core.waits, core.colls, core.ack, core.take()) == ({}, {}, {}, 0, [])
    assert core.gvt == 70 and core.new_ticket("fork").endswith("-2")


# -- against the real server core -------------------------------------------------------------

def test_two_clients_and_the_timekeeper_core_agree_on_who_wakes_when():
    tk = Timekeeper(CoreConfig())
    clients: dict[int, ClientCore] = {}
    for name in ("a", "b"):
        core = make(T1)
        core.id = tk.register(name, 1000, 1, 0, None, "participant", 0.0)
        clients[core.id] = core
    a, b = clients.values()
    woke: list[tuple[str, int]] = []

    def pump():
        for _ in range(20):
            for pid, core in clients.items():
                for msg in take(core):
                    tk.message(pid, msg, 0.0)
            tk.settle(0.0)
            out = tk.take()
            if not out:
                return
            for pid, msg in out:
                if msg[0] != "welcome":
                    clients[pid].dispatch(server(msg))

    wa = a.new_wait(T1, 300, None, lambda t: woke.append(("a", t)), "sleep", True)
    wb = b.new_wait(T1, 100, None, lambda t: woke.append(("b", t)), "sleep", True)
    pump()
    assert woke == [("b", 100)]  # only the earliest deadline; a still waits
    assert b.end_wait(wb.token, T1) == 100
    wb = b.new_wait(T1, 200, None, lambda t: woke.append(("b", t)), "sleep", True)
    pump()
    assert woke == [("b", 100), ("b", 200)]
    b.end_wait(wb.token, T1)
    b.new_wait(T1, 1000, None, lambda t: woke.append(("b", t)), "sleep", True)
    pump()
    assert woke[-1] == ("a", 300) and a.end_wait(wa.token, T1) == 300
    assert tk.gvt_ns == 300
