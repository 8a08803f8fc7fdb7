"""One traced process: its backend, its step marks, and writing its tables when it ends.

# Note [When a traced process writes its files]
Tables are written once, when the process ends: at interpreter exit (atexit), on SIGTERM when
the program left SIGTERM at its default, and in ``multiprocessing`` fork children through
multiprocessing's own exit hook (they leave with ``os._exit``, which skips atexit). A process
killed with SIGKILL, or a bare ``os.fork()`` child leaving with ``os._exit``, writes nothing;
the other processes of the run are unaffected (each writes its own files).

Nothing here may break the traced program: every failure becomes a line on stderr and an
entry in the process's ``proc.<pid>.json``.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from typing import Any

from revati import run_folder, tables
from revati.tracer import steps, versions
from revati.tracer.config import TraceConfig


class Session:
    def __init__(self, config: TraceConfig, forked_child: bool = False):
        self.config = config
        self.pid = os.getpid()
        self.forked_child = forked_child
        self.marks = steps.StepMarks()
        self.notes: list[str] = []
        self.errors: list[str] = []
        self.backend = None
        self.backend_info: dict[str, Any] = {}
        self.started_at_ns = time.time_ns()
        self.flushed = False
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        name = self.config.in_process_backend
        if name == "kineto":
            from revati.tracer.kineto_backend import KinetoBackend

            self.backend = KinetoBackend(self, forked_child=self.forked_child)
            self.backend.arm()
        elif name == "cupti":
            from revati.tracer.cupti_backend import CuptiBackend

            self.backend = CuptiBackend(self)
            try:
                self.backend.start()
            except Exception as exc:  # noqa: BLE001 - the program still runs, untraced
                self.error(str(exc))

    def now_ns(self) -> int:
        return time.time_ns()

    def note_started(self, backend: str, info: dict[str, Any]) -> None:
        self.backend_info = {"backend": backend, "started_at_ns": self.now_ns(), **info}

    def error(self, message: str) -> None:
        self.errors.append(message)
        print(f"revati trace [pid {self.pid}]: {message}", file=sys.stderr, flush=True)

    # -- steps -------------------------------------------------------------------------------------
    def mark_step(self) -> int:
        t = self.now_ns()
        with self._lock:
            self.marks.add_mark(t)
            count = len(self.marks.marks_ns)
        self._append_mark({"kind": "mark", "t_ns": t})
        return count

    def add_step_range(self, start_ns: int, end_ns: int) -> None:
        with self._lock:
            self.marks.add_range(start_ns, end_ns)
        self._append_mark({"kind": "range", "start_ns": int(start_ns), "end_ns": int(end_ns)})

    def _append_mark(self, record: dict) -> None:
        try:
            steps.append_mark_line(self.config.run_dir, self.pid, record)
        except OSError as exc:
            self.error(f"cannot record a step mark: {exc}")

    def effective_marks(self, trace_ranges: list[tuple[int, int]] = ()) -> steps.StepMarks:
        """This process's marks, else the run's (see Note [Step marks cross processes])."""
        own = steps.StepMarks(list(self.marks.marks_ns), list(self.marks.ranges_ns))
        for start, end in trace_ranges:
            if (start, end) not in own.ranges_ns:
                own.add_range(start, end)
        if not own.empty:
            return own
        return steps.read_run_marks(self.config.run_dir, exclude_pid=self.pid)

    # -- the end -----------------------------------------------------------------------------------
    def flush(self) -> None:
        """Stop the backend and write this process's files; safe to call more than once."""
        if self.flushed or os.getpid() != self.pid:
            return
        self.flushed = True
        try:
            self._flush()
        except Exception as exc:  # noqa: BLE001 - never turn the program's exit into a traceback
            self.error(f"could not write the trace: {type(exc).__name__}: {exc}")
            try:
                self._write_meta({})
            except Exception:  # noqa: BLE001
                pass

    def _flush(self) -> None:
        backend = self.backend
        if backend is None:
            return
        if not backend.started:
            backend.stop()
            if self.errors:
                self._write_meta({})
            return  # this process never imported torch (kineto) / never started: nothing to say
        if backend.name == "kineto":
            counts = self._flush_kineto(backend)
        else:
            counts = self._flush_cupti(backend)
        self._write_meta(counts)

    def _min_step(self, marks: steps.StepMarks) -> int | None:
        warmup = self.config.warmup_steps
        if warmup <= 0:
            return None
        if marks.empty:
            self.notes.append(f"--warmup-steps {warmup} given but no steps were marked "
                              "(revati.tracer.step() or 'revati.step' ranges): nothing dropped")
            return None
        return warmup

    def _flush_kineto(self, backend) -> dict[str, int]:
        from revati.tracer import kineto_convert

        trace = backend.stop()
        if trace is None:
            return {}
        found_ranges = kineto_convert.find_step_ranges(trace)
        marks = self.effective_marks(found_ranges)
        converted = kineto_convert.convert(trace, self.config.run_id, self.pid, assign=marks.assigner(),
                                           min_step=self._min_step(marks), world_size=_env_int("WORLD_SIZE"))
        for start, end in found_ranges:  # record_function ranges: visible to later processes
            if (start, end) not in self.marks.ranges_ns:
                self._append_mark({"kind": "range", "start_ns": start, "end_ns": end})
        self.backend_info["steps_marked"] = marks.count
        self.backend_info["link_methods"] = dict(converted.stats.link_methods)
        self.backend_info["unlinked_device_activities"] = converted.stats.unlinked_device_activities
        self.backend_info["dropped_warmup_rows"] = converted.stats.dropped_warmup_rows
        self.backend_info["cuda_activity"] = backend.cuda_activity
        built = tables.rows_to_tables(converted.tables)
        return run_folder.write_process_tables(self.config.run_dir, built, "kineto", self.pid)

    def _flush_cupti(self, backend) -> dict[str, int]:
        marks = self.effective_marks()
        min_step = self._min_step(marks)
        rows = backend.stop_and_convert(marks.assigner(), min_step)
        self.backend_info["steps_marked"] = marks.count
        built = tables.rows_to_tables(rows)
        return run_folder.write_process_tables(self.config.run_dir, built, "cupti", self.pid)

    def _write_meta(self, counts: dict[str, int]) -> None:
        meta = {
            "pid": self.pid, "ppid": os.getppid(), "argv": list(sys.argv), "run_id": self.config.run_id,
            "backend": self.config.in_process_backend, "started_at_ns": self.started_at_ns,
            "ended_at_ns": self.now_ns(), "forked_child": self.forked_child,
            "rank": _env_int("RANK"), "local_rank": _env_int("LOCAL_RANK"), "world_size": _env_int("WORLD_SIZE"),
            "python_version": versions.python_version(), "packages": versions.package_versions(),
            "engine": versions.imported_engine(), "attention_backend": versions.attention_backend(),
            "env": versions.selected_env(), "rows": counts, "notes": self.notes, "errors": self.errors,
            **self.backend_info, **versions.torch_details(),
        }
        run_folder.write_proc_meta(self.config.run_dir, self.pid, meta)


