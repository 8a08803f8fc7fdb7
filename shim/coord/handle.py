"""Starting a timekeeper and talking to it from the launcher: ``start_timekeeper``, its handle.

``start_timekeeper`` runs ``python -m revati.shim.coord.server`` as a child process (what
``revati emulate`` uses) or a ``TimekeeperServer`` in a thread of this process (tests), and
returns a ``TimekeeperHandle``: the address and token to hand to the emulated processes, child
announcements over a control connection, and the exit status, deadlock report and stats once
it stopped.

Example::

    handle = start_timekeeper(TimekeeperConfig(deadlock_timeout_s=5), mode="process")
    env = {**os.environ, **handle.env(ticket=handle.expect_child())}
    proc = subprocess.Popen(cmd, env=env)      # its shim calls Coordinator.from_env(...)
    status = handle.stop()                     # or handle.wait(); handle.deadlock_report
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from revati.errors import TimekeeperLost
from revati.shim.coord.core import EXIT_ERROR
from revati.shim.coord.server import TimekeeperConfig, TimekeeperServer, private_dir
from revati.shim.coord.wire import ENV_ADDRESS, ENV_TICKET, ENV_TOKEN, Address, encode, new_token


@dataclass
class TimekeeperHandle:
    """A running timekeeper (a child process or a thread of this process)."""

    address: str
    token: str
    mode: str
    _proc: subprocess.Popen | None = None
    _server: TimekeeperServer | None = None
    _thread: threading.Thread | None = None
    _files_dir: str | None = None
    _report_path: str | None = None
    _stats_path: str | None = None
    _control: Any = None
    _control_lock: threading.Lock = field(default_factory=threading.Lock)
    _outputs: dict | None = None  # report and stats, read before the private folder is removed

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else os.getpid()

    def env(self, ticket: str | None = None) -> dict[str, str]:
        """Environment variables that make a shimmed process register with this timekeeper."""
        env = {ENV_ADDRESS: self.address, ENV_TOKEN: self.token}
        if ticket is not None:
            env[ENV_TICKET] = ticket
        return env

    # children announced by the launcher (which is not a participant)

    def expect_child(self, ticket: str | None = None, timeout_s: float | None = None) -> str:
        """Announce a child: GVT waits until it registers with the returned ticket."""
        ticket = ticket or f"launch-{new_token()[:12]}"
        self._control_send(("spawn", ticket, float(timeout_s or 0.0)))
        return ticket

    def child_started(self, ticket: str, pid: int) -> None:
        self._control_send(("spawn_pid", ticket, pid))

    def cancel_child(self, ticket: str) -> None:
        self._control_send(("spawn_cancel", ticket))

    def _control_send(self, msg: tuple) -> None:
        from revati.shim.coord.client import open_connection

        with self._control_lock:
            if self._control is None:
                register = ("register", "launcher", os.getpid(), os.getppid(), None, None,
                            "control")
                self._control = open_connection(Address.parse(self.address), self.token,
                                                register)[0]
            try:
                self._control.sendall(encode(msg))
            except OSError as exc:
                raise TimekeeperLost(self.address, f"control connection: {exc}") from None

    # lifetime

    def wait(self, timeout_s: float | None = None) -> int | None:
        """The exit status once the timekeeper stopped, or None after the timeout."""
        if self._proc is not None:
            try:
                status = self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                return None
            self._remove_files()  # it exited on its own: nothing more will be written there
            return status
        self._thread.join(timeout_s)
        return None if self._thread.is_alive() else self._server.exit_status

    def stop(self, timeout_s: float = 10.0) -> int:
        """Stop (if still running) and return the exit status."""
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
            try:
                status = self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                status = self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._remove_files()
            return status
        self._server.request_stop()
        self._thread.join(timeout_s)
        return self._server.exit_status if self._server.exit_status is not None else EXIT_ERROR

    def _remove_files(self) -> None:
        # Nothing left behind in /tmp (one revati-tk-* folder per run used to stay): keep what
        # the properties below report, then remove the private folder.
        if self._outputs is None:
            self._outputs = {"report": _read_json(self._report_path), "stats": _read_json(self._stats_path)}
        if self._files_dir is not None:
            shutil.rmtree(self._files_dir, ignore_errors=True)

    @property
    def exit_status(self) -> int | None:
        if self._proc is not None:
            return self._proc.poll()
        return None if self._thread.is_alive() else self._server.exit_status

    @property
    def deadlock_report(self) -> dict | None:
        if self._server is not None:
            return self._server.report
        if self._outputs is not None:
            return self._outputs["report"]
        return _read_json(self._report_path)

    @property
    def stats(self) -> dict | None:
        """Counters and CPU time, once stopped."""
        if self._server is not None:
            if self._thread.is_alive():
                return None
            return {"exit_status": self._server.exit_status, "cpu_s": self._server.cpu_s,
                    "gvt_ns": self._server.core.gvt_ns, **asdict(self._server.core.stats)}
        if self._outputs is not None:
            return self._outputs["stats"]
        return _read_json(self._stats_path)


def _read_json(path: str | None) -> dict | None:
    if path is None or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def start_timekeeper(config: TimekeeperConfig | None = None, mode: str = "process",
                     ready_timeout_s: float = 30.0) -> TimekeeperHandle:
    """Start a timekeeper and return once it listens.

    ``mode="process"``: ``python -m revati.shim.coord.server`` as a child process (what
    ``revati emulate`` uses: its own GIL, never emulated). ``mode="thread"``: a thread of this
    process (tests).
    """
    config = config or TimekeeperConfig()
    if mode == "thread":
        server = TimekeeperServer(config)
        address = server.bind()
        thread = threading.Thread(target=server.serve, name="revati-timekeeper", daemon=True)
        thread.start()
        return TimekeeperHandle(str(address), server.token, mode, _server=server, _thread=thread)
    if mode != "process":
        raise ValueError(f"mode must be 'process' or 'thread', got {mode!r}")
    token = config.token or new_token()
    files_dir = private_dir()
    address = config.address or f"unix:{os.path.join(files_dir, 'tk.sock')}"
    report_path = config.report_path or os.path.join(files_dir, "deadlock.json")
    stats_path = config.stats_path or os.path.join(files_dir, "stats.json")
    args = [sys.executable, "-m", "revati.shim.coord.server", "--address", address,
            "--deadlock-timeout-s", repr(config.deadlock_timeout_s),
            "--stall-check-ms", repr(config.stall_check_ms),
            "--spawn-timeout-s", repr(config.spawn_timeout_s),
            "--report", report_path, "--stats", stats_path]
    for ticket in config.expect:
        args += ["--expect", ticket]
    if config.exit_when_empty:
        args.append("--exit-when-empty")
    if config.verbose:
        args.append("--verbose")
    if config.parent_pid is not None:
        args += ["--parent-pid", str(config.parent_pid)]
    env = dict(os.environ)
    env.pop("REVATI_INJECT", None)  # the timekeeper runs on the real clock
    env[ENV_TOKEN] = token
    # cwd: ``-m`` puts the working directory first on sys.path; an empty private one keeps a
    # stray ``revati/`` folder there (another checkout) from shadowing the installed package.
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=files_dir)
    line = _read_ready_line(proc, ready_timeout_s)
    if line is None:
        proc.kill()
        proc.wait()
        shutil.rmtree(files_dir, ignore_errors=True)
        raise TimekeeperLost(address, f"the timekeeper did not start (exit {proc.returncode})")
    ready = json.loads(line)
    return TimekeeperHandle(ready["address"], token, mode, _proc=proc, _files_dir=files_dir,
                            _report_path=report_path, _stats_path=stats_path)


def _read_ready_line(proc: subprocess.Popen, timeout_s: float) -> str | None:
    import select

    deadline = time.monotonic() + timeout_s
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None and not select.select([fd], [], [], 0)[0]:
            return None
        if select.select([fd], [], [], min(left, 0.5))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()
