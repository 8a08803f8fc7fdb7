"""The timekeeper server: sockets around the pure ``core.Timekeeper`` (one per emulation).

A single thread with ``selectors`` and the REAL clock (the server is never emulated). It
accepts connections on a Unix socket (mode 0600 in a private 0700 directory) or TCP, checks the
emulation's token in each handshake, feeds decoded messages to the core and writes out what the
core decides. See Note [Virtual time coordination] in ``core.py``.

Usage::

    python -m revati.shim.coord.server --address unix:/run/me/tk.sock \\
        [--deadlock-timeout-s 10] [--stall-check-ms 100] [--expect TICKET ...] \\
        [--exit-when-empty] [--report deadlock.json] [--stats stats.json] [--verbose] \\
        [--parent-pid PID]

It prints one JSON line when it listens (``{"address": ..., "pid": ...}``; plus ``"token"``
when ``REVATI_COORD_TOKEN`` was not set and it made one) and exits 0 when stopped (SIGTERM,
SIGINT, or everybody left with ``--exit-when-empty``), 3 after a deadlock (the report goes to
stderr and to ``--report``), 2 on bad arguments, 1 on an internal error. With ``--parent-pid``
(what ``revati emulate`` passes) it ignores SIGINT -- Ctrl-C reaches the launcher, which stops
the program before the timekeeper -- and when that parent dies it stops every process group the
launcher announced and every participant, then exits 4 (Note [No orphans] in revati/lifetime.py).

From Python (``start_timekeeper`` and its ``TimekeeperHandle`` live in ``handle.py`` and are
importable from here too)::

    handle = start_timekeeper(TimekeeperConfig(deadlock_timeout_s=5), mode="process")
    env = {**os.environ, **handle.env(ticket=handle.expect_child())}
    proc = subprocess.Popen(cmd, env=env)      # its shim calls Coordinator.from_env(...)
    ...
    status = handle.stop()                     # or handle.wait(); handle.deadlock_report

It is one module of ~510 lines: the server class is the selector loop and the connection table
its handshake, flush and shutdown share; the rest (the private socket folder and the command
line) is under 100 lines and exists only to start that class.
"""

from __future__ import annotations

import argparse
import errno
import hmac
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from revati.lifetime import pid_alive, stop_process_groups
from revati.shim.coord.core import (
    EXIT_ERROR, EXIT_OK, EXIT_USAGE, CoreConfig, ProtocolViolation, Timekeeper, format_report,
)
from revati.shim.coord.wire import (
    C2S, ENV_TOKEN, Address, FrameReader, ProtocolError, decode, encode, new_token, split_handshake,
)

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
FLUSH_ON_STOP_S = 2.0
EXIT_ORPHANED = 4  # the parent (revati emulate) died; the emulation was torn down


@dataclass
class TimekeeperConfig:
    address: str | None = None  # None: a Unix socket in a fresh private directory
    token: str | None = None  # None: a fresh random token
    deadlock_timeout_s: float = 10.0
    stall_check_ms: float = 100.0
    spawn_timeout_s: float = 600.0
    exit_when_empty: bool = False
    expect: tuple[str, ...] = ()  # tickets of children announced before the server starts
    report_path: str | None = None
    stats_path: str | None = None
    verbose: bool = False
    parent_pid: int | None = None  # tear the emulation down when this process is gone

    def __post_init__(self) -> None:
        self.core_config()  # validates the numbers
        if self.address is not None:
            Address.parse(self.address)
        self.expect = tuple(self.expect)

    def core_config(self) -> CoreConfig:
        return CoreConfig(deadlock_timeout_s=self.deadlock_timeout_s,
                          stall_check_s=self.stall_check_ms / 1000.0,
                          spawn_timeout_s=self.spawn_timeout_s,
                          exit_when_empty=self.exit_when_empty)


class _Conn:
    __slots__ = ("sock", "reader", "out", "pid", "writing", "closed", "bell_of")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = FrameReader()
        self.out = bytearray()
        self.pid: int | None = None
        self.writing = False
        self.closed = False
        self.bell_of: int | None = None  # a participant's doorbell connection


