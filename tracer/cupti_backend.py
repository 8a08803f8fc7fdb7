"""The ``cupti`` backend: NVIDIA's cupti-python inside the traced process, for programs that are
not torch (or whose torch.profiler you do not want). Never together with kineto: CUPTI allows
one subscriber per process (pytorch issues #112389, #117935).

It enables the activity kinds CONCURRENT_KERNEL, RUNTIME, DRIVER, MEMCPY, MEMSET and
SYNCHRONIZATION, copies each record out of CUPTI's buffer as it completes, and at exit converts
them into ``kernels``, ``launches``, ``memory_ops`` and ``syncs`` (no ``ops``: CUPTI does not see
framework ops). CUPTI timestamps are converted to Unix-epoch nanoseconds with an offset measured
at start (``time.time_ns() - cupti.get_timestamp()``).

Requirements (checked with :func:`check_available`, which says exactly what is missing):
``pip install cupti-python`` in the major version of the CUDA the program uses (cupti-python
13.x needs ``cuda-bindings>=13``; 12.8 needs ``cuda-bindings==12.8``), an NVIDIA driver
(``libcuda.so.1``) and a visible GPU.
"""

from __future__ import annotations

import ctypes
import time
from collections import defaultdict
from typing import Any, Callable, Iterable

from revati.errors import BackendUnavailable
from revati.tracer.kineto_convert import SYNC_APIS, api_base_name, kernel_short_name

SOURCE = "cupti"
KIND_NAMES = ("CONCURRENT_KERNEL", "RUNTIME", "DRIVER", "MEMCPY", "MEMSET", "SYNCHRONIZATION")
BUFFER_BYTES = 8 * 1024 * 1024

# CUpti_ActivityMemcpyKind and CUpti_ActivitySynchronizationType (cupti_activity.h)
MEMCPY_KINDS = {1: "HtoD", 2: "DtoH", 3: "HtoA", 4: "AtoH", 5: "AtoA", 6: "AtoD", 7: "DtoA",
                8: "DtoD", 9: "HtoH", 10: "PtoP"}
SYNC_TYPES = {1: "event", 2: "stream_wait_event", 3: "stream", 4: "device"}

INSTALL_HINT = ("pip install cupti-python (same CUDA major version as the program: e.g. "
                "cupti-python==12.8.* for CUDA 12.8, 13.x for CUDA 13)")


def check_available() -> None:
    """Raise BackendUnavailable listing everything the cupti backend lacks here."""
    missing = []
    try:
        from cupti import cupti  # noqa: F401
    except ImportError as exc:
        missing.append(f"cupti-python is not importable ({exc}); {INSTALL_HINT}")
    gpu_problem = gpu_unavailable_reason()
    if gpu_problem:
        missing.append(gpu_problem)
    if missing:
        raise BackendUnavailable("cupti", missing)


