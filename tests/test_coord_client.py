"""The Coordinator client and the wire format, against a real timekeeper on a real socket.

Several Coordinators in this one process stand for several processes (each has its own
connection and reader thread); the multi-process runs are in test_coord_processes.py.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import threading
import time

import pytest

from revati.errors import BadInput, CollectiveFailed, DeadlockError, TimekeeperLost
from revati.shim.coord.client import Coordinator
from revati.shim.coord.core import EXIT_DEADLOCK
from revati.shim.coord.handle import start_timekeeper
from revati.shim.coord.server import TimekeeperConfig
from revati.shim.coord.wire import (
    C2S, ENV_ADDRESS, MAX_FRAME_BYTES, Address, FrameReader, ProtocolError, decode, encode,
    frame, handshake_body,
)

# -- wire --------------------------------------------------------------------------------------


def test_messages_round_trip_and_only_allow_listed_kinds_decode():
    msg = ("state", 3, True, 1_000, 1, 42)
    body = encode(msg)[4:]
    assert decode(body, C2S) == msg
    for bad in [("nope", 1), ("state", 3, True, 1_000, 1), ("state", 3, 1, 1_000, 1, 42),
                ("state", True, True, None, 0, 0), ["state", 3, True, None, 0, 0]]:
        with pytest.raises(ProtocolError):
            decode(encode(bad)[4:], C2S)
    with pytest.raises(ProtocolError):
        decode(b"\x00garbage", C2S)


def test_frame_reader_reassembles_split_frames_and_rejects_huge_ones():
    data = encode(("bye",)) + encode(("spawn", "t", 1.0))
    reader = FrameReader()
    got = []
    for i in range(len(data)):
        got += [decode(b, C2S) for b in reader.feed(data[i:i + 1])]
    assert got == [("bye",), ("spawn", "t", 1.0)]
    with pytest.raises(ProtocolError):
        list(FrameReader().feed((MAX_FRAME_BYTES + 1).to_bytes(4, "big")))


@pytest.mark.parametrize("text, expected", [
    ("unix:/run/tk.sock", Address("unix", path="/run/tk.sock")),
    ("/tmp/x/tk.sock", Address("unix", path="/tmp/x/tk.sock")),
    ("tcp:127.0.0.1:5000", Address("tcp", host="127.0.0.1", port=5000)),
    ("node1:80", Address("tcp", host="node1", port=80)),
    ("[::1]:9", Address("tcp", host="::1", port=9)),
    ("", None), ("localhost", None), ("host:port", None), (":80", None),
])
def test_address_parsing(text, expected):
    if expected is None:
        with pytest.raises(BadInput):
            Address.parse(text)
    else:
        assert Address.parse(text) == expected
        assert Address.parse(str(expected)) == expected


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def timekeeper():
    handles = []

    def start(**kw):
        kw.setdefault("deadlock_timeout_s", 30.0)
        handle = start_timekeeper(TimekeeperConfig(**kw), mode="thread")
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def coords():
    made = []

    def connect(handle, name, **kw):
        kw.setdefault("register_thread", False)
        c = Coordinator.connect(name, address=handle.address, token=handle.token, **kw)
        made.append(c)
        return c

    yield connect
    for c in made:
        c.close()


def sleeper(coord, deadline, results, key, **wait_kw):
    """A program thread doing one coordinated sleep; its granted time lands in results[key]."""

    def body():
        coord.register_thread()
        woke = threading.Event()
        token = coord.begin_wait(deadline, on_wake=lambda _g: woke.set(), **wait_kw)
        woke.wait(20)
        try:
            results[key] = coord.end_wait(token)
        except Exception as exc:
            results[key] = exc
        coord.unregister_thread()

    t = threading.Thread(target=body)
    t.start()
    return t


# -- tests -------------------------------------------------------------------------------------


def test_socket_is_private(timekeeper):
    handle = timekeeper()
    path = Address.parse(handle.address).path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


def test_sleeps_are_granted_in_deadline_order(timekeeper, coords):
    handle = timekeeper()
    a, b = coords(handle, "a"), coords(handle, "b")
    results = {}
    ts = [sleeper(a, 300, results, "a"), sleeper(b, 100, results, "b")]
    for t in ts:
        t.join(20)
    assert results == {"a": 300, "b": 100}
    assert a.gvt_ns() == 300
    assert a.coordination_cpu_ns() > 0


def test_tcp_with_token_and_wrong_token_is_refused(timekeeper, coords):
    handle = timekeeper(address="tcp:127.0.0.1:0")
    assert handle.address.startswith("tcp:127.0.0.1:")
    with pytest.raises(TimekeeperLost, match="wrong token"):
        Coordinator.connect("intruder", address=handle.address, token="guess")
    a = coords(handle, "a")
    results = {}
    sleeper(a, 50, results, "a").join(20)
    assert results == {"a": 50}


def test_garbage_and_bad_messages_drop_only_that_connection(timekeeper, coords):
    handle = timekeeper()
    path = Address.parse(handle.address).path
    raw = socket.socket(socket.AF_UNIX)
    raw.connect(path)
    raw.sendall(frame(b"GET / HTTP/1.0\r\n\r\n"))
    assert raw.recv(100) == b""  # dropped, nothing unpickled
    raw.close()
    evil = socket.socket(socket.AF_UNIX)
    evil.connect(path)
    evil.sendall(frame(handshake_body(handle.token, ("register", "evil", 1, 1, None, None,
                                                     "participant"))))
    evil.recv(1000)  # welcome
    evil.sendall(encode(("exec", "rm -rf /")))
    evil.settimeout(5)
    assert evil.recv(100) == b""
    evil.close()
    a = coords(handle, "a")
    results = {}
    sleeper(a, 7, results, "a").join(20)
    assert results == {"a": 7}


def test_probe_sees_data_written_before_the_sender_blocked(timekeeper, coords):
    # a waits on a pipe with deadline 5, but its real wake-up is slow (it does not select on
    # the pipe); b writes to the pipe at LVT 0 and then sleeps until 10. Advancing to 5 would
    # time out a's wait although the data was there before: the probe must prevent it.
    handle = timekeeper()
    a, b = coords(handle, "a"), coords(handle, "b")
    r, w = os.pipe()
    first = {}

    def a_body():
        a.register_thread()
        woke = threading.Event()
        token = a.begin_wait(5, io_check=lambda: bool(select.select([r], [], [], 0)[0]),
                             on_wake=lambda _g: woke.set())
        woke.wait(0.5)
        first["a"] = a.end_wait(token)
        os.read(r, 1)
        woke2 = threading.Event()
        token = a.begin_wait(20, on_wake=lambda _g: woke2.set())
        woke2.wait(20)
        first["a2"] = a.end_wait(token)

    ta = threading.Thread(target=a_body)
    ta.start()
    time.sleep(0.05)
    os.write(w, b"x")
    results = {}
    sleeper(b, 10, results, "b").join(20)
    ta.join(20)
    assert first == {"a": None, "a2": 20}
    assert results == {"b": 10}
    handle.stop()
    assert handle.stats["probes"] >= 1
    os.close(r)
    os.close(w)


def test_waker_ending_a_wait_keeps_the_process_running_until_the_wakee_blocks(timekeeper,
                                                                              coords):
    handle = timekeeper()
    a, b = coords(handle, "a"), coords(handle, "b")
    tokens = {}
    go = threading.Event()
    out = {}

    def a_body():
        a.register_thread()
        tokens["t"] = a.begin_wait(None, label="condition")
        go.wait(20)  # the real notify
        out["first"] = a.end_wait(tokens["t"])
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # the woken thread computes before its next wait
            pass  # (a real sleep here would look stalled to the stall check, and rightly so)
        woke = threading.Event()
        t2 = a.begin_wait(200, on_wake=lambda _g: woke.set())
        woke.wait(20)
        out["second"] = a.end_wait(t2)

    ta = threading.Thread(target=a_body)
    ta.start()
    while "t" not in tokens:
        time.sleep(0.01)
    # the notifier (not the waiting thread) ends the wait first, then wakes it for real
    assert a.end_wait(tokens["t"]) is None
    go.set()
    results = {}
    tb = sleeper(b, 100, results, "b")
    time.sleep(0.15)
    assert results == {}  # a's woken thread is running: b's deadline must not be granted yet
    tb.join(20)
    ta.join(20)
    assert results == {"b": 100} and out == {"first": None, "second": 200}


def test_deadline_already_past_is_granted_without_asking(timekeeper, coords):
    handle = timekeeper()
    a = coords(handle, "a", register_thread=True)
    results = {}
    sleeper(a, 1000, results, "a")
    a.unregister_thread()
    time.sleep(0.05)
    while "a" not in results:
        time.sleep(0.01)
    assert a.gvt_ns() == 1000
    a.register_thread()
    called = []
    token = a.begin_wait(400, on_wake=called.append)
    assert called == [400]  # at once, on this thread, at its own deadline (not GVT)
    assert a.end_wait(token) == 400


def test_collectives_sync_and_async_and_failure_when_a_member_leaves(timekeeper, coords):
    handle = timekeeper()
    a, b = coords(handle, "a"), coords(handle, "b")
    pending = a.collective_start("tp", 0, 0, 2, 100, 5, b"from-a")
    assert not pending.done()
    res_b = {}

    def b_body():
        b.register_thread()
        res_b["r"] = b.collective("tp", 0, 1, 2, 250, 7, b"from-b")

    tb = threading.Thread(target=b_body)
    tb.start()
    a.register_thread()
    res_a = pending.wait()
    tb.join(20)
    assert res_a.completion_ns == res_b["r"].completion_ns == 257
    assert res_a.payloads == [b"from-a", b"from-b"]
    b.join_group("tp", 1, 2)
    pending = a.collective_start("tp", 1, 0, 2, 300, 5)
    b.close()
    with pytest.raises(CollectiveFailed) as err:
        pending.wait()
    assert (err.value.group_key, err.value.seq, err.value.missing_ranks) == ("tp", 1, [1])
    assert "rank 1: b" in str(err.value)


def test_deadlock_raises_in_every_waiting_process_and_stops_the_timekeeper(timekeeper, coords):
    handle = timekeeper(deadlock_timeout_s=0.3)
    a, b = coords(handle, "a"), coords(handle, "b")
    results = {}
    ts = [sleeper(a, None, results, "a", label="queue.get"),
          sleeper(b, None, results, "b", label="lock")]
    for t in ts:
        t.join(20)
    assert isinstance(results["a"], DeadlockError) and isinstance(results["b"], DeadlockError)
    text = str(results["a"])
    assert "a (pid" in text and "b (pid" in text and "queue.get" in text
    assert handle.wait(5) == EXIT_DEADLOCK
    assert {row["name"] for row in handle.deadlock_report["participants"]} == {"a", "b"}
    with pytest.raises(DeadlockError):
        a.begin_wait(5)


def test_waits_raise_when_the_timekeeper_goes_away(timekeeper, coords):
    handle = timekeeper()
    a = coords(handle, "a")
    results = {}
    t = sleeper(a, None, results, "a")
    time.sleep(0.1)
    handle.stop()
    t.join(20)
    assert isinstance(results["a"], TimekeeperLost)


def test_stall_check_unblocks_time_and_touch_resumes(timekeeper, coords):
    handle = timekeeper(stall_check_ms=30)
    a, b = coords(handle, "a"), coords(handle, "b")
    release = threading.Event()
    touched = threading.Event()

    def stuck():
        a.register_thread()
        release.wait(20)  # a real wait the shim does not know about
        a.touch()
        touched.set()
        release.clear()
        release.wait(20)

    ts = threading.Thread(target=stuck)
    ts.start()
    results = {}
    t0 = time.monotonic()
    sleeper(b, 100, results, "b").join(20)
    assert results == {"b": 100} and time.monotonic() - t0 < 5
    core = handle._server.core
    assert core.participants[a.id].state == "stalled"
    release.set()
    touched.wait(5)
    deadline = time.monotonic() + 5
    while core.participants[a.id].state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert core.participants[a.id].state == "running"
    release.set()
    ts.join(20)


def test_from_env_without_a_timekeeper_is_none(monkeypatch):
    monkeypatch.delenv(ENV_ADDRESS, raising=False)
    assert Coordinator.from_env("x") is None


# -- waits that block inside the Coordinator ---------------------------------------------------


def in_thread(coord, fn, results, key):
    """Run fn() on a registered program thread of coord; its result lands in results[key]."""

    def body():
        coord.register_thread()
        try:
            results[key] = fn()
        except Exception as exc:
            results[key] = exc
        coord.unregister_thread()

    t = threading.Thread(target=body)
    t.start()
    return t


def test_sleep_until_and_wait_io_read_the_answer_in_the_waiting_thread(timekeeper, coords):
    handle = timekeeper()
    a, b = coords(handle, "a"), coords(handle, "b")
    r, w = os.pipe()
    results = {}

    def b_body():
        first = b.wait_io([r], [], 100, label="pipe")
        results["b1"] = first
        return b.wait_io([r], [], 10_000, label="pipe")

    tb = in_thread(b, b_body, results, "b2")
    ta = in_thread(a, lambda: a.sleep_until(300), results, "a")
    ta.join(20)
    assert results["a"] == 300 and results["b1"] == (100, [], [])
    os.write(w, b"x")
    tb.join(20)
    assert results["b2"] == (None, [r], [])
    assert a.coordination_cpu_ns() >= 0
    os.close(r)
    os.close(w)


def test_second_waiting_thread_is_woken_by_the_one_reading_the_socket(timekeeper, coords):
    handle = timekeeper()
    a, b = coords(handle, "a"), coords(handle, "b")
    fallbacks = []
    real = a._woken_wait

    def counting(*args):
        fallbacks.append(args[0].label)
        return real(*args)

    a._woken_wait = counting
    results = {}
    go = threading.Barrier(2)

    def sleeper_at(deadline):
        def fn():
            go.wait()
            return a.sleep_until(deadline, label=f"s{deadline}")
        return fn

    threads = [in_thread(a, sleeper_at(100), results, "a100"),
               in_thread(a, sleeper_at(200), results, "a200"),
               in_thread(b, lambda: b.sleep_until(150), results, "b150")]
    for t in threads:
        t.join(20)
    assert results == {"a100": 100, "a200": 200, "b150": 150}
    assert len(fallbacks) >= 1  # one of a's threads could not read the socket itself


@pytest.mark.parametrize("doorbell", [True, False])
def test_stall_check_reaches_a_process_whose_threads_read_the_socket(timekeeper, coords,
                                                                     monkeypatch, doorbell):
    # a: P sleeps in sleep_until (reads the socket), H waits through begin_wait (needs the
    # reader), S is stuck in a wait nobody instrumented. b must still get its deadline.
    if not doorbell:
        from revati.shim.coord import client as client_module

        real_open = client_module.open_connection

        def no_doorbell(address, token, register, *args, **kw):
            if register[0] == "doorbell":
                raise TimekeeperLost(address, "no doorbell in this test")
            return real_open(address, token, register, *args, **kw)

        monkeypatch.setattr(client_module, "open_connection", no_doorbell)
    handle = timekeeper(stall_check_ms=30)
    a, b = coords(handle, "a"), coords(handle, "b")
    release = threading.Event()
    stuck_ready = threading.Event()

    def stuck():
        a.register_thread()
        stuck_ready.set()
        release.wait(30)

    ts = threading.Thread(target=stuck)
    ts.start()
    stuck_ready.wait(5)
    results = {}
    tp = in_thread(a, lambda: a.sleep_until(1000), results, "P")
    th = sleeper(a, 2000, results, "H")
    tb = in_thread(b, lambda: (b.sleep_until(100), b.sleep_until(5000)), results, "b")
    t0 = time.monotonic()
    for t in (tp, th, tb):
        t.join(20)
    assert results == {"P": 1000, "H": 2000, "b": (100, 5000)}
    assert time.monotonic() - t0 < 15
    release.set()
    ts.join(20)


def test_wait_io_handles_descriptor_numbers_beyond_select_limit(timekeeper, coords):
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1500:
        pytest.skip(f"needs RLIMIT_NOFILE > 1500, have {soft}")
    handle = timekeeper()
    a = coords(handle, "a", register_thread=True)
    r, w = os.pipe()
    high = os.dup2(r, 1500)
    try:
        os.write(w, b"x")
        assert a.wait_io([high], [], 10_000) == (None, [high], [])
        os.read(high, 1)
        assert a.wait_io([high], [w], 10_000) == (None, [], [w])
    finally:
        for fd in (r, w, high):
            os.close(fd)
