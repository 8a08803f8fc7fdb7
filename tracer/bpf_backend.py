"""The ``bpf`` backend: bcc uprobes on the CUDA libraries a command really maps.

It runs in the ``revati trace`` process, outside the command: probes go on library files
before the command starts (tracer/cuda_libs.py), events arrive through a BPF ring buffer while
it runs, and at the end they become ``launches`` rows (host API calls with decoded grid, block,
shared memory, stream and kernel name), ``memory_ops`` (copies, sets, allocations, frees) and
``syncs``. There is no device timing here (uprobes see only the host side) and no correlation
id; :mod:`revati.tracer.launch_join` pairs these rows with a Kineto/CUPTI trace of the same run
by (pid, thread, order, time).

Timestamps: BPF's clock is CLOCK_MONOTONIC; rows carry Unix-epoch ns like every other table,
through an offset measured when tracing starts. Each probe costs the traced call roughly 10 µs
on a small VM (TRACING_REPORT.md §1), so launch-bound phases run slower under this backend.

Needs root, bcc's Python module (Debian: ``apt-get install python3-bpfcc``; the PyPI ``bcc``
is unrelated) and kernel headers: ``sudo tracer/install_bpf_deps.sh`` installs both.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from revati.errors import BackendUnavailable
from revati.tracer import bpf_probes, cuda_libs

SOURCE = "bpf"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
INSTALL_SCRIPT = Path(__file__).resolve().parent / "install_bpf_deps.sh"

# cudaMemcpyKind
MEMCPY_KINDS = {0: "HtoH", 1: "HtoD", 2: "DtoH", 3: "DtoD", 4: "Default"}


def import_bcc():
    """bcc's module, reaching into the system Python's dist-packages when needed (it is not on
    PyPI); None when it is not installed."""
    try:
        import bcc  # noqa: F401
        return sys.modules["bcc"]
    except ImportError:
        pass
    if os.path.isdir(DIST_PACKAGES) and DIST_PACKAGES not in sys.path:
        sys.path.append(DIST_PACKAGES)
    try:
        import bcc  # noqa: F401
        return sys.modules["bcc"]
    except ImportError:
        return None


def missing_requirements() -> list[str]:
    missing = []
    if os.geteuid() != 0:
        missing.append("root: uprobes need root (or CAP_BPF + CAP_PERFMON); run `sudo revati trace ...`")
    if import_bcc() is None:
        missing.append("bcc's Python module: apt-get install python3-bpfcc (the PyPI package named "
                       "'bcc' is an unrelated project)")
    headers = Path(f"/lib/modules/{os.uname().release}/build")
    if not headers.exists():
        missing.append(f"kernel headers at {headers}: apt-get install linux-headers-$(uname -r), or link "
                       "the distribution's default headers there")
    return missing


def check_available() -> None:
    missing = missing_requirements()
    if missing:
        raise BackendUnavailable("bpf", missing + [f"`sudo {INSTALL_SCRIPT}` installs all of it"])


@contextlib.contextmanager
def _stderr_silenced():
    """Silence fd 2 (C libraries write there directly) for the duration of the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def monotonic_to_unix_offset_ns() -> int:
    """Unix ns minus CLOCK_MONOTONIC ns (the BPF clock), from the tightest of a few samples."""
    best = None
    for _ in range(5):
        a = time.time_ns()
        m = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        b = time.time_ns()
        if best is None or b - a < best[0]:
            best = (b - a, (a + b) // 2 - m)
    return best[1]


# -- decoding (pure: no bcc) ------------------------------------------------------------------------
def event_to_dict(ev: bpf_probes.Event) -> dict[str, Any]:
    d = {name: getattr(ev, name) for _ctype, name in bpf_probes.EVENT_FIELDS if name != "pad"}
    d["name"] = ev.name.split(b"\0", 1)[0].decode(errors="replace")
    return d


@dataclass
class KernelNames:
    """Per-process maps from what launch calls pass (host stub, handle, CUfunction) to names."""

    host_stub: dict[tuple[int, int], str] = field(default_factory=dict)       # (pid, hostFun) -> name
    handle_stub: dict[tuple[int, int], int] = field(default_factory=dict)     # (pid, cudaKernel_t) -> hostFun
    function: dict[tuple[int, int], str] = field(default_factory=dict)        # (pid, CUfunction/CUkernel) -> name
    function_kernel: dict[tuple[int, int], int] = field(default_factory=dict)  # (pid, CUfunction) -> CUkernel
    symbols: dict[tuple[int, int], str | None] = field(default_factory=dict)  # symbol lookups (cached)

    def observe(self, ev: dict[str, Any]) -> None:
        api = bpf_probes.BY_ID.get(ev["api"])
        if api is None or api.category != "name":
            return
        pid = ev["pid"]
        if api.name == "__cudaRegisterFunction" and ev["name"]:
            self.host_stub[(pid, ev["func"])] = ev["name"]
        elif api.name == "__cudaGetKernel" and ev["addr"]:
            self.handle_stub[(pid, ev["addr"])] = ev["func"]
        elif api.name in ("cuModuleGetFunction", "cuLibraryGetKernel") and ev["func"] and ev["name"]:
            self.function[(pid, ev["func"])] = ev["name"]
        elif api.name == "cuKernelGetFunction" and ev["addr"]:
            self.function_kernel[(pid, ev["addr"])] = ev["func"]

    def resolve(self, pid: int, func: int, symbolize: Callable[[int, int], str | None] | None = None) -> str | None:
        name = (self.host_stub.get((pid, func))
                or self.host_stub.get((pid, self.handle_stub.get((pid, func), -1)))
                or self.function.get((pid, func))
                or self.function.get((pid, self.function_kernel.get((pid, func), -1))))
        if name or not func:
            return name
        key = (pid, func)
        if key not in self.symbols and symbolize is not None:
            self.symbols[key] = symbolize(pid, func)
        return self.symbols.get(key)


def decode(events: Iterable[dict[str, Any]], run_id: str, offset_ns: int, names: KernelNames,
           assign_for_pid: Callable[[int], Callable[[int | None], int | None]] | None = None,
           min_step: int | None = None) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Raw probe events -> rows of launches, memory_ops and syncs (plus counts of what was folded).

    A driver launch made *inside* a runtime launch on the same thread (libcudart calling
    libcuda) is the same kernel: it is folded into the runtime row, not counted twice.
    """
    calls = []
    for ev in events:
        names.observe(ev)
        api = bpf_probes.BY_ID.get(ev["api"])
        if api is not None and api.category != "name":
            calls.append((ev, api))
    calls.sort(key=lambda c: (c[0]["pid"], c[0]["tid"], c[0]["start_ns"]))
    stats = {"nested_driver_calls_folded": 0, "calls": len(calls)}
    kept: list[tuple[dict, bpf_probes.Api]] = []
    open_runtime: dict[tuple[int, int], dict] = {}
    for ev, api in calls:
        thread = (ev["pid"], ev["tid"])
        outer = open_runtime.get(thread)
        if (api.library == "driver" and outer is not None and outer["start_ns"] <= ev["start_ns"]
                and ev["end_ns"] <= outer["end_ns"]):
            stats["nested_driver_calls_folded"] += 1
            continue
        if api.library in ("runtime", "any"):
            open_runtime[thread] = ev
        kept.append((ev, api))

    def unix(t: int | None) -> int | None:
        return None if not t else int(t) + offset_ns

    launches, memory, syncs = [], [], []
    seq: dict[tuple[int, int], int] = defaultdict(int)
    assigners: dict[int, Callable] = {}
    for ev, api in kept:
        pid, tid = ev["pid"], ev["tid"]
        if assign_for_pid is not None and pid not in assigners:
            assigners[pid] = assign_for_pid(pid)
        start = unix(ev["start_ns"])
        step = assigners[pid](start) if pid in assigners else None
        if min_step is not None and step is not None and step < min_step:
            continue
        is_launch = api.category == "launch"
        row = {
            "run_id": run_id, "pid": pid, "tid": tid, "correlation_id": None, "api_name": api.name,
            "cbid": None, "start_ns": start, "end_ns": unix(ev["end_ns"]) if api.returns else None,
            "stream_handle": ev["stream"] if api.category in ("launch", "graph", "memcpy", "memset", "sync") else None,
            "func_addr": ev["func"] if api.category in ("launch", "graph") else None,
            "kernel_name": names.resolve(pid, ev["func"]) if is_launch else None,
            "grid_x": ev["grid_x"] if is_launch else None, "grid_y": ev["grid_y"] if is_launch else None,
            "grid_z": ev["grid_z"] if is_launch else None, "block_x": ev["block_x"] if is_launch else None,
            "block_y": ev["block_y"] if is_launch else None, "block_z": ev["block_z"] if is_launch else None,
            "shared_mem_bytes": ev["size"] if is_launch else None,
            "return_code": ev["ret"] if api.returns else None,
            "seq_in_thread": seq[(pid, tid)], "step": step, "source": SOURCE,
        }
        seq[(pid, tid)] += 1
        launches.append(row)
        if api.category in ("memcpy", "memset", "alloc", "free"):
            memory.append({
                "run_id": run_id, "pid": pid, "kind": api.category,
                "copy_kind": MEMCPY_KINDS.get(ev["kind"]) if api.category == "memcpy" else None,
                "size_bytes": ev["size"] if api.category != "free" else None,
                "address": ev["addr"] or None, "start_ns": start, "end_ns": row["end_ns"],
                "device_id": None, "stream_id": None, "correlation_id": None,
                "is_async": api.name.startswith(("cudaMemcpyAsync", "cudaMemsetAsync", "cudaMallocAsync",
                                                 "cudaFreeAsync")),
            })
        elif api.category == "sync":
            syncs.append({
                "run_id": run_id, "pid": pid, "tid": tid, "kind": api.sync_kind, "stream_id": None,
                "waited_stream_id": None, "event_id": None, "start_ns": start, "end_ns": row["end_ns"],
                "correlation_id": None,
            })
    return {"launches": launches, "memory_ops": memory, "syncs": syncs}, stats


NAMED_LOOKUPS = ("__cudaRegisterFunction", "cuModuleGetFunction", "cuLibraryGetKernel")


def read_user_string(pid: int, address: int, limit: int = bpf_probes.NAME_LEN) -> str | None:
    """A NUL-terminated string from a live process's memory (root; faults pages in, unlike BPF)."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
            mem.seek(address)
            raw = mem.read(limit)
    except (OSError, ValueError, OverflowError):
        return None
    text = raw.split(b"\0", 1)[0]
    return text.decode(errors="replace") or None


# -- the live tracer (needs bcc, root, headers) -----------------------------------------------------
@dataclass
class AttachReport:
    library: str
    symbols: list[str]
    when: str  # before-start | while-running


class BpfTracer:
    """Compile the probes, attach them to library files, collect events for one command tree."""

    def __init__(self, ringbuf_pages: int = 1024):
        self.ringbuf_pages = ringbuf_pages
        self.bpf = None
        self.events: list[dict[str, Any]] = []
        self.names = KernelNames()
        self.attached: dict[str, AttachReport] = {}
        self.root_pid: int | None = None
        self.offset_ns = 0
        self.dropped_foreign = 0
        self._tree: set[int] = set()
        self._outside: set[int] = set()
        self._last_scan = 0.0
        self._symbol_cache: dict[tuple[int, int], str | None] = {}

    def start(self, libraries: Iterable[str]) -> None:
        bcc = import_bcc()
        if bcc is None:
            check_available()
        self.bpf = bcc.BPF(text=bpf_probes.program(self.ringbuf_pages))
        # bcc's own atexit cleanup fails on kernels without tracefs at /sys/kernel/tracing and
        # prints a traceback; the probes are perf-event fds that close with this process anyway.
        try:
            atexit.unregister(self.bpf.cleanup)
        except Exception:  # noqa: BLE001
            pass
        for path in libraries:
            self.attach_library(path, "before-start")
        self.bpf["events"].open_ring_buffer(self._on_event)
        self.offset_ns = monotonic_to_unix_offset_ns()

    def attach_library(self, path: str, when: str) -> AttachReport | None:
        real = os.path.realpath(path)
        if real in self.attached:
            return self.attached[real]
        kind = bpf_probes.library_kind(real) or bpf_probes.library_kind(path)
        if kind is None:
            return None
        symbols = []
        for api in bpf_probes.apis_for_library(kind):
            try:
                self.bpf.attach_uprobe(name=real, sym=api.name, fn_name=f"entry_{api.name}")
            except Exception:  # noqa: BLE001 - the library does not export this symbol
                continue
            if api.returns:
                try:
                    self.bpf.attach_uretprobe(name=real, sym=api.name, fn_name=f"return_{api.name}")
                except Exception:  # noqa: BLE001
                    continue
            symbols.append(api.name)
        report = AttachReport(real, symbols, when)
        self.attached[real] = report
        return report

    def set_root(self, pid: int) -> None:
        self.root_pid = pid
        self._tree = {pid}

    def poll(self, timeout_ms: int = 100) -> None:
        self.bpf.ring_buffer_poll(timeout_ms)
        now = time.monotonic()
        if self.root_pid is not None and now - self._last_scan > 0.5:
            self._last_scan = now
            self._tree |= cuda_libs.process_tree(self.root_pid)
            for pid in list(self._tree):
                for lib in cuda_libs.mapped_libraries(pid):
                    if os.path.realpath(lib) not in self.attached:
                        self.attach_library(lib, "while-running")

    def finish(self) -> None:
        if self.bpf is None:
            return
        try:
            self.bpf.ring_buffer_consume()
        finally:
            with _stderr_silenced():  # libbcc prints tracefs errors while detaching (see start())
                try:
                    self.bpf.cleanup()
                except Exception:  # noqa: BLE001
                    pass
            self.bpf = None

    def _belongs(self, pid: int) -> bool:
        if pid in self._tree:
            return True
        if pid in self._outside or self.root_pid is None:
            return False
        inside = cuda_libs.is_descendant(pid, self.root_pid)
        if inside:
            self._tree.add(pid)
            return True
        if inside is False:
            self._outside.add(pid)
        return False

    def _on_event(self, _ctx, data, size) -> None:
        ev = event_to_dict(bpf_probes.Event.from_buffer_copy(ctypes.string_at(data, ctypes.sizeof(bpf_probes.Event))))
        if not self._belongs(ev["pid"]):
            self.dropped_foreign += 1
            return
        api = bpf_probes.BY_ID.get(ev["api"])
        if api is not None and api.category == "name" and not ev["name"] and ev["addr"] and api.name in NAMED_LOOKUPS:
            ev["name"] = read_user_string(ev["pid"], ev["addr"]) or ""
        self.names.observe(ev)
        if api is not None and api.category == "launch":
            # name it now, while the process is alive to be symbolized
            self.names.resolve(ev["pid"], ev["func"], self._symbolize)
        self.events.append(ev)

    def _symbolize(self, pid: int, addr: int) -> str | None:
        try:
            raw = self.bpf.sym(addr, pid, show_module=False, show_offset=False)
        except Exception:  # noqa: BLE001
            return None
        name = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        return None if not name or name == "[unknown]" else name
