"""Run a sweep's commands: in parallel on this machine, resumable, with a status file per run.

A run's folder ``<sweep_dir>/runs/<run_id>/`` holds ``run.json`` (configuration, command,
status, exit code, attempts, wall time), ``stdout.log``/``stderr.log``, and whatever the command
wrote -- ``metrics.json`` above all. A run counts as done when its command exited 0 and
``metrics.json`` exists. On a rerun, done runs are skipped, failed runs are skipped unless
``retry_failed``, and runs that never finished (interrupted) are run again.

Executors: :class:`LocalExecutor` (a thread pool of subprocesses, ``jobs`` at a time) and
``revati.sweep.ray_executor.RayExecutor`` (one Ray task per run). Both run each command in a
fresh process, never a fork of this one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol

from revati.metrics.result import METRICS_FILE
from revati.parquet_io import atomic_write_bytes
from revati.sweep.plan import PORT_MARK, RunSpec

RUN_FILE = "run.json"
STATUS_OK, STATUS_FAILED, STATUS_RUNNING = "ok", "failed", "running"
_MAX_RETURNED_BYTES = 64 << 20     # files a remote run sends back


@dataclass
class RunOutcome:
    run_id: str
    status: str                     # ok | failed | skipped-ok | skipped-failed
    exit_code: int | None = None
    wall_s: float | None = None
    error: str = ""
    files: dict[str, bytes] = field(default_factory=dict, repr=False)  # remote runs only
    node: str = ""                  # where it ran, for executors with several machines (Ray)


def run_dir_of(sweep_dir: Path, run_id: str) -> Path:
    return Path(sweep_dir) / "runs" / run_id


def read_run_state(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def write_run_state(run_dir: Path, spec: RunSpec, status: str, attempts: int, **more) -> None:
    state = {"run_id": spec.run_id, "status": status, "attempts": attempts, "config": spec.config,
             "command": spec.command(str(run_dir), port=PORT_MARK), **more}
    atomic_write_bytes(run_dir / RUN_FILE, (json.dumps(state, indent=2) + "\n").encode())


def is_done(run_dir: Path) -> bool:
    state = read_run_state(run_dir)
    return bool(state and state.get("status") == STATUS_OK and (run_dir / METRICS_FILE).exists())


def execute_command(argv: list[str], cwd: Path, env: dict[str, str], timeout_s: float | None,
                    stdout_path: Path, stderr_path: Path) -> tuple[int | None, float, str]:
    """Run one command in a fresh process; return (exit code or None, wall seconds, error)."""
    t0 = time.perf_counter()
    try:
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            proc = subprocess.run(argv, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=err,
                                  stdin=subprocess.DEVNULL, timeout=timeout_s, check=False)
        return proc.returncode, time.perf_counter() - t0, ""
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, f"timed out after {timeout_s:g} s"
    except OSError as exc:
        return None, time.perf_counter() - t0, f"cannot start {argv[0]!r}: {exc}"


def execute_in_tempdir(argv_template: tuple[str, ...], env: dict[str, str], timeout_s: float | None) -> dict:
    """Run a command in a fresh temporary run folder and return its exit code and files --
    for executors whose workers do not share this machine's disk (Ray)."""
    spec = RunSpec("remote", {}, argv_template)
    tmp = Path(tempfile.mkdtemp(prefix="revati-run-"))
    try:
        code, wall_s, error = execute_command(spec.command(str(tmp)), tmp, env, timeout_s,
                                              tmp / "stdout.log", tmp / "stderr.log")
        files: dict[str, bytes] = {}
        total = 0
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                size = p.stat().st_size
                if total + size > _MAX_RETURNED_BYTES:
                    error = error or f"run folder over {_MAX_RETURNED_BYTES >> 20} MiB: {p.name} and later files dropped"
                    continue
                total += size
                files[str(p.relative_to(tmp))] = p.read_bytes()
        return {"exit_code": code, "wall_s": wall_s, "error": error, "files": files}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Executor(Protocol):
    def run(self, specs: list[RunSpec], sweep_dir: Path, on_done: Callable[[RunOutcome], None]) -> None: ...


@dataclass
class LocalExecutor:
    jobs: int = 1
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float | None = None

    def run(self, specs: list[RunSpec], sweep_dir: Path, on_done: Callable[[RunOutcome], None]) -> None:
        def one(spec: RunSpec) -> RunOutcome:
            run_dir = run_dir_of(sweep_dir, spec.run_id)
            code, wall_s, error = execute_command(spec.command(str(run_dir)), run_dir, self.env, self.timeout_s,
                                                  run_dir / "stdout.log", run_dir / "stderr.log")
            return RunOutcome(spec.run_id, "", code, wall_s, error)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(one, s) for s in specs]
            for fut in as_completed(futures):
                on_done(fut.result())


@dataclass
class SweepRunReport:
    ran: list[RunOutcome] = field(default_factory=list)
    skipped_ok: list[str] = field(default_factory=list)
    skipped_failed: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.ran if o.status == STATUS_FAILED]


def run_all(
    specs: Iterable[RunSpec],
    sweep_dir: Path,
    executor: Executor,
    retry_failed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SweepRunReport:
    """Run every spec that is not done yet; record each outcome in its run.json."""
    report = SweepRunReport()
    todo: list[RunSpec] = []
    attempts: dict[str, int] = {}
    by_id = {}
    for spec in specs:
        by_id[spec.run_id] = spec
        run_dir = run_dir_of(sweep_dir, spec.run_id)
        state = read_run_state(run_dir)
        if is_done(run_dir):
            report.skipped_ok.append(spec.run_id)
            continue
        if state and state.get("status") == STATUS_FAILED and not retry_failed:
            report.skipped_failed.append(spec.run_id)
            continue
        attempts[spec.run_id] = int((state or {}).get("attempts", 0)) + 1
        run_dir.mkdir(parents=True, exist_ok=True)
        # A retried run starts from an empty folder: no stale metrics.json can pass for a result.
        stale = run_dir / METRICS_FILE
        if stale.exists():
            stale.unlink()
        write_run_state(run_dir, spec, STATUS_RUNNING, attempts[spec.run_id])
        todo.append(spec)
    total = len(todo)
    if progress:
        progress(0, total)

    def on_done(outcome: RunOutcome) -> None:
        spec = by_id[outcome.run_id]
        run_dir = run_dir_of(sweep_dir, spec.run_id)
        for rel, data in outcome.files.items():
            target = (run_dir / rel).resolve()
            if run_dir.resolve() in target.parents:
                atomic_write_bytes(target, data)
        ok = outcome.exit_code == 0 and (run_dir / METRICS_FILE).exists()
        if outcome.exit_code == 0 and not ok and not outcome.error:
            outcome.error = f"exited 0 but wrote no {METRICS_FILE}"
        elif outcome.exit_code not in (0, None) and not outcome.error:
            outcome.error = f"exit code {outcome.exit_code}"
        outcome.status = STATUS_OK if ok else STATUS_FAILED
        outcome.files = {}
        write_run_state(run_dir, spec, outcome.status, attempts[spec.run_id], exit_code=outcome.exit_code,
                        wall_s=outcome.wall_s, error=outcome.error, **({"node": outcome.node} if outcome.node else {}))
        report.ran.append(outcome)
        if progress:
            progress(len(report.ran), total)

    if todo:
        executor.run(todo, sweep_dir, on_done)
    return report
