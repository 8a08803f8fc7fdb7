"""Run one command under the tracer and leave a complete run folder behind.

``revati trace`` (revati/cli/trace.py) is a thin layer over :func:`run_trace`::

    from revati.tracer.config import TraceConfig
    from revati.tracer.run import run_trace, new_run_id, resolve_run_dir

    run_id = new_run_id()
    cfg = TraceConfig(run_id=run_id, out_dir=str(resolve_run_dir(None, run_id)))
    result = run_trace(cfg, ["python", "bench.py"])
    print(result.run_dir, result.rows)

Steps: check that every chosen backend can run here (clear errors before anything starts),
attach bpf probes if asked, start the command with the tracer injected into every Python
process, wait for it and for every process it started, then write the bpf tables, the ``runs``
row, the bpf<->runtime launch join and the ``op_samples`` derived from the run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from revati import inject, parquet_io, run_folder, tables
from revati.errors import BadInput, TraceError
from revati.lifetime import tie_to_parent
from revati.paths import user_traces_dir
from revati.tracer import cuda_libs, steps
from revati.tracer.config import TraceConfig

NO_DEVICE_TIMING = "no device timing: no CUDA kernels were recorded"
DESCENDANT_WAIT_S = 60.0


@dataclass
class TraceResult:
    run_id: str
    run_dir: Path
    exit_code: int
    rows: dict[str, int] = field(default_factory=dict)
    device_timing: bool = False
    notes: list[str] = field(default_factory=list)
    processes: int = 0
    op_samples: int = 0
    bpf_libraries: list[str] = field(default_factory=list)
    duration_s: float = 0.0


def new_run_id() -> str:
    host = socket.gethostname().split(".")[0] or "host"
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in host)[:32]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{secrets.token_hex(3)}"


def resolve_run_dir(out_dir: str | os.PathLike | None, run_id: str) -> Path:
    return Path(out_dir).expanduser() if out_dir else user_traces_dir() / run_id


def prepare_run_dir(run_dir: Path) -> Path:
    """Create the run folder; refuse one that already holds a trace or cannot be written."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise BadInput(run_dir, "exists and is not a folder")
    if run_folder.holds_trace(run_dir):
        raise BadInput(run_dir, "already holds a trace; choose another -o folder or delete this one")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=run_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInput(run_dir, f"cannot write the trace here ({exc.strerror or exc})") from None
    return run_dir


def check_command(cmd: list[str]) -> None:
    if not cmd:
        raise BadInput("command", "nothing to trace: put the command after `--` (revati trace -- python app.py)")
    exe = cmd[0]
    if os.sep in exe:
        if not os.path.exists(exe):
            raise BadInput(exe, "no such file")
        if not os.access(exe, os.X_OK):
            raise BadInput(exe, "not executable")
    elif shutil.which(exe) is None:
        raise BadInput(exe, "command not found on PATH")


def check_backends(config: TraceConfig) -> None:
    """Fail before starting anything when a chosen backend cannot run here."""
    if "cupti" in config.backends:
        from revati.tracer import cupti_backend

        cupti_backend.check_available()
    if "bpf" in config.backends:
        from revati.tracer import bpf_backend

        bpf_backend.check_available()


