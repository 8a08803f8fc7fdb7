"""Run a command under emulation: every Python process it starts gets the shim.

The launcher owns the emulation's lifetime: it prepares the injected environment (revati/inject.py),
starts the timekeeper when one is needed, runs the command in its own process group (so nothing
is left behind on Ctrl-C, a crash or a deadlock), and gathers each process's summary. Whatever
ends revati (Ctrl-C, SIGTERM, SIGHUP, even SIGKILL) ends everything it started: see Note [No
orphans] in revati/lifetime.py. Its temporary folders are removed on the way out.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from revati.errors import EmulationError
from revati.inject import injection_env
from revati.lifetime import termination_signals, tie_to_parent
from revati.shim import stop_signals
from revati.shim.config import EmulationConfig
from revati.shim.sockets import EMU_DIR_ENV
from revati.shim.vtime import EPOCH_ENV, MONO_ENV


@dataclass
class EmulationResult:
    returncode: int
    wall_s: float
    processes: list[dict[str, Any]] = field(default_factory=list)
    deadlock: dict[str, Any] | None = None     # the timekeeper's report, if it stopped the run
    timekeeper: dict[str, Any] | None = None   # its counters

    @property
    def virtual_s(self) -> float:
        """The emulated processes' longest virtual run."""
        return max((p.get("virtual_now_ns", 0) for p in self.processes), default=0) / 1e9

    @property
    def host_time_share(self) -> float | None:
        """Of the processes' virtual time, the part that was measured host CPU (0..1)."""
        virtual = sum(p.get("virtual_now_ns", 0) for p in self.processes)
        host = sum(p.get("host_cpu_ns", 0) for p in self.processes)
        return min(1.0, host / virtual) if virtual > 0 else None

    def wall_breakdown(self) -> dict:
        """Note [Wall-time breakdown], summed over the processes that reported one."""
        from revati.shim.breakdown import run_breakdown

        return run_breakdown(self.processes, self.wall_s)

    def hooks_not_fired(self) -> list[str]:
        """Engine import hooks that fired in no process (Note [Patch registry])."""
        from revati.shim.patching import hooks_not_fired_in_run

        return hooks_not_fired_in_run([p["explain"] for p in self.processes if "explain" in p])

    @property
    def fallback_op_count(self) -> int:
        return sum(p.get("fallback_op_count", 0) for p in self.processes)


def emulation_env(cfg: EmulationConfig, base_env: dict[str, str] | None = None) -> dict[str, str]:
    env = injection_env("emulate", cfg.to_json(), base_env)
    env.setdefault(EPOCH_ENV, str(time.time_ns()))
    env.setdefault(MONO_ENV, str(time.monotonic_ns()))
    # One intra-op thread: real CPU work in an emulated process is the program's own host work,
    # and several emulated processes share this machine's cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


DEADLOCK_EXIT = 3  # the timekeeper's exit status after a deadlock