def _env_int(name: str) -> int | None:
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return None


# -- the process-wide session ----------------------------------------------------------------------
_current: Session | None = None


class _ForkToken:
    """Kept alive for multiprocessing.util.register_after_fork (it holds a weak reference)."""


_FORK_TOKEN = _ForkToken()


def current() -> Session | None:
    return _current


def start(config: TraceConfig) -> Session:
    global _current
    if _current is not None and _current.pid == os.getpid():
        return _current
    _current = Session(config)
    _current.start()
    _install_exit_hooks()
    return _current


def _install_exit_hooks() -> None:
    atexit.register(_flush_current)
    try:
        import multiprocessing.util as mp_util

        mp_util.register_after_fork(_FORK_TOKEN, _after_multiprocessing_fork)
    except Exception:  # noqa: BLE001
        pass
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            pass


def _flush_current() -> None:
    if _current is not None:
        _current.flush()


def _on_sigterm(signum, frame) -> None:
    _flush_current()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _after_multiprocessing_fork(_token) -> None:
    """A multiprocessing fork child: trace it as a process of its own (Note [When ...])."""
    global _current
    parent = _current
    if parent is None or parent.pid == os.getpid():
        return
    _current = Session(parent.config, forked_child=True)
    _current.start()
    try:
        import multiprocessing.util as mp_util

        mp_util.Finalize(None, _flush_current, exitpriority=-100)
    except Exception:  # noqa: BLE001
        pass