def run_trace(config: TraceConfig, cmd: list[str], *, log: Callable[[str], None] = lambda _m: None) -> TraceResult:
    check_command(cmd)
    check_backends(config)
    run_dir = prepare_run_dir(config.run_dir)
    from revati.tracer import nvml

    host_gpu = nvml.query()
    started_at_ns = time.time_ns()
    t0 = time.monotonic()
    env = (inject.injection_env("trace", config.to_dict()) if config.in_process_backend
           else dict(os.environ))
    if config.quiet:
        env.setdefault("KINETO_LOG_LEVEL", "5")   # Kineto's own start/stop lines on stderr

    bpf = None
    if "bpf" in config.backends:
        from revati.tracer.bpf_backend import BpfTracer

        libs = cuda_libs.candidate_libraries(cmd, env, config.bpf_libs)
        log(f"bpf: compiling probes, attaching to {len(libs)} librar{'y' if len(libs) == 1 else 'ies'}")
        bpf = BpfTracer()
        bpf.start(libs)

    log(f"tracing ({'+'.join(config.backends)}) into {run_dir}")
    try:
        # See Note [No orphans] in revati/lifetime.py: even a SIGKILL of revati ends the command.
        proc = subprocess.Popen(cmd, env=env, preexec_fn=tie_to_parent())
    except OSError as exc:
        if bpf is not None:
            bpf.finish()
        raise BadInput(cmd[0], f"cannot start: {exc.strerror or exc}") from None
    if bpf is not None:
        bpf.set_root(proc.pid)
    exit_code, descendants = _wait(proc, bpf)
    leftover = _wait_for_descendants(descendants)
    notes: list[str] = []
    if leftover:
        notes.append(f"{len(leftover)} process(es) of the command outlived it by {DESCENDANT_WAIT_S:.0f} s; "
                     "their tables may be missing")

    result = TraceResult(run_id=config.run_id, run_dir=run_dir, exit_code=exit_code)
    if bpf is not None:
        bpf.finish()
        result.bpf_libraries = [f"{r.library} ({len(r.symbols)} probes, {r.when})" for r in bpf.attached.values()
                                if r.symbols]
        _write_bpf_tables(config, bpf, notes)
    finalize_run(config, cmd, started_at_ns, host_gpu, env, notes, result)
    result.duration_s = time.monotonic() - t0
    return result