def explain_patches(cfg: EmulationConfig, timeout_s: float = 300.0) -> dict:
    """What activation patches in an emulated Python process and which import hooks it
    registers (Note [Patch registry]): one throwaway interpreter, activated as the program's
    would be. Which hooks fire depends on what the program imports: a run's processes report
    that (their summaries' ``explain``)."""
    probe = ("import json; from revati.shim import patching, runtime; "
             "assert runtime.active(), 'not activated'; print('EXPLAIN ' + json.dumps(patching.explain()))")
    proc = subprocess.run([sys.executable, "-c", probe], env=emulation_env(cfg), capture_output=True,
                          text=True, timeout=timeout_s)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("EXPLAIN ")]
    if proc.returncode != 0 or not lines:
        raise EmulationError(f"activating an emulated interpreter failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(lines[-1][len("EXPLAIN "):])


def run(cmd: list[str], cfg: EmulationConfig, cwd: str | None = None,
        base_env: dict[str, str] | None = None, timeout_s: float | None = None,
        deadlock_timeout_s: float = 30.0, client_cmd: list[str] | None = None,
        server_stop_timeout_s: float = 30.0, serve_port: int | None = None) -> EmulationResult:
    """Run ``cmd`` under emulation with a timekeeper coordinating all of its processes.

    With ``client_cmd``, ``cmd`` is a server: the client runs beside it under the same
    timekeeper; when the client exits the server is stopped (SIGTERM, then SIGKILL after
    ``server_stop_timeout_s``), and the run's exit status is the client's. With ``serve_port``
    the client starts once the server listens there, as a user starts a benchmark after the
    server says it is ready (clients with no ready check of their own, such as `vllm bench
    serve`, found the port closed); if the server exits first, the client never starts and the
    run's exit status is the server's.
    """
    from revati.shim.coord.handle import start_timekeeper
    from revati.shim.coord.server import TimekeeperConfig

    with contextlib.ExitStack() as cleanup, termination_signals():
        stats_dir = cfg.stats_dir
        if stats_dir is None:
            stats_dir = cfg.stats_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="revati-stats-"))
        Path(stats_dir).mkdir(parents=True, exist_ok=True)
        env = emulation_env(cfg, base_env)
        # the registry of endpoints (Note in revati/shim/sockets.py)
        env[EMU_DIR_ENV] = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="revati-emu-"))
        tk = start_timekeeper(TimekeeperConfig(deadlock_timeout_s=deadlock_timeout_s, parent_pid=os.getpid()))
        t0 = time.monotonic()
        procs: list[subprocess.Popen] = []
        deadlock = None
        try:
            for command in ([cmd, client_cmd] if client_cmd else [cmd]):
                if command is client_cmd and serve_port is not None and not _wait_listening(serve_port, procs[0], tk):
                    break
                ticket = tk.expect_child(timeout_s=120.0)
                child_env = dict(env, **tk.env(ticket))
                procs.append(subprocess.Popen(command, env=child_env, cwd=cwd, start_new_session=True,
                                              preexec_fn=tie_to_parent()))
                tk.child_started(ticket, procs[-1].pid)
            main = procs[-1]
            returncode = _wait(main, tk, timeout_s)
            if tk.exit_status == DEADLOCK_EXIT:
                deadlock = tk.deadlock_report or {"error": "deadlock (no report)"}
                returncode = DEADLOCK_EXIT
            if client_cmd and deadlock is None:
                server = procs[0]
                if server.poll() is None:
                    stop_signals.request_reports(Path(stats_dir), server.pid)
                    os.killpg(server.pid, signal.SIGTERM)
                    try:
                        server.wait(timeout=server_stop_timeout_s)
                    except subprocess.TimeoutExpired:
                        pass
        except BaseException:
            for p in procs:
                _kill_group(p)
            raise
        finally:
            for p in procs:
                _kill_group(p, only_leftovers=deadlock is None and p is procs[-1])
            tk.stop()
        wall = time.monotonic() - t0
        processes = []
        for f in sorted(Path(stats_dir).glob("process-*.json")):
            try:
                processes.append(json.loads(f.read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return EmulationResult(returncode, wall, processes, deadlock, tk.stats)


LISTEN_WAIT_NOTICE_S = 120.0


def _wait_listening(port: int, server: subprocess.Popen, tk) -> bool:
    """Wait (real time) until a socket listens on TCP ``port``; False if the server exits or
    the timekeeper stops first. Read from /proc/net/tcp{,6}, not by connecting: a connection from
    outside the emulation would be a peer the server's virtual I/O cannot account for."""
    t0 = time.monotonic()
    noticed = False
    while not _listening(port):
        if server.poll() is not None or tk.exit_status is not None:
            return False
        if not noticed and time.monotonic() - t0 > LISTEN_WAIT_NOTICE_S:
            noticed = True
            print(f"revati: still waiting for the server to listen on port {port} before starting the client "
                  "(does --serve-port match the server's port?)", file=sys.stderr, flush=True)
        time.sleep(0.1)
    return True


def _listening(port: int) -> bool:
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(want):   # 0A: LISTEN
                return True
    return False


def _wait(proc: subprocess.Popen, tk, timeout_s: float | None) -> int:
    """Wait for the command, or for the timekeeper to stop it (a deadlock)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            pass
        if tk.exit_status is not None:
            return proc.poll() if proc.poll() is not None else DEADLOCK_EXIT
        if deadline is not None and time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout_s)


def _kill_group(proc: subprocess.Popen, only_leftovers: bool = False) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid
    if only_leftovers and proc.poll() is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)
    if proc.poll() is None:
        proc.wait(timeout=5)
