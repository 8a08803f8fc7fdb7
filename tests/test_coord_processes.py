"""Real processes through real sockets: determinism against a reference simulation, crashes,
deadlocks, un-instrumented waits, fork.

Each worker (tests/coord_worker.py) runs a script of sleeps, computes, pipe messages and
collectives under the timekeeper and logs what it observed in virtual time. ``reference``
computes the same logs with a plain discrete-event simulation of the semantics in
Note [Virtual time coordination]; the emulated runs must match it exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revati.shim.coord.core import EXIT_DEADLOCK
from revati.shim.coord.handle import start_timekeeper
from revati.shim.coord.server import TimekeeperConfig

WORKER = str(Path(__file__).with_name("coord_worker.py"))
RUN_TIMEOUT_S = 60.0


# -- running an emulation ------------------------------------------------------------------


class Emulation:
    """Start a timekeeper and one worker process per script; collect their logs."""

    def __init__(self, scripts, tmp_path: Path, *, deadlock_timeout_s=0.5, mode="thread"):
        self.n = len(scripts)
        self.tmp = tmp_path
        self.handle = start_timekeeper(TimekeeperConfig(
            deadlock_timeout_s=deadlock_timeout_s, exit_when_empty=True,
            expect=tuple(f"w{i}" for i in range(self.n))), mode=mode)
        pipes = {(i, j): os.pipe() for i in range(self.n) for j in range(self.n) if i != j}
        self.procs = []
        self.log_paths = []
        for i, script in enumerate(scripts):
            read_fds = {j: pipes[(j, i)][0] for j in range(self.n) if j != i}
            write_fds = {j: pipes[(i, j)][1] for j in range(self.n) if j != i}
            log_path = tmp_path / f"w{i}.log.json"
            spec = {"name": f"w{i}", "rank": i, "world": self.n, "script": script,
                    "read_fds": read_fds, "write_fds": write_fds, "log_path": str(log_path)}
            spec_path = tmp_path / f"w{i}.spec.json"
            spec_path.write_text(json.dumps(spec))
            env = {**os.environ, **self.handle.env(ticket=f"w{i}")}
            err = open(tmp_path / f"w{i}.stderr", "wb")
            proc = subprocess.Popen([sys.executable, WORKER, str(spec_path)], env=env,
                                    pass_fds=[*read_fds.values(), *write_fds.values()],
                                    stdout=subprocess.DEVNULL, stderr=err)
            err.close()
            self.handle.child_started(f"w{i}", proc.pid)
            self.procs.append(proc)
            self.log_paths.append(log_path)
        for r, w in pipes.values():
            os.close(r)
            os.close(w)

    def finish(self, timeout_s=RUN_TIMEOUT_S):
        """(logs or None per worker, worker exit codes, timekeeper exit status)."""
        deadline = time.monotonic() + timeout_s
        try:
            codes = [p.wait(max(0.1, deadline - time.monotonic())) for p in self.procs]
        except subprocess.TimeoutExpired:
            for p in self.procs:
                p.kill()
                p.wait()
            self.handle.stop()
            stderr = {i: (self.tmp / f"w{i}.stderr").read_text() for i in range(self.n)}
            pytest.fail(f"emulation did not finish in {timeout_s}s; stderr: {stderr}")
        status = self.handle.wait(10.0)
        if status is None:
            status = self.handle.stop()
        logs = [json.loads(p.read_text()) if p.exists() else None for p in self.log_paths]
        return logs, codes, status


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) child processes of ``pid``, from /proc."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if int(fields[1]) == pid and fields[0] not in (b"Z", b"X"):
            kids.append(int(entry))
    return kids


# -- the reference semantics -----------------------------------------------------------------


def reference(scripts):
    """The logs every worker must produce, and whether the run deadlocks."""
    n = len(scripts)
    lvt = [0] * n
    pc = [0] * n
    wait: list = [None] * n  # None: runnable; ("sleep", D) | ("recv", src, D) | ("coll", k); "done"
    chans = {(i, j): deque() for i in range(n) for j in range(n) if i != j}
    sent = {key: 0 for key in chans}
    logs: list[list] = [[] for _ in range(n)]
    arrivals: dict = {}  # collective key -> {rank: (arrival, cost)}
    coll_seq = [0] * n
    group_seq: list[dict] = [{} for _ in range(n)]
    gvt = 0

    def step(i) -> bool:
        progressed = False
        while True:
            w = wait[i]
            if w == "done":
                return progressed
            if w is not None:
                if w[0] == "recv":
                    ch = chans[(w[1], i)]
                    if ch and (w[2] is None or ch[0][0] < w[2]):
                        stamp, seq = ch.popleft()
                        lvt[i] = max(lvt[i], stamp, gvt)
                        logs[i].append(["recv", w[1], seq, lvt[i]])
                        wait[i] = None
                        progressed = True
                        continue
                return progressed
            if pc[i] == len(scripts[i]):
                logs[i].append(["done", lvt[i]])
                wait[i] = "done"
                return True
            op = scripts[i][pc[i]]
            pc[i] += 1
            progressed = True
            if op[0] == "sleep":
                wait[i] = ("sleep", lvt[i] + op[1])
            elif op[0] == "compute":
                lvt[i] += op[1]
            elif op[0] == "send":
                seq = sent[(i, op[1])]
                sent[(i, op[1])] += 1
                chans[(i, op[1])].append((lvt[i], seq))
                logs[i].append(["send", op[1], seq, lvt[i]])
            elif op[0] == "recv":
                wait[i] = ("recv", op[1], None if op[2] is None else lvt[i] + op[2])
            elif op[0] == "coll":
                key = ("world", coll_seq[i], n)
                coll_seq[i] += 1
                arrivals.setdefault(key, {})[i] = (lvt[i], op[1])
                wait[i] = ("coll", key)
            elif op[0] == "gcoll":
                group, members, cost = op[1], op[2], op[3]
                seq = group_seq[i].get(group, 0)
                group_seq[i][group] = seq + 1
                key = (group, seq, len(members))
                arrivals.setdefault(key, {})[i] = (lvt[i], cost)
                wait[i] = ("coll", key)

    deadlocked = False
    while True:
        progress = True
        while progress:
            progress = any([step(i) for i in range(n)])
            for key, arr in list(arrivals.items()):
                if len(arr) == key[2]:
                    del arrivals[key]
                    done_at = max(a for a, _ in arr.values()) + max(c for _, c in arr.values())
                    for r in arr:
                        lvt[r] = done_at
                        if key[0] == "world":
                            logs[r].append(["coll", key[1], done_at,
                                            ",".join(str(x) for x in range(n))])
                        else:
                            logs[r].append(["gcoll", key[0], key[1], done_at])
                        wait[r] = None
                    progress = True
        if all(w == "done" for w in wait):
            break
        timed = [(w[-1], i) for i, w in enumerate(wait)
                 if isinstance(w, tuple) and w[0] in ("sleep", "recv") and w[-1] is not None]
        if not timed:
            for i in range(n):
                if wait[i] != "done":
                    logs[i].append(["deadlock", lvt[i]])
            deadlocked = True
            break
        gvt = max(gvt, min(timed)[0])
        for deadline, i in timed:
            if deadline <= gvt:
                lvt[i] = max(lvt[i], gvt)
                w = wait[i]
                logs[i].append(["sleep", deadline, lvt[i]] if w[0] == "sleep"
                               else ["timeout", w[1], deadline, lvt[i]])
                wait[i] = None
    return logs, deadlocked


def check_invariants(logs):
    """Causality on every message; sleeps and timeouts end exactly at their deadline."""
    sends = {}
    for i, log in enumerate(logs):
        for e in log:
            if e[0] == "send":
                sends[(i, e[1], e[2])] = e[3]
    for i, log in enumerate(logs):
        for e in log:
            if e[0] == "recv":
                assert e[3] >= sends[(e[1], i, e[2])], f"w{i} received {e} before it was sent"
            elif e[0] in ("sleep", "timeout"):
                assert e[-1] == e[-2], f"w{i}: {e} did not end at its deadline"


# -- scripts -----------------------------------------------------------------------------------


@st.composite
def scripts_strategy(draw, max_world=4, max_ops=5, max_phases=2):
    world = draw(st.integers(2, max_world))
    phases = draw(st.integers(1, max_phases))
    timeout = st.one_of(st.none(), st.integers(1, 1000), st.integers(1, 1000),
                        st.integers(1, 1000))
    scripts = []
    for i in range(world):
        others = [j for j in range(world) if j != i]
        op = st.one_of(
            st.tuples(st.just("sleep"), st.integers(0, 1000)),
            st.tuples(st.just("compute"), st.integers(0, 1000)),
            st.tuples(st.just("send"), st.sampled_from(others)),
            st.tuples(st.just("send"), st.sampled_from(others)),
            st.tuples(st.just("recv"), st.sampled_from(others), timeout),
            st.tuples(st.just("recv"), st.sampled_from(others), timeout),
        )
        script = []
        for k in range(phases):
            script += [list(o) for o in draw(st.lists(op, max_size=max_ops))]
            if k < phases - 1:
                script.append(["coll", draw(st.integers(0, 100))])
        scripts.append(script)
    return scripts


def run_and_compare(scripts, tmp_path, mode="thread"):
    expected, deadlocked = reference(scripts)
    logs, codes, status = Emulation(scripts, tmp_path, mode=mode).finish()
    assert logs == expected
    check_invariants(logs)
    if deadlocked:
        assert status == EXIT_DEADLOCK
        assert all(c in (0, 3) for c in codes) and 3 in codes
    else:
        assert status == 0 and codes == [0] * len(scripts)
    return logs


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                        HealthCheck.too_slow])


@settings(max_examples=6, **_SETTINGS)
@given(scripts=scripts_strategy())
def test_random_processes_match_the_reference_simulation(scripts, tmp_path_factory):
    run_and_compare(scripts, tmp_path_factory.mktemp("emu"))


@pytest.mark.slow
@settings(max_examples=40, **_SETTINGS)
@given(scripts=scripts_strategy(max_world=6, max_ops=8, max_phases=3))
def test_random_processes_match_the_reference_simulation_heavy(scripts, tmp_path_factory):
    first = run_and_compare(scripts, tmp_path_factory.mktemp("emu"))
    second = run_and_compare(scripts, tmp_path_factory.mktemp("emu"), mode="process")
    assert first == second


def test_same_run_twice_gives_identical_logs(tmp_path):
    scripts = [
        [["compute", 30], ["send", 1], ["recv", 2, 500], ["sleep", 40], ["coll", 7],
         ["send", 2], ["recv", 1, None]],
        [["recv", 0, None], ["sleep", 100], ["send", 2], ["coll", 3], ["send", 0],
         ["recv", 2, 5]],
        [["sleep", 10], ["send", 0], ["recv", 1, 1000], ["compute", 5], ["coll", 1],
         ["recv", 0, 50], ["sleep", 1]],
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = run_and_compare(scripts, tmp_path / "a")
    second = run_and_compare(scripts, tmp_path / "b", mode="process")
    assert first == second
    # the interesting cases happened: a delivery, a timeout, a collective
    kinds = {e[0] for log in first for e in log}
    assert {"recv", "timeout", "coll", "sleep", "done"} <= kinds


def test_message_stamped_after_the_deadline_loses_to_the_timeout(tmp_path):
    # w0 sends at LVT 1000 (it computed first); w1 waits with a 500 timeout from LVT 0.
    scripts = [[["compute", 1000], ["send", 1]],
               [["recv", 0, 500], ["recv", 0, None]]]
    logs = run_and_compare(scripts, tmp_path)
    assert logs[1] == [["timeout", 0, 500, 500], ["recv", 0, 0, 1000], ["done", 1000]]


# -- failures --------------------------------------------------------------------------------


def test_killed_participant_fails_its_collective_cleanly_and_the_others_finish(tmp_path):
    mark = tmp_path / "w2.mark"
    tp = ["gcoll", "tp", [0, 1, 2], 10]
    scripts = [
        [["sleep", 5], tp, ["compute", 20], tp, ["sleep", 5]],
        [tp, ["sleep", 50], tp],
        [tp, ["mark", str(mark)], ["recv", 3, None]],  # killed while waiting here
        [["sleep", 100], ["compute", 7], ["sleep", 1_000_000]],
    ]
    emu = Emulation(scripts, tmp_path, deadlock_timeout_s=30.0, mode="process")
    deadline = time.monotonic() + 30
    while not mark.exists():
        assert time.monotonic() < deadline, "w2 never reached its mark"
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(emu.procs[2].pid, signal.SIGKILL)
    logs, codes, status = emu.finish()
    assert codes[2] == -signal.SIGKILL and logs[2] is None
    assert codes[0] == codes[1] == 4
    for log in logs[:2]:
        assert log[-1] == ["coll_failed", "'tp'", 1, [2]]
    assert logs[3] == [["sleep", 100, 100], ["sleep", 1_000_107, 1_000_107], ["done", 1_000_107]]
    assert codes[3] == 0
    assert status == 0
    assert children_of(os.getpid()) == []


def test_deadlock_is_reported_and_everything_stops(tmp_path):
    scripts = [
        [["sleep", 10], ["recv", 1, None]],
        [["gcoll", "pair", [1, 2], 5]],
        [["recv", 0, None]],
    ]
    emu = Emulation(scripts, tmp_path, deadlock_timeout_s=0.5, mode="process")
    logs, codes, status = emu.finish()
    assert status == EXIT_DEADLOCK
    assert codes == [3, 3, 3]
    assert logs == [[["sleep", 10, 10], ["deadlock", 10]], [["deadlock", 0]],
                    [["deadlock", 0]]]
    report = emu.handle.deadlock_report
    rows = {row["name"]: row for row in report["participants"]}
    assert set(rows) == {"w0", "w1", "w2"}
    assert rows["w0"]["pid"] == emu.procs[0].pid
    assert all(row["state"] == "blocked" for row in rows.values())
    assert rows["w0"]["waits_on"] == ["I/O"]
    assert any("collective 'pair' #0" in w for w in rows["w1"]["waits_on"])
    assert report["pending_collectives"] == [
        {"group": "'pair'", "seq": 0, "world_size": 2, "arrived_ranks": [0],
         "missing_ranks": [1]}]
    stderr = (tmp_path / "w1.stderr").read_text()
    assert "deadlock at virtual time 10 ns" in stderr and "w2 (pid" in stderr
    assert children_of(os.getpid()) == []


def test_uninstrumented_blocking_call_is_caught_by_the_stall_check(tmp_path):
    # w0 has a second program thread stuck in a raw os.read: without the stall check w0 never
    # looks blocked and virtual time could never advance.
    scripts = [[["hang"], ["sleep", 1000]],
               [["sleep", 500], ["sleep", 2000]]]
    logs, codes, status = Emulation(scripts, tmp_path).finish(timeout_s=30)
    assert logs == [[["sleep", 1000, 1000], ["done", 1000]],
                    [["sleep", 500, 500], ["sleep", 2500, 2500], ["done", 2500]]]
    assert status == 0


_FORK_SCRIPT = textwrap.dedent("""
    import json, os, sys, threading, time
    # A slow child start (registered before the Coordinator's hook, so it runs first in the
    # child): without the parent's announcement GVT would move on without the child.
    os.register_at_fork(after_in_child=lambda: time.sleep(0.3))
    from revati.shim.coord.client import Coordinator

    out = sys.argv[1]
    lvt = {"v": 500}
    coord = Coordinator.connect("parent", lvt_fn=lambda: lvt["v"])

    def sleep(d):
        ev = threading.Event()
        t = coord.begin_wait(lvt["v"] + d, on_wake=lambda g: ev.set())
        ev.wait()
        return coord.end_wait(t)

    pid = os.fork()
    if pid == 0:
        me = {"id": coord.id, "start": coord.start_lvt_ns, "granted": sleep(5)}
        with open(out + ".child", "w") as f:
            json.dump(me, f)
        coord.close()
        os._exit(0)
    me = {"id": coord.id, "granted": sleep(10)}
    os.waitpid(pid, 0)
    with open(out + ".parent", "w") as f:
        json.dump(me, f)
    coord.close()
""")


def test_forked_child_reregisters_with_the_parents_lvt_and_is_waited_for(tmp_path):
    handle = start_timekeeper(TimekeeperConfig(deadlock_timeout_s=5, exit_when_empty=True,
                                               expect=("p",)), mode="thread")
    out = str(tmp_path / "fork")
    proc = subprocess.run([sys.executable, "-c", _FORK_SCRIPT, out],
                          env={**os.environ, **handle.env(ticket="p")}, timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    child = json.loads(Path(out + ".child").read_text())
    parent = json.loads(Path(out + ".parent").read_text())
    assert child["id"] != parent["id"]
    assert child["start"] == 500
    # the parent blocked right after fork(), before the child registered: GVT waited for it
    assert child["granted"] == 505 and parent["granted"] == 510
    assert handle.wait(10) == 0
