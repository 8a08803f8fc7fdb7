"""What the host clock leaves out (Note [Virtual host clock], revati/shim/clock.py): full garbage
collections, and CPU excluded inside a shim call that also excludes its own time; and a lagged
thread's own clock (Note [Threads in virtual time], revati/shim/vwait.py)."""
from __future__ import annotations

import gc
import threading
import time

from revati.shim.clock import ProcessClock, cpu_ns, install_gc_exclusion


def _heap(n: int = 400_000) -> list:
    return [[i] for i in range(n)]   # small containers: a full collection visits each


def test_a_full_collection_does_not_move_the_clock():
    keep = _heap()
    clock = ProcessClock(start_ns=0)
    stop = install_gc_exclusion(clock)
    try:
        t0 = clock.now()
        gc.collect()
        spent = clock.now() - t0
    finally:
        stop()
    assert clock.gc_full_ns > 2_000_000, clock.gc_full_ns       # it did take real CPU
    assert spent < clock.gc_full_ns / 10, (spent, clock.gc_full_ns)
    del keep


def test_without_the_exclusion_a_full_collection_is_host_time():
    keep = _heap()
    clock = ProcessClock(start_ns=0)
    t0 = clock.now()
    cpu0 = cpu_ns()
    gc.collect()
    assert clock.now() - t0 >= 0.9 * (cpu_ns() - cpu0)
    del keep


def test_a_shim_call_does_not_exclude_nested_exclusions_twice():
    clock = ProcessClock(start_ns=0)
    start = clock.now()
    cpu0 = cpu_ns()
    x = 0
    for i in range(300_000):   # some CPU inside "the shim call"
        x += i
    inner0 = cpu_ns()
    for i in range(300_000):   # part of it was also excluded from inside (a collection, a hold)
        x += i
    clock.exclude_nested(inner0, cpu_ns() - inner0)
    clock.exclude_since(cpu0)
    # everything since cpu0 is excluded exactly once: the clock stands where it stood
    assert abs(clock.now() - start) < 200_000, clock.now() - start


def test_a_lagged_thread_runs_on_its_own_time_until_it_waits_again():
    clock = ProcessClock(start_ns=0, count_host_cpu=False)
    clock.advance_to(5_000_000)                 # another thread's synchronisation jumped the clock
    seen = {}

    def woken():
        seen["lagged"] = clock.begin_lag(1_000_000)   # its deadline was passed by the jump
        seen["at"] = clock.now()
        clock.charge(2_000)                     # a launch it makes is charged to its own time
        seen["after_charge"] = clock.now()
        seen["sleep_ok"] = clock.lag_to(3_000_000)   # a sleep that ends before the shared present
        seen["after_sleep"] = clock.now()
        seen["beyond"] = clock.lag_to(9_000_000)     # one that does not: it must really wait
        clock.end_lag()
        seen["back"] = clock.now()

    th = threading.Thread(target=woken)
    th.start()
    th.join()
    assert seen == {"lagged": True, "at": 1_000_000, "after_charge": 1_002_000, "sleep_ok": True,
                    "after_sleep": 3_000_000, "beyond": False, "back": 5_000_000}
    assert clock.now() == 5_000_000             # the shared clock never moved
    assert not clock.begin_lag(6_000_000)       # no lag for a deadline the clock has not passed


def test_a_collection_in_a_thread_the_clock_already_leaves_out_is_not_excluded_twice():
    # the timekeeper client's reader thread: all its CPU is excluded already (coordination);
    # a full collection it triggers, excluded again, moved the clock back by its length
    keep = _heap()
    reader_cpu = [0]
    reader_ident: set[int] = set()
    clock = ProcessClock(start_ns=0, extra_excluded_ns=lambda: reader_cpu[0])
    stop = install_gc_exclusion(clock, lambda: reader_ident)

    def reader():
        reader_ident.add(threading.get_ident())
        t0 = time.thread_time_ns()
        gc.collect()
        reader_cpu[0] += time.thread_time_ns() - t0   # sampled after each round, as the reader does

    try:
        before = clock.now()
        th = threading.Thread(target=reader)
        th.start()
        th.join()
        after = clock.now()
    finally:
        stop()
    assert clock.gc_full_ns == 0
    assert after >= before, (before, after)
    del keep


def test_the_local_coordinators_monitor_is_named_to_the_collection_exclusion():
    from revati.shim.local_coord import LocalCoordinator

    coord = LocalCoordinator()
    try:
        idents = coord.coordination_thread_idents()
        assert idents == {coord._monitor.ident} and coord._monitor.is_alive()
    finally:
        coord.close()