class TimekeeperServer:
    """The socket loop. ``bind()`` then ``serve()`` (blocks) -> exit status."""

    def __init__(self, config: TimekeeperConfig):
        self.config = config
        self.token = config.token or new_token()
        self.core = Timekeeper(config.core_config(), pid_alive=pid_alive)
        now = time.monotonic()
        for ticket in config.expect:
            self.core.expect_child(ticket, 0.0, now)
        self.address: Address | None = None
        self._listen: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._conns: dict[int, _Conn] = {}  # participant id -> connection
        self._bells: dict[int, _Conn] = {}  # participant id -> its doorbell connection
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop_requested = False
        self._private_dir: str | None = None
        self.exit_status: int | None = None
        self.report: dict | None = None
        self.cpu_s = 0.0
        trace_path = os.environ.get("REVATI_TIMEKEEPER_TRACE")
        self._trace = open(trace_path, "a", buffering=1) if trace_path else None
        self._trace_t0 = now
        self._trace_last: tuple | None = None
        self._launched_pids: list[int] = []  # children the launcher started (group leaders)

    # -- setup ----------------------------------------------------------------------------

    def bind(self) -> Address:
        text = self.config.address
        if text is None:
            self._private_dir = private_dir()
            address = Address("unix", path=os.path.join(self._private_dir, "tk.sock"))
        else:
            address = Address.parse(text)
        if address.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            _remove_stale_socket(address.path)
            sock.bind(address.path)
            os.chmod(address.path, 0o600)
        else:
            family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
            address = Address("tcp", host=address.host, port=sock.getsockname()[1])
        sock.listen(512)
        sock.setblocking(False)
        self._listen = sock
        self.address = address
        self._sel.register(sock, _READ, None)
        self._sel.register(self._wake_r, _READ, None)
        return address

    def request_stop(self) -> None:
        """Thread- and signal-safe."""
        self._stop_requested = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- loop -----------------------------------------------------------------------------

    def serve(self) -> int:
        cpu0 = time.thread_time()
        try:
            status = self._loop()
        except Exception as exc:  # report and exit non-zero; the emulation cannot go on
            print(f"revati timekeeper: internal error: {exc!r}", file=sys.stderr)
            status = EXIT_ERROR
        finally:
            self._shutdown()
            self.cpu_s = time.thread_time() - cpu0
        self.exit_status = status
        self._write_outputs()
        return status

    def _loop(self) -> int:
        core = self.core
        period = core.config.tick_period_s
        next_tick = time.monotonic() + period
        listen = self._listen
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            events = self._sel.select(timeout)
            now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if conn is None:
                    if key.fileobj is listen:
                        self._accept(now)
                    else:
                        try:
                            os.read(self._wake_r, 4096)
                        except OSError:
                            pass
                    continue
                if mask & _READ:
                    self._read(conn, now)
                if mask & _WRITE and not conn.closed:
                    self._flush(conn)
            if self._stop_requested:
                return EXIT_OK
            if now >= next_tick:
                core.tick(now)
                next_tick = now + period
                if self.config.parent_pid is not None and os.getppid() != self.config.parent_pid:
                    self._tear_down()
                    return EXIT_ORPHANED
            core.settle(now)
            if self._trace is not None:
                self._trace_states(now)
            self._dispatch(core.take())
            if core.stopped is not None:
                status, report = core.stopped
                if report is not None:
                    self.report = report
                    print(f"revati timekeeper: {format_report(report)}", file=sys.stderr)
                return status

    def _tear_down(self) -> None:
        # See Note [No orphans] in revati/lifetime.py: revati emulate died (even by SIGKILL).
        pids = [p.pid for p in self.core.participants.values() if p.pid != os.getpid()]
        print(f"revati timekeeper: revati emulate (pid {self.config.parent_pid}) is gone; stopping "
              f"{len(self._launched_pids)} process group(s) and {len(pids)} process(es)", file=sys.stderr)
        stop_process_groups(self._launched_pids, pids)

    def _trace_states(self, now: float) -> None:
        # One line per change of who is running/blocked (REVATI_TIMEKEEPER_TRACE=FILE): where
        # real time goes while the emulation waits on a silent participant.
        core = self.core
        states = tuple((p.name, p.pid, p.state, p.deadline_ns) for p in core.participants.values())
        key = (states, core.gvt_ns, core.stats.checks, core.stats.probe_rounds)
        if key != self._trace_last:
            self._trace_last = key
            self._trace.write(json.dumps({"t_s": round(now - self._trace_t0, 6), "gvt_ns": core.gvt_ns,
                                          "checks": core.stats.checks, "rounds": core.stats.probe_rounds,
                                          "states": states}) + "\n")

    def _accept(self, now: float) -> None:
        while True:
            try:
                sock, _ = self._listen.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    print("revati timekeeper: out of file descriptors", file=sys.stderr)
                return
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sel.register(sock, _READ, _Conn(sock))

    def _read(self, conn: _Conn, now: float) -> None:
        try:
            data = conn.sock.recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn, now)
            return
        core = self.core
        try:
            for body in conn.reader.feed(data):
                if conn.bell_of is not None:
                    raise ProtocolError("a doorbell connection only listens")
                if conn.pid is None:
                    self._handshake(conn, body, now)
                    if conn.closed:
                        return
                    continue
                msg = decode(body, C2S)
                if msg[0] == "spawn_pid" and conn.pid in core.controls:
                    self._launched_pids.append(msg[2])
                core.message(conn.pid, msg, now)
                if conn.pid not in core.participants and conn.pid not in core.controls:
                    self._close(conn, now)  # said bye
                    return
        except (ProtocolError, ProtocolViolation) as exc:
            print(f"revati timekeeper: dropping connection {conn.pid}: {exc}", file=sys.stderr)
            self._close(conn, now)

    def _handshake(self, conn: _Conn, body: bytes, now: float) -> None:
        token, rest = split_handshake(body)
        if not hmac.compare_digest(token, self.token.encode()):
            conn.out += encode(("refused", self.core.gvt_ns, "wrong token"))
            self._flush(conn)
            self._close(conn, now)
            return
        msg = decode(rest, C2S)
        if msg[0] == "doorbell":
            owner = msg[1]
            if owner not in self.core.participants or owner in self._bells:
                raise ProtocolError(f"no participant {owner} to ring")
            conn.bell_of = owner
            self._bells[owner] = conn
            conn.out += encode(("welcome", self.core.gvt_ns, owner, 0))
            self._flush(conn)
            return
        if msg[0] != "register":
            raise ProtocolError(f"first message is {msg[0]!r}, not 'register'")
        _, name, pid, ppid, start_lvt, ticket, role = msg
        conn.pid = self.core.register(name, pid, ppid, start_lvt, ticket, role, now)
        self._conns[conn.pid] = conn
        if self.config.verbose:
            print(f"revati timekeeper: {role} {name!r} pid {pid} registered as {conn.pid}",
                  file=sys.stderr)

    def _dispatch(self, outputs: list[tuple[int, tuple]]) -> None:
        if not outputs:
            return
        touched = []
        conns = self._conns
        bells = self._bells
        for pid, msg in outputs:
            # Stall checks go to the doorbell: see Note [Virtual time coordination].
            conn = (msg[0] == "check" and bells.get(pid)) or conns.get(pid)
            if conn is None or conn.closed:
                continue
            if not conn.out:
                touched.append(conn)
            conn.out += encode(msg)
        for conn in touched:
            self._flush(conn)

    def _flush(self, conn: _Conn) -> None:
        if conn.out:
            try:
                sent = conn.sock.send(conn.out)
                del conn.out[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                conn.out.clear()
        want = _READ | _WRITE if conn.out else _READ
        if conn.writing != bool(conn.out) and not conn.closed:
            conn.writing = bool(conn.out)
            self._sel.modify(conn.sock, want, conn)

    def _close(self, conn: _Conn, now: float) -> None:
        if conn.closed:
            return
        conn.closed = True
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn.bell_of is not None:
            if self._bells.get(conn.bell_of) is conn:
                del self._bells[conn.bell_of]
            return
        if conn.pid is not None:
            bell = self._bells.get(conn.pid)
            if bell is not None:
                self._close(bell, now)
            self._conns.pop(conn.pid, None)
            self.core.disconnect(conn.pid, now)
            if self.config.verbose:
                print(f"revati timekeeper: {conn.pid} left", file=sys.stderr)

    def _shutdown(self) -> None:
        # Let pending messages (the deadlock notice) reach the clients, then close everything.
        deadline = time.monotonic() + FLUSH_ON_STOP_S
        pending = [c for c in self._conns.values() if c.out and not c.closed]
        while pending and time.monotonic() < deadline:
            for conn in pending:
                conn.sock.setblocking(True)
                conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    conn.sock.sendall(conn.out)
                except OSError:
                    pass
                conn.out.clear()
            pending = []
        for key in list(self._sel.get_map().values()):
            if isinstance(key.data, _Conn):
                key.data.sock.close()
        self._sel.close()
        if self._listen is not None:
            self._listen.close()
        if self.address is not None and self.address.kind == "unix":
            try:
                os.unlink(self.address.path)
            except OSError:
                pass
        if self._private_dir is not None:
            try:
                os.rmdir(self._private_dir)
            except OSError:
                pass
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _write_outputs(self) -> None:
        if self.config.report_path and self.report is not None:
            _write_json(self.config.report_path, self.report)
        if self.config.stats_path:
            stats = {"exit_status": self.exit_status, "cpu_s": self.cpu_s,
                     "gvt_ns": self.core.gvt_ns, **asdict(self.core.stats)}
            _write_json(self.config.stats_path, stats)


def _write_json(path: str, data: dict) -> None:
    # Temp file + rename, like revati.parquet_io.atomic_write_bytes, which this process does
    # not import: that module loads pyarrow (and numpy), a heavy start for the timekeeper.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def private_dir() -> str:
    """A fresh 0700 directory for the socket, short enough for a Unix socket path."""
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = "/tmp"
    return tempfile.mkdtemp(prefix="revati-tk-", dir=base)


def _remove_stale_socket(path: str) -> None:
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a leftover of a crashed timekeeper
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"a timekeeper already listens at {path}")