def gpu_unavailable_reason() -> str | None:
    """Why no CUDA device can be used here (None when one can), asked of the driver directly."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver: libcuda.so.1 cannot be loaded (device timing needs a GPU)"
    rc = libcuda.cuInit(0)
    if rc != 0:
        return f"the NVIDIA driver did not initialise (cuInit returned CUDA error {rc}): no usable GPU"
    count = ctypes.c_int(0)
    rc = libcuda.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value == 0:
        return "the NVIDIA driver sees no CUDA device (check CUDA_VISIBLE_DEVICES)"
    return None


# Record fields copied out of each activity object (snake_case of the C struct members).
_FIELDS = {
    "kernel": ("name", "start", "end", "device_id", "stream_id", "correlation_id", "grid_x", "grid_y",
               "grid_z", "block_x", "block_y", "block_z", "static_shared_memory", "dynamic_shared_memory",
               "registers_per_thread", "graph_id", "graph_node_id", "queued"),
    "api": ("cbid", "start", "end", "process_id", "thread_id", "correlation_id", "return_value"),
    "memcpy": ("bytes", "copy_kind", "start", "end", "device_id", "stream_id", "correlation_id"),
    "memset": ("bytes", "start", "end", "device_id", "stream_id", "correlation_id"),
    "sync": ("type", "start", "end", "stream_id", "cuda_event_id", "correlation_id"),
}


class CuptiBackend:
    name = "cupti"

    def __init__(self, session):
        self.session = session
        self.started = False
        self.records: list[dict[str, Any]] = []
        self.offset_ns = 0
        self._cupti = None
        self._enabled: list[Any] = []
        self._kind_map: dict[int, str] = {}
        self._api_names: dict[tuple[str, int], str] = {}

    def start(self) -> None:
        check_available()
        from cupti import cupti

        self._cupti = cupti
        kinds = cupti.ActivityKind
        self._kind_map = {}
        for name, family in (("CONCURRENT_KERNEL", "kernel"), ("KERNEL", "kernel"), ("RUNTIME", "runtime"),
                             ("DRIVER", "driver"), ("MEMCPY", "memcpy"), ("MEMSET", "memset"),
                             ("SYNCHRONIZATION", "sync")):
            value = getattr(kinds, name, None)
            if value is not None:
                self._kind_map[int(value)] = family
        cupti.activity_register_callbacks(self._buffer_requested, self._buffer_completed)
        problems = []
        for name in KIND_NAMES:
            kind = getattr(kinds, name, None)
            if kind is None:
                problems.append(f"{name} unknown to this cupti-python")
                continue
            try:
                cupti.activity_enable(kind)
                self._enabled.append(kind)
            except Exception as exc:  # noqa: BLE001 - cupti raises its own cuptiError
                problems.append(f"{name}: {exc}")
        if getattr(kinds, "CONCURRENT_KERNEL", None) not in self._enabled:
            raise BackendUnavailable("cupti", [f"CUPTI refused kernel activity records ({'; '.join(problems)})"])
        self.offset_ns = self._clock_offset(cupti)
        self.started = True
        self.session.note_started(self.name, {"activity_kinds": [str(k) for k in self._enabled],
                                              "cupti_problems": problems})

    @staticmethod
    def _clock_offset(cupti) -> int:
        """Unix ns minus CUPTI ns; the tightest of a few samples (least scheduling noise)."""
        best = None
        for _ in range(5):
            a = time.time_ns()
            c = int(cupti.get_timestamp())
            b = time.time_ns()
            if best is None or b - a < best[0]:
                best = (b - a, (a + b) // 2 - c)
        return best[1]

    def _buffer_requested(self):
        return BUFFER_BYTES, 0

    def _buffer_completed(self, activities) -> None:
        # The objects view CUPTI's buffer, which is reused after this returns: copy now.
        for act in activities:
            family = self._kind_map.get(int(getattr(act, "kind", -1)))
            if family is None:
                continue
            fields = _FIELDS["api" if family in ("runtime", "driver") else family]
            rec = {f: getattr(act, f, None) for f in fields}
            rec["family"] = family
            if family in ("runtime", "driver"):
                rec["api_name"] = self._api_name(family, rec.get("cbid"))
            if isinstance(rec.get("name"), bytes):
                rec["name"] = rec["name"].decode(errors="replace")
            self.records.append(rec)

    def _api_name(self, family: str, cbid: Any) -> str:
        key = (family, int(cbid or 0))
        name = self._api_names.get(key)
        if name is None:
            name = cbid_name(self._cupti, family, key[1])
            self._api_names[key] = name
        return name

    def stop(self) -> None:
        if not self.started:
            return
        cupti = self._cupti
        try:
            cupti.activity_flush_all(1)
        finally:
            for kind in self._enabled:
                try:
                    cupti.activity_disable(kind)
                except Exception:  # noqa: BLE001
                    pass
            self.started = False

    def stop_and_convert(self, assign: Callable[[int | None], int | None], min_step: int | None) -> dict[str, list[dict]]:
        self.stop()
        return convert_records(self.records, self.session.config.run_id, self.session.pid, self.offset_ns,
                               assign, min_step)


def cbid_name(cupti, family: str, cbid: int) -> str:
    """'cudaLaunchKernel' for a runtime cbid, 'cuLaunchKernel' for a driver one (enum names vary
    between cupti-python releases, so several spellings are tried)."""
    candidates = (("runtime_api_trace_cbid", "Runtime_api_trace_cbid", "RuntimeApiTraceCbid")
                  if family == "runtime" else
                  ("driver_api_trace_cbid", "Driver_api_trace_cbid", "DriverApiTraceCbid"))
    for attr in candidates:
        enum = getattr(cupti, attr, None)
        if enum is None:
            continue
        try:
            raw = enum(cbid).name
        except (ValueError, TypeError):
            continue
        name = raw.split("CBID_", 1)[-1]
        return api_base_name(name)
    return f"{family}_cbid_{cbid}"


def convert_records(records: Iterable[dict[str, Any]], run_id: str, pid: int, offset_ns: int,
                    assign: Callable[[int | None], int | None], min_step: int | None) -> dict[str, list[dict]]:
    """CUPTI activity records (plain dicts, see ``_FIELDS``) -> rows of the trace tables."""

    def ts(value: Any) -> int | None:
        return None if value is None else int(value) + offset_ns

    def keep(step: int | None) -> bool:
        return min_step is None or step is None or step >= min_step

    records = list(records)
    launches, kernels, memory, syncs = [], [], [], []
    for rec in records:
        if rec["family"] not in ("runtime", "driver"):
            continue
        start = ts(rec.get("start"))
        launches.append({
            "run_id": run_id, "pid": int(rec.get("process_id") or pid), "tid": rec.get("thread_id"),
            "correlation_id": rec.get("correlation_id"), "api_name": rec.get("api_name") or "unknown",
            "cbid": rec.get("cbid"), "start_ns": start, "end_ns": ts(rec.get("end")),
            "return_code": rec.get("return_value"), "source": SOURCE, "step": assign(start),
        })
    launches.sort(key=lambda r: (r["tid"] or 0, r["start_ns"]))
    seq: dict[Any, int] = defaultdict(int)
    for row in launches:
        row["seq_in_thread"] = seq[row["tid"]]
        seq[row["tid"]] += 1
    launch_by_corr = {r["correlation_id"]: r for r in launches if r["correlation_id"] is not None}

    def launch_step(corr: Any, fallback: int | None) -> int | None:
        launch = launch_by_corr.get(corr)
        return launch["step"] if launch is not None else assign(fallback)

    for rec in records:
        family = rec["family"]
        start, end = ts(rec.get("start")), ts(rec.get("end"))
        corr = rec.get("correlation_id")
        if family == "kernel":
            name = str(rec.get("name") or "")
            kernels.append({
                "run_id": run_id, "pid": pid, "device_id": rec.get("device_id"), "stream_id": rec.get("stream_id"),
                "correlation_id": corr, "graph_id": rec.get("graph_id") or None,
                "graph_node_id": rec.get("graph_node_id") or None, "name": name,
                "short_name": kernel_short_name(name), "start_ns": start, "end_ns": end,
                "duration_ns": (end - start) if start is not None and end is not None else 0,
                "queued_ns": ts(rec.get("queued")) if rec.get("queued") else None,
                "grid_x": rec.get("grid_x"), "grid_y": rec.get("grid_y"), "grid_z": rec.get("grid_z"),
                "block_x": rec.get("block_x"), "block_y": rec.get("block_y"), "block_z": rec.get("block_z"),
                "static_smem_bytes": rec.get("static_shared_memory"),
                "dynamic_smem_bytes": rec.get("dynamic_shared_memory"),
                "regs_per_thread": rec.get("registers_per_thread"), "source": SOURCE,
                "step": launch_step(corr, start),
            })
        elif family in ("memcpy", "memset"):
            launch = launch_by_corr.get(corr)
            memory.append({
                "run_id": run_id, "pid": pid, "kind": family,
                "copy_kind": MEMCPY_KINDS.get(int(rec.get("copy_kind") or 0)) if family == "memcpy" else None,
                "size_bytes": rec.get("bytes"), "address": None, "start_ns": start, "end_ns": end,
                "device_id": rec.get("device_id"), "stream_id": rec.get("stream_id"), "correlation_id": corr,
                "is_async": ("Async" in launch["api_name"]) if launch is not None else None,
                "_step": launch_step(corr, start),
            })
        elif family == "sync":
            launch = launch_by_corr.get(corr)
            syncs.append({
                "run_id": run_id, "pid": pid, "tid": launch["tid"] if launch is not None else None,
                "kind": SYNC_TYPES.get(int(rec.get("type") or 0), "unknown"),
                "stream_id": _valid_id(rec.get("stream_id")), "waited_stream_id": None,
                "event_id": _valid_id(rec.get("cuda_event_id")),
                "start_ns": launch["start_ns"] if launch is not None else start,
                "end_ns": launch["end_ns"] if launch is not None else end, "correlation_id": corr,
                "_step": launch_step(corr, start),
            })
    seen_sync = {s["correlation_id"] for s in syncs}
    for launch in launches:  # sync API calls CUPTI gave no SYNCHRONIZATION record for
        kind = SYNC_APIS.get(api_base_name(launch["api_name"]))
        if kind and launch["correlation_id"] not in seen_sync:
            syncs.append({"run_id": run_id, "pid": pid, "tid": launch["tid"], "kind": kind,
                          "start_ns": launch["start_ns"], "end_ns": launch["end_ns"],
                          "correlation_id": launch["correlation_id"], "_step": launch["step"]})
    tables = {
        "kernels": [k for k in kernels if keep(k["step"])],
        "launches": [r for r in launches if keep(r["step"])],
        "memory_ops": [m for m in memory if keep(m["_step"])],
        "syncs": [s for s in syncs if keep(s["_step"])],
        "ops": [], "op_kernels": [], "collectives": [],
    }
    return tables


def _valid_id(value: Any) -> int | None:
    """CUPTI marks 'no stream/event' with all-ones (CUPTI_SYNCHRONIZATION_INVALID_VALUE)."""
    if value is None:
        return None
    value = int(value)
    return None if value in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, -1) else value