def _wait(proc: subprocess.Popen, bpf) -> tuple[int, set[int]]:
    """Wait for the command (polling bpf events meanwhile) and let it end on its own terms.

    Ctrl-C reaches the command from the terminal (same process group); revati ignores it and
    waits for the command to finish writing its tables; forwarding it again could interrupt
    that. SIGTERM and SIGHUP, sent to revati alone, are passed on to the command.
    """
    descendants: set[int] = set()
    forwarded = {}

    def forward(signum, _frame):
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    for sig, handler in ((signal.SIGINT, lambda _s, _f: None), (signal.SIGTERM, forward),
                         (signal.SIGHUP, forward)):
        try:
            forwarded[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass
    last_scan = 0.0
    try:
        while proc.poll() is None:
            if bpf is not None:
                bpf.poll(100)
            else:
                try:
                    proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    pass
            now = time.monotonic()
            if now - last_scan > 0.5:
                last_scan = now
                descendants |= cuda_libs.process_tree(proc.pid) - {proc.pid}
    finally:
        for sig, handler in forwarded.items():
            signal.signal(sig, handler)
    return proc.returncode, descendants


def _wait_for_descendants(pids: set[int]) -> set[int]:
    """Engine workers may still be writing their tables when the command's main process exits."""
    deadline = time.monotonic() + DESCENDANT_WAIT_S
    alive = {p for p in pids if _alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {p for p in alive if _alive(p)}
    return alive


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _write_bpf_tables(config: TraceConfig, bpf, notes: list[str]) -> None:
    from revati.tracer import bpf_backend

    run_marks = steps.read_run_marks(config.run_dir)
    per_pid: dict[int, steps.StepMarks] = {}

    def assign_for_pid(pid: int):
        # a process's own marks, else the run's (Note [Step marks cross processes])
        marks_file = config.run_dir / f"{steps.MARKS_PREFIX}{pid}.jsonl"
        marks = (steps.parse_mark_lines(marks_file.read_text().splitlines()) if marks_file.exists()
                 else steps.StepMarks())
        per_pid[pid] = marks if not marks.empty else run_marks
        return per_pid[pid].assigner()

    min_step = config.warmup_steps if config.warmup_steps > 0 and not run_marks.empty else None
    rows, stats = bpf_backend.decode(bpf.events, config.run_id, bpf.offset_ns, bpf.names,
                                     assign_for_pid=assign_for_pid, min_step=min_step)
    by_pid: dict[int, dict[str, list]] = {}
    for table, table_rows in rows.items():
        for row in table_rows:
            by_pid.setdefault(row["pid"], {t: [] for t in rows})[table].append(row)
    if bpf.root_pid is not None and bpf.root_pid not in by_pid:
        by_pid[bpf.root_pid] = {t: [] for t in rows}
    for pid, pid_rows in by_pid.items():
        run_folder.write_process_tables(config.run_dir, tables.rows_to_tables(pid_rows), "bpf", pid)
    if stats["nested_driver_calls_folded"]:
        notes.append(f"bpf: {stats['nested_driver_calls_folded']} driver launch(es) made inside runtime "
                     "launches folded into them")
    if bpf.dropped_foreign:
        notes.append(f"bpf: {bpf.dropped_foreign} event(s) from processes outside the command ignored")
    if not bpf.attached or not any(r.symbols for r in bpf.attached.values()):
        notes.append("bpf: no CUDA runtime/driver library was found to probe (give one with --bpf-lib)")


def finalize_run(config: TraceConfig, cmd: list[str], started_at_ns: int, host_gpu: dict | None,
                 env: dict[str, str], notes: list[str], result: TraceResult) -> None:
    """Write runs.parquet, join bpf launches to runtime ones, derive op_samples; fill ``result``."""
    from revati.tracer import run_meta

    run_dir = config.run_dir
    metas = run_folder.read_proc_metas(run_dir)
    result.processes = len(metas)
    for meta in metas:
        notes.extend(meta.get("notes") or [])
        notes.extend(f"pid {meta.get('pid')}: {e}" for e in meta.get("errors") or [])
    if config.in_process_backend and not metas:
        notes.append(f"no traced Python process {'imported torch' if config.in_process_backend == 'kineto' else 'started'}:"
                     " nothing was recorded in-process")
    for table in run_folder.TRACE_TABLES:
        result.rows[table] = sum(parquet_io.read_table(p, table).num_rows for p in run_folder.table_files(run_dir, table))
    result.device_timing = result.rows.get("kernels", 0) > 0
    if not result.device_timing:
        notes.insert(0, NO_DEVICE_TIMING + (" (no CUDA device visible)" if host_gpu is None else ""))
    if "bpf" in config.backends and config.in_process_backend and result.device_timing:
        _join_bpf(run_dir, notes)

    row = run_meta.build_runs_row(run_id=config.run_id, started_at_ns=started_at_ns, cmd=cmd,
                                  backends=config.backends, host_gpu=host_gpu, metas=metas, env=env, notes=notes,
                                  host_score=_host_score(notes))
    parquet_io.write_table(tables.rows_to_table("runs", [row]), "runs", run_dir / run_folder.RUNS_FILE)
    result.notes = [n for n in dict.fromkeys(notes) if n]
    if result.device_timing:
        try:
            from revati.replay.kernel_db.trace_samples import write_op_samples

            result.op_samples = write_op_samples(run_dir)
        except Exception as exc:  # noqa: BLE001 - the trace itself is complete; say what failed
            raise TraceError(run_dir, f"trace written, but deriving op_samples failed: {exc}") from exc


def _host_score(notes: list[str]):
    """This (GPU) box's host-CPU score (measured once per machine, after the first traced
    command, then cached): what `revati emulate --host-cpu auto` scales host time to (Note
    [Host-speed calibration] in revati/hostcpu.py)."""
    from revati import hostcpu

    try:
        return hostcpu.cached_score()
    except Exception as exc:  # noqa: BLE001 - the trace is complete without it; say why
        notes.append(f"host CPU score not measured: {exc}")
        return None


def _join_bpf(run_dir: Path, notes: list[str]) -> None:
    from revati.tracer.launch_join import join_launches

    files = run_folder.table_files(run_dir, "launches")
    runtime = [r for p in files if ".bpf." not in p.name for r in parquet_io.read_table(p, "launches").to_pylist()]
    for path in files:
        if ".bpf." not in path.name:
            continue
        bpf_rows = parquet_io.read_table(path, "launches").to_pylist()
        stats = join_launches(bpf_rows, runtime)
        parquet_io.write_table(tables.rows_to_table("launches", bpf_rows), "launches", path)
        notes.append(f"bpf<->runtime join ({path.name}): {stats.paired} of {stats.bpf_calls} bpf calls paired")
