"""A process of the coordination tests: runs a script against the timekeeper, logs events.

Usage: ``python tests/coord_worker.py SPEC.json`` with REVATI_COORD_* in the environment.
SPEC: {"name", "rank", "world", "script": [[op, ...], ...], "read_fds": {src: fd},
"write_fds": {dst: fd}, "log_path"}. Ops:

- ["sleep", d]: a coordinated wait with deadline LVT + d.
- ["compute", c]: LVT += c (no real waiting; real CPU time is left out so runs are exact).
- ["send", dst]: write (LVT stamp, seq) to the pipe to dst.
- ["recv", src, timeout | null]: a coordinated I/O wait on the pipe from src (deadline
  LVT + timeout); LVT = max(LVT, stamp, GVT). A message stamped at or after the deadline
  does not end the wait: the timeout wins ties (Note [Virtual time coordination]).
- ["coll", cost]: an all-reduce of the whole world; LVT = completion.
- ["gcoll", group, [member ranks], cost]: a collective of some members.
- ["mark", path]: write the LVT to path (the test waits for it).
- ["hang"]: block forever in an un-instrumented read on a second, registered thread while
  the main thread carries on (exercises the stall check).

It plays the shim's part in the smallest way and writes its log as JSON at the end (exit 0),
after a deadlock (exit 3) or a failed collective (exit 4).
"""

from __future__ import annotations

import json
import os
import select
import struct
import sys
import threading
from collections import deque

from revati.errors import CollectiveFailed, DeadlockError
from revati.shim.coord.client import Coordinator

_RECORD = struct.Struct("<qq")


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        spec = json.load(f)
    state = {"lvt": 0}
    coord = Coordinator.connect(spec["name"], lvt_fn=lambda: state["lvt"])
    state["lvt"] = coord.start_lvt_ns
    read_fds = {int(k): v for k, v in spec["read_fds"].items()}
    write_fds = {int(k): v for k, v in spec["write_fds"].items()}
    for fd in read_fds.values():
        os.set_blocking(fd, False)
    wake_r, wake_w = os.pipe()
    buffers: dict[int, deque] = {src: deque() for src in read_fds}
    closed: set[int] = set()
    sent: dict[int, int] = {}
    log: list = []
    coll_seq = 0
    group_seqs: dict[str, int] = {}
    rank, world = spec["rank"], spec["world"]

    def wait_for(deadline, fd, label):
        # Alternate between the Coordinator's own waits (the thread reads the timekeeper's
        # answer itself) and waits in a primitive of ours (woken through on_wake).
        state["n"] = state.get("n", 0) + 1
        if (state["n"] + rank) % 2:
            if fd is None:
                return coord.sleep_until(deadline, label) if deadline is not None else \
                    coord.wait_io([], [], None, label).granted_ns
            return coord.wait_io([fd], [], deadline, label).granted_ns
        io_check = (lambda: bool(select.select([fd], [], [], 0)[0])) if fd is not None else None
        token = coord.begin_wait(deadline, io_check, lambda _t: os.write(wake_w, b"!"), label)
        try:
            select.select([wake_r] + ([fd] if fd is not None else []), [], [])
        finally:
            granted = coord.end_wait(token)
        if granted is not None:
            os.read(wake_r, 1)  # on_wake ran exactly once
        return granted

    def advance(t):
        state["lvt"] = max(state["lvt"], t, coord.gvt_ns())

    def recv(src, timeout):
        lvt = state["lvt"]
        deadline = None if timeout is None else lvt + timeout
        fd = read_fds[src]
        buf = buffers[src]
        while True:
            if buf:
                stamp, seq = buf[0]
                if deadline is None or stamp < deadline:
                    buf.popleft()
                    advance(stamp)
                    log.append(["recv", src, seq, state["lvt"]])
                    return
                granted = wait_for(deadline, None, f"timeout on pipe from {src}")
                advance(granted)
                log.append(["timeout", src, deadline, state["lvt"]])
                return
            granted = wait_for(deadline, None if src in closed else fd, f"recv from {src}")
            if granted is not None:
                advance(granted)
                log.append(["timeout", src, deadline, state["lvt"]])
                return
            try:
                data = os.read(fd, _RECORD.size * 256)
            except BlockingIOError:
                continue
            if not data:
                closed.add(src)  # the sender exited: only the deadline can end this wait
                continue
            for off in range(0, len(data), _RECORD.size):
                buf.append(_RECORD.unpack_from(data, off))

    def hang():
        r, _w = os.pipe()
        ready = threading.Event()

        def body():
            coord.register_thread()
            ready.set()
            os.read(r, 1)  # never returns: a wait the shim did not instrument

        threading.Thread(target=body, daemon=True).start()
        ready.wait()
        hang.keep = _w  # the write end stays open: no EOF

    try:
        for op in spec["script"]:
            kind = op[0]
            if kind == "sleep":
                deadline = state["lvt"] + op[1]
                advance(wait_for(deadline, None, "sleep"))
                log.append(["sleep", deadline, state["lvt"]])
            elif kind == "compute":
                state["lvt"] += op[1]
            elif kind == "send":
                dst = op[1]
                seq = sent.get(dst, 0)
                sent[dst] = seq + 1
                try:
                    os.write(write_fds[dst], _RECORD.pack(state["lvt"], seq))
                except BrokenPipeError:
                    pass  # dst already finished: nobody will read it
                log.append(["send", dst, seq, state["lvt"]])
            elif kind == "recv":
                recv(op[1], op[2])
            elif kind == "coll":
                result = coord.collective("world", coll_seq, rank, world, state["lvt"], op[1],
                                          str(rank).encode())
                state["lvt"] = result.completion_ns
                log.append(["coll", coll_seq, state["lvt"],
                            b",".join(result.payloads).decode()])
                coll_seq += 1
            elif kind == "gcoll":  # ["gcoll", group, [members], cost]
                group, members, cost = op[1], op[2], op[3]
                seq = group_seqs.get(group, 0)
                group_seqs[group] = seq + 1
                result = coord.collective(group, seq, members.index(rank), len(members),
                                          state["lvt"], cost, None)
                state["lvt"] = result.completion_ns
                log.append(["gcoll", group, seq, state["lvt"]])
            elif kind == "mark":  # ["mark", path]: tell the test we got here
                with open(op[1], "w") as f:
                    f.write(str(state["lvt"]))
            elif kind == "hang":
                hang()
            else:
                raise ValueError(f"unknown op {op!r}")
        log.append(["done", state["lvt"]])
        status = 0
    except DeadlockError as exc:
        log.append(["deadlock", state["lvt"]])
        print(f"{spec['name']}: {exc}", file=sys.stderr)
        status = 3
    except CollectiveFailed as exc:
        log.append(["coll_failed", repr(exc.group_key), exc.seq, exc.missing_ranks])
        status = 4
    tmp = spec["log_path"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(log, f)
    os.replace(tmp, spec["log_path"])
    coord.close()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