# -- command line -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m revati.shim.coord.server",
                                description="revati's timekeeper (one per emulation).")
    p.add_argument("--address", default=None,
                   help="unix:PATH, a socket path, or HOST:PORT (default: a private socket)")
    p.add_argument("--deadlock-timeout-s", type=float, default=10.0,
                   help="real seconds everybody must stay blocked without deadline")
    p.add_argument("--stall-check-ms", type=float, default=100.0,
                   help="real ms a running process may stay silent before a stall check")
    p.add_argument("--spawn-timeout-s", type=float, default=600.0,
                   help="real seconds an announced child may take to register")
    p.add_argument("--expect", action="append", default=[], metavar="TICKET",
                   help="a child that will register with this ticket (repeatable)")
    p.add_argument("--exit-when-empty", action="store_true",
                   help="stop once every participant has left")
    p.add_argument("--report", default=None, help="write the deadlock report (JSON) here")
    p.add_argument("--stats", default=None, help="write counters and CPU time (JSON) here")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--parent-pid", type=int, default=None,
                   help="stop the emulation's processes and exit when this process is gone")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    token = os.environ.get(ENV_TOKEN)
    try:
        config = TimekeeperConfig(
            address=args.address, token=token, deadlock_timeout_s=args.deadlock_timeout_s,
            stall_check_ms=args.stall_check_ms, spawn_timeout_s=args.spawn_timeout_s,
            exit_when_empty=args.exit_when_empty, expect=tuple(args.expect),
            report_path=args.report, stats_path=args.stats, verbose=args.verbose,
            parent_pid=args.parent_pid)
        server = TimekeeperServer(config)
        address = server.bind()
    except Exception as exc:  # bad address, address in use, bad numbers
        print(f"revati timekeeper: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.request_stop())
    if args.parent_pid is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher stops us after the program
        if os.getppid() != args.parent_pid:  # it died while we started
            return EXIT_ORPHANED
    # `kill -USR1 <timekeeper pid>`: print everybody's state (a stuck emulation's first clue).
    signal.signal(signal.SIGUSR1, lambda *_: print(json.dumps(server.core.report(), indent=1, default=str),
                                                   file=sys.stderr, flush=True))
    ready: dict[str, Any] = {"address": str(address), "pid": os.getpid()}
    if token is None:
        ready["token"] = server.token
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    status = server.serve()
    if status == EXIT_ORPHANED:
        # Nobody is left to read the report and stats: remove the launcher's private folder.
        for path in {os.path.dirname(p) for p in (args.report, args.stats) if p}:
            if os.path.basename(path).startswith("revati-tk-"):
                shutil.rmtree(path, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
