"""Convert one process's Kineto (torch.profiler) Chrome-trace JSON into revati's trace tables.

Pure Python over the parsed JSON: no torch, so the conversion and its joins are tested on
recorded traces without a GPU.

What Kineto writes (libkineto ``output_json.cpp`` / ``CuptiActivity.h``), and what we take:

- ``ph: X`` events with ``cat`` ``cpu_op`` / ``user_annotation`` (host ops, ``pid`` = process,
  ``tid`` = thread; args ``External id``, ``Input Dims``, ``Input type``, ``Input Strides``,
  ``Concrete Inputs``, ``Sequence number``) -> ``ops``;
- ``cuda_runtime`` / ``cuda_driver`` (args ``cbid``, ``correlation``, ``External id``) -> ``launches``
  (and ``syncs`` for the synchronising APIs);
- ``kernel`` (``pid`` = device, ``tid`` = stream; args ``device``, ``stream``, ``correlation``,
  ``grid``, ``block``, ``registers per thread``, ``shared memory``, ``graph id``, ``graph node id``,
  ``External id``) -> ``kernels``;
- ``gpu_memcpy`` / ``gpu_memset`` (args ``bytes``, ``stream``, ``correlation``) -> ``memory_ops``;
- ``cuda_sync`` (args ``cuda_sync_kind``, ``stream``, ``wait_on_stream``,
  ``wait_on_cuda_event_id``) -> enriches ``syncs``;
- ``record_param_comms`` ops (args ``Collective name``, ``dtype``, ``In msg nelems``, ...) -> ``collectives``.

``ts``/``dur`` are microseconds with three decimals, relative to ``baseTimeNanoseconds`` (Unix
epoch), so every timestamp here is Unix-epoch nanoseconds, the clock of ``time.time_ns()``.

# Note [How kernels are linked to ops]
A device activity (kernel, memcpy, memset) carries the correlation id of the runtime call that
launched it. ``external_id``: the kernel (or that runtime call) carries Kineto's ``External id``,
the id of the innermost op open on the launching thread. ``containment``: no External id, so the
runtime call's start time is placed inside the innermost op of the same thread.
``graph_launch``: the kernel ran inside a CUDA graph (graph id set) and is linked to the op that
replayed the graph. Links point at the *innermost* op (often ``aten::mm`` under ``aten::linear``);
readers sum an op's subtree (see replay/kernel_db/trace_ops.py).

Kineto writes kernels' static + dynamic shared memory as one number ("shared memory"); it is
stored in ``dynamic_smem_bytes`` with ``static_smem_bytes`` left null (unknown split).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from revati import vocab
from revati.tracer.steps import STEP_RANGE_NAME

SOURCE = "kineto"

OP_CATEGORIES = ("cpu_op", "user_annotation")
API_CATEGORIES = ("cuda_runtime", "cuda_driver")
PARAM_COMMS = "record_param_comms"

# API name (without _v2/_ptsz suffixes) -> syncs.kind
SYNC_APIS = {
    "cudaStreamSynchronize": "stream", "cuStreamSynchronize": "stream",
    "cudaDeviceSynchronize": "device", "cuCtxSynchronize": "device",
    "cudaEventSynchronize": "event", "cuEventSynchronize": "event",
    "cudaStreamWaitEvent": "stream_wait_event", "cuStreamWaitEvent": "stream_wait_event",
}
CUDA_SYNC_KINDS = {
    "Stream Sync": "stream", "Context Sync": "device", "Event Sync": "event",
    "Stream Wait Event": "stream_wait_event",
}

_API_SUFFIX = re.compile(r"(_v\d+|_ptsz|_ptds)+$")


def api_base_name(name: str) -> str:
    """'cudaLaunchKernel_v7000' / 'cudaMemcpyAsync_ptsz' -> 'cudaLaunchKernel' / 'cudaMemcpyAsync'."""
    return _API_SUFFIX.sub("", str(name))


def is_kernel_launch_api(name: str) -> bool:
    base = api_base_name(name)
    return "LaunchKernel" in base or "LaunchCooperativeKernel" in base or "GraphLaunch" in base


def kernel_short_name(name: str) -> str:
    """The kernel's function name without return type, template arguments and parameters.

    'void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>, ...>(int, ...)'
    -> 'at::native::vectorized_elementwise_kernel'; plain C names come back unchanged.
    """
    anon = "(anonymous namespace)"
    text = str(name).strip().replace(anon, "\0")
    if text.startswith("void "):
        text = text[5:]
    out, depth = [], 0
    for ch in text:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(depth - 1, 0)
        elif ch == "(" and depth == 0:
            break
        elif depth == 0:
            out.append(ch)
    short = "".join(out).strip().replace("\0", anon)
    return short or str(name)


@dataclass
class ConvertStats:
    events: int = 0
    skipped: int = 0
    link_methods: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unlinked_device_activities: int = 0
    dropped_warmup_rows: int = 0


@dataclass
class Converted:
    tables: dict[str, list[dict[str, Any]]]
    step_ranges_ns: list[tuple[int, int]]
    stats: ConvertStats


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


def _is_int_list(item: Any) -> bool:
    return isinstance(item, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in item)


def _dims_list(value: Any) -> list[list[int]] | None:
    """Kineto's 'Input Dims': one list of ints per input. A TensorList input (a list of shapes)
    keeps its first tensor's shape (list<list<int64>> has no room for more); its 'Input type'
    says 'TensorList', so readers know."""
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        if _is_int_list(item):
            out.append([int(x) for x in item])
        elif isinstance(item, list) and item and _is_int_list(item[0]):
            out.append([int(x) for x in item[0]])
        else:
            out.append([])
    return out


def _str_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return ["" if v is None else (v if isinstance(v, str) else str(v)) for v in value]


class _Clock:
    def __init__(self, trace: Mapping[str, Any]):
        self.base_ns = _int(trace.get("baseTimeNanoseconds")) or 0

    def at(self, ts_us: Any) -> int:
        return self.base_ns + int(round(float(ts_us) * 1000.0))

    @staticmethod
    def span(dur_us: Any) -> int:
        return max(int(round(float(dur_us or 0) * 1000.0)), 0)


def find_step_ranges(trace: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The ``revati.step`` ranges a program opened with ``torch.profiler.record_function``."""
    clock = _Clock(trace)
    out = []
    for ev in trace.get("traceEvents", []) or []:
        if (isinstance(ev, dict) and ev.get("ph") == "X" and ev.get("cat") == "user_annotation"
                and ev.get("name") == STEP_RANGE_NAME):
            start = clock.at(ev.get("ts", 0))
            out.append((start, start + clock.span(ev.get("dur"))))
    return sorted(out)


def convert(trace: Mapping[str, Any], run_id: str, pid: int,
            assign: Callable[[int | None], int | None] | None = None,
            min_step: int | None = None, world_size: int | None = None) -> Converted:
    """Turn one process's Kineto trace into rows of the trace tables.

    ``assign`` maps a timestamp to its step (tracer/steps.py; give it the ranges of
    :func:`find_step_ranges` too); ``min_step`` drops rows of earlier steps (warm-up) and the
    links that pointed at them.
    """
    clock = _Clock(trace)
    stats = ConvertStats()
    raw_ops, apis, kernels, mem, cuda_syncs = [], [], [], [], []
    for ev in trace.get("traceEvents", []) or []:
        if not isinstance(ev, dict) or ev.get("ph") != "X":
            continue
        cat = ev.get("cat")
        stats.events += 1
        try:
            if cat in OP_CATEGORIES:
                raw_ops.append(ev)
            elif cat in API_CATEGORIES:
                apis.append(ev)
            elif cat == "kernel":
                kernels.append(ev)
            elif cat in ("gpu_memcpy", "gpu_memset"):
                mem.append(ev)
            elif cat == "cuda_sync":
                cuda_syncs.append(ev)
            else:
                stats.skipped += 1
        except (TypeError, ValueError):
            stats.skipped += 1

    ops = _ops_rows(raw_ops, run_id, pid, clock)
    step_ranges = sorted((o["start_ns"], o["end_ns"]) for o in ops
                         if o["name"] == STEP_RANGE_NAME and o["_annotation"])
    if assign is None:
        assign = lambda t: None  # noqa: E731

    launches = _launch_rows(apis, run_id, pid, clock)
    launch_by_corr = {row["correlation_id"]: row for row in launches if row["correlation_id"] is not None}
    ext_by_corr = {row["correlation_id"]: row.pop("_external_id") for row in launches
                   if row["correlation_id"] is not None}
    for row in launches:
        row.pop("_external_id", None)
        row["step"] = assign(row["start_ns"])

    kernel_rows = _kernel_rows(kernels, run_id, pid, clock)
    mem_rows = _memory_rows(mem, run_id, pid, clock, launch_by_corr)
    for row in kernel_rows + mem_rows:
        # a device activity belongs to the step in which it was launched
        launch = launch_by_corr.get(row.get("correlation_id"))
        row["_step"] = assign(launch["start_ns"] if launch is not None else row["start_ns"])
    for row in kernel_rows:
        row["step"] = row.pop("_step")
    for row in ops:
        row["step"] = assign(row["start_ns"])

    links = _link(ops, kernel_rows, mem_rows, launch_by_corr, ext_by_corr, run_id, pid, stats)
    syncs = _sync_rows(launches, cuda_syncs, mem_rows, run_id, pid, clock)
    collectives = _collective_rows(ops, links, kernel_rows, run_id, pid, world_size)

    tables = {
        "ops": ops, "kernels": kernel_rows, "launches": launches, "op_kernels": links,
        "memory_ops": mem_rows, "collectives": collectives, "syncs": syncs,
    }
    if min_step is not None:
        tables = _drop_warmup(tables, min_step, assign, stats)
    for row in tables["memory_ops"]:
        row.pop("_step", None)
    return Converted(tables, step_ranges, stats)


def _ops_rows(raw_ops: list[dict], run_id: str, pid: int, clock: _Clock) -> list[dict]:
    rows: list[dict] = []
    seen_ids: set[int] = set()
    synthetic = -1
    for ev in raw_ops:
        args = ev.get("args") or {}
        op_id = _int(args.get("External id"))
        if op_id is None or op_id in seen_ids:
            op_id = synthetic          # negative: never equal to a Kineto External id
            synthetic -= 1
        seen_ids.add(op_id)
        start = clock.at(ev.get("ts", 0))
        rows.append({
            "run_id": run_id, "pid": pid, "tid": _int(ev.get("tid")), "op_id": op_id,
            "parent_op_id": None, "depth": 0, "name": str(ev.get("name", "")),
            "start_ns": start, "end_ns": start + clock.span(ev.get("dur")),
            "seq_nr": _int(args.get("Sequence number")),
            "input_dims": _dims_list(args.get("Input Dims")),
            "input_dtypes": _str_list(args.get("Input type")),
            "input_strides": _dims_list(args.get("Input Strides")),
            "concrete_inputs": _str_list(args.get("Concrete Inputs")),
            "module_path": args.get("Module Hierarchy") if isinstance(args.get("Module Hierarchy"), str) else None,
            "_annotation": ev.get("cat") == "user_annotation",
            "_args": args,
        })
    _nest(rows)
    return rows


def _nest(rows: list[dict]) -> None:
    """Parent and depth from time containment on each thread (Kineto keeps no parent ids)."""
    by_tid: dict[Any, list[dict]] = defaultdict(list)
    for row in rows:
        by_tid[row["tid"]].append(row)
    for thread_rows in by_tid.values():
        thread_rows.sort(key=lambda r: (r["start_ns"], -r["end_ns"]))
        stack: list[dict] = []
        for row in thread_rows:
            # 1 ns slack: ts and dur are rounded separately from microsecond decimals
            while stack and not (row["start_ns"] >= stack[-1]["start_ns"]
                                 and row["end_ns"] <= stack[-1]["end_ns"] + 1):
                stack.pop()
            row["parent_op_id"] = stack[-1]["op_id"] if stack else None
            row["depth"] = len(stack)
            stack.append(row)


def _launch_rows(apis: list[dict], run_id: str, pid: int, clock: _Clock) -> list[dict]:
    rows = []
    for ev in apis:
        args = ev.get("args") or {}
        start = clock.at(ev.get("ts", 0))
        rows.append({
            "run_id": run_id, "pid": pid, "tid": _int(ev.get("tid")),
            "correlation_id": _int(args.get("correlation")), "api_name": str(ev.get("name", "")),
            "cbid": _int(args.get("cbid")), "start_ns": start, "end_ns": start + clock.span(ev.get("dur")),
            "return_code": None, "source": SOURCE, "_external_id": _int(args.get("External id")),
        })
    rows.sort(key=lambda r: (r["tid"] or 0, r["start_ns"]))
    seq: dict[Any, int] = defaultdict(int)
    for row in rows:
        row["seq_in_thread"] = seq[row["tid"]]
        seq[row["tid"]] += 1
    return rows


def _triple(value: Any) -> tuple[int | None, int | None, int | None]:
    if isinstance(value, list) and len(value) == 3:
        return tuple(_int(v) for v in value)  # type: ignore[return-value]
    return (None, None, None)


def _kernel_rows(kernels: list[dict], run_id: str, pid: int, clock: _Clock) -> list[dict]:
    rows = []
    for ev in kernels:
        args = ev.get("args") or {}
        start = clock.at(ev.get("ts", 0))
        dur = clock.span(ev.get("dur"))
        gx, gy, gz = _triple(args.get("grid"))
        bx, by, bz = _triple(args.get("block"))
        graph_id = _int(args.get("graph id")) or None
        graph_node = _int(args.get("graph node id")) or None
        name = str(ev.get("name", ""))
        rows.append({
            "run_id": run_id, "pid": pid, "device_id": _int(args.get("device")),
            "stream_id": _int(args.get("stream")), "correlation_id": _int(args.get("correlation")),
            "graph_id": graph_id, "graph_node_id": graph_node, "name": name,
            "short_name": kernel_short_name(name), "start_ns": start, "end_ns": start + dur,
            "duration_ns": dur, "queued_ns": None,
            "grid_x": gx, "grid_y": gy, "grid_z": gz, "block_x": bx, "block_y": by, "block_z": bz,
            "static_smem_bytes": None, "dynamic_smem_bytes": _int(args.get("shared memory")),
            "regs_per_thread": _int(args.get("registers per thread")), "source": SOURCE,
            "_external_id": _int(args.get("External id")),
        })
    return rows


_COPY_KIND = re.compile(r"^Memcpy\s+(\w+)")


def _memory_rows(mem: list[dict], run_id: str, pid: int, clock: _Clock,
                 launch_by_corr: Mapping[int, dict]) -> list[dict]:
    rows = []
    for ev in mem:
        args = ev.get("args") or {}
        start = clock.at(ev.get("ts", 0))
        name = str(ev.get("name", ""))
        corr = _int(args.get("correlation"))
        launch = launch_by_corr.get(corr)
        is_async = ("Async" in launch["api_name"]) if launch is not None else None
        match = _COPY_KIND.match(name)
        rows.append({
            "run_id": run_id, "pid": pid, "kind": "memcpy" if ev.get("cat") == "gpu_memcpy" else "memset",
            "copy_kind": match.group(1) if match else None, "size_bytes": _int(args.get("bytes")),
            "address": None, "start_ns": start, "end_ns": start + clock.span(ev.get("dur")),
            "device_id": _int(args.get("device", args.get("inDevice"))), "stream_id": _int(args.get("stream")),
            "correlation_id": corr, "is_async": is_async,
            "_external_id": _int(args.get("External id")),
        })
    return rows


def _link(ops: list[dict], kernel_rows: list[dict], mem_rows: list[dict], launch_by_corr: Mapping[int, dict],
          ext_by_corr: Mapping[int, int | None], run_id: str, pid: int, stats: ConvertStats) -> list[dict]:
    """op_kernels rows; see Note [How kernels are linked to ops]."""
    op_ids = {o["op_id"] for o in ops}
    pending = [(row, row.pop("_external_id", None)) for row in kernel_rows + mem_rows]
    # launches that need the containment fallback: no External id on the kernel or its launch
    need_containment = []
    for row, ext in pending:
        corr = row.get("correlation_id")
        if (ext is None or ext not in op_ids) and corr is not None:
            ext2 = ext_by_corr.get(corr)
            if (ext2 is None or ext2 not in op_ids) and corr in launch_by_corr:
                need_containment.append(launch_by_corr[corr])
    contained = _innermost_ops(ops, need_containment)

    links = []
    for row, ext in sorted(pending, key=lambda p: p[0]["start_ns"]):
        corr = row.get("correlation_id")
        if (ext is None or ext not in op_ids) and corr is not None:
            ext = ext_by_corr.get(corr)
        method, op_id = None, None
        if ext is not None and ext in op_ids:
            method, op_id = "external_id", ext
        elif corr is not None and corr in contained:
            method, op_id = "containment", contained[corr]
        if op_id is None or corr is None:
            stats.unlinked_device_activities += 1
            continue
        if row.get("graph_id"):
            method = "graph_launch"
        stats.link_methods[method] += 1
        links.append({"run_id": run_id, "pid": pid, "op_id": op_id, "correlation_id": corr,
                      "ordinal": None, "link_method": method, "_start": row["start_ns"]})
    ordinal: dict[int, int] = defaultdict(int)
    for link in links:
        link["ordinal"] = ordinal[link["op_id"]]
        ordinal[link["op_id"]] += 1
        link.pop("_start")
    return links


def _innermost_ops(ops: list[dict], launches: list[dict]) -> dict[int, int]:
    """correlation id -> op_id of the innermost op open on the launch's thread at its start.

    One sweep per thread over ops (sorted by start, outer first) and launch times: a stack of
    open ops, popped when they end before the current time.
    """
    by_tid: dict[Any, list[dict]] = defaultdict(list)
    for o in ops:
        by_tid[o["tid"]].append(o)
    wanted: dict[Any, list[dict]] = defaultdict(list)
    for launch in launches:
        wanted[launch["tid"]].append(launch)
    found: dict[int, int] = {}
    for tid, thread_launches in wanted.items():
        thread_ops = sorted(by_tid.get(tid, ()), key=lambda r: (r["start_ns"], -r["end_ns"]))
        stack: list[dict] = []
        i = 0
        for launch in sorted(thread_launches, key=lambda r: r["start_ns"]):
            t = launch["start_ns"]
            while i < len(thread_ops) and thread_ops[i]["start_ns"] <= t:
                while stack and stack[-1]["end_ns"] < thread_ops[i]["start_ns"]:
                    stack.pop()
                stack.append(thread_ops[i])
                i += 1
            while stack and stack[-1]["end_ns"] < t:
                stack.pop()
            if stack:
                found[launch["correlation_id"]] = stack[-1]["op_id"]
    return found


def _sync_rows(launches: list[dict], cuda_syncs: list[dict], mem_rows: list[dict], run_id: str, pid: int,
               clock: _Clock) -> list[dict]:
    device_side: dict[int, dict] = {}
    for ev in cuda_syncs:
        args = ev.get("args") or {}
        corr = _int(args.get("correlation"))
        if corr is not None:
            device_side[corr] = {"ev": ev, "args": args}
    rows = []
    used: set[int] = set()
    copy_kind = {m["correlation_id"]: m["copy_kind"] for m in mem_rows if m["correlation_id"] is not None}
    for launch in launches:
        base = api_base_name(launch["api_name"])
        kind = SYNC_APIS.get(base)
        if kind is None and base == "cudaMemcpy":
            kind = "d2h_copy"  # a blocking copy; only DtoH ones are kept below
        if kind is None:
            continue
        corr = launch["correlation_id"]
        if kind == "d2h_copy" and copy_kind.get(corr) != "DtoH":
            continue
        dev = device_side.get(corr) if corr is not None else None
        if dev is not None:
            used.add(corr)
        args = dev["args"] if dev else {}
        rows.append({
            "run_id": run_id, "pid": pid, "tid": launch["tid"], "kind": kind,
            "stream_id": _int(args.get("stream")), "waited_stream_id": _int(args.get("wait_on_stream")),
            "event_id": _int(args.get("wait_on_cuda_event_id")), "start_ns": launch["start_ns"],
            "end_ns": launch["end_ns"], "correlation_id": corr, "_step": launch.get("step"),
        })
    for corr, dev in device_side.items():
        if corr in used:
            continue
        ev, args = dev["ev"], dev["args"]
        kind = CUDA_SYNC_KINDS.get(str(args.get("cuda_sync_kind", ev.get("name", ""))), "unknown")
        start = clock.at(ev.get("ts", 0))
        rows.append({
            "run_id": run_id, "pid": pid, "tid": None, "kind": kind, "stream_id": _int(args.get("stream")),
            "waited_stream_id": _int(args.get("wait_on_stream")), "event_id": _int(args.get("wait_on_cuda_event_id")),
            "start_ns": start, "end_ns": start + clock.span(ev.get("dur")), "correlation_id": corr, "_step": None,
        })
    return rows


def _collective_rows(ops: list[dict], links: list[dict], kernel_rows: list[dict], run_id: str,
                     pid: int, world_size: int | None = None) -> list[dict]:
    """One row per ``record_param_comms`` op (NCCL; full metadata), and per ``c10d::`` collective
    op without one below it (other backends: size from the first op below with tensor inputs)."""
    children: dict[int, list[dict]] = defaultdict(list)
    for o in ops:
        if o["parent_op_id"] is not None:
            children[o["parent_op_id"]].append(o)

    def subtree(op: dict) -> list[dict]:
        out, todo = [], [op]
        while todo:
            cur = todo.pop()
            out.append(cur)
            todo.extend(children.get(cur["op_id"], ()))
        return out

    kernels_by_corr = {k["correlation_id"]: k for k in kernel_rows if k["correlation_id"] is not None}
    links_by_op: dict[int, list[int]] = defaultdict(list)
    for link in links:
        links_by_op[link["op_id"]].append(link["correlation_id"])

    def device_kernels(members: list[dict]) -> list[dict]:
        ks = [kernels_by_corr[c] for m in members for c in links_by_op.get(m["op_id"], ()) if c in kernels_by_corr]
        return sorted(ks, key=lambda k: k["start_ns"])

    rows = []
    for op in ops:
        args = op.get("_args") or {}
        members = None
        if op["name"] == PARAM_COMMS or "Collective name" in args:
            dtype = str(args.get("dtype", "")) or None
            in_n, out_n = _int(args.get("In msg nelems")), _int(args.get("Out msg nelems"))
            name = str(args.get("Collective name") or op["name"])
            group, rank, pg, seq = (_int(args.get("Group size")), _int(args.get("Rank")),
                                    args.get("Process Group Name"), _int(args.get("Seq")))
            members = subtree(op)
        elif op["name"].startswith("c10d::") and _is_collective_name(op["name"]):
            members = subtree(op)
            if any(m["name"] == PARAM_COMMS for m in members):
                continue  # the record_param_comms row below describes it
            sized = next((m for m in members[1:] if m.get("input_dims") and m["input_dims"][0]
                          and m.get("input_dtypes") and m["input_dtypes"][0] not in ("", "Scalar", "TensorList")),
                         None)
            name = op["name"].split("::", 1)[1].rstrip("_")
            dtype = sized["input_dtypes"][0] if sized else None
            in_n = out_n = _numel(sized["input_dims"][0]) if sized else None
            own = op.get("input_dims") or []
            if in_n is None and own and own[0]:  # the TensorList's first tensor (dtype unknown)
                in_n = out_n = _numel(own[0])
            group, rank, pg, seq = world_size, None, None, None
        if members is None:
            continue
        ks = device_kernels(members)
        size = max(in_n or 0, out_n or 0)
        rows.append({
            "run_id": run_id, "pid": pid, "rank": rank, "op_id": op["op_id"],
            "correlation_id": ks[0]["correlation_id"] if ks else None, "collective_name": name,
            "pg_name": str(pg) if pg is not None else None, "group_size": group, "dtype": dtype,
            "in_nelems": in_n, "out_nelems": out_n,
            "message_bytes": int(size * vocab.dtype_bytes(dtype)) if dtype and size else None, "seq": seq,
            "kernel_name": ks[0]["name"] if ks else None,
            # device span when the collective's kernels were recorded, else the host op's span
            "start_ns": ks[0]["start_ns"] if ks else op["start_ns"],
            "end_ns": max(k["end_ns"] for k in ks) if ks else op["end_ns"],
            "_step": op.get("step"),
        })
    for o in ops:
        o.pop("_args", None)
    return rows


_COLLECTIVE_WORDS = ("allreduce", "all_reduce", "allgather", "all_gather", "reduce_scatter", "alltoall",
                     "all_to_all", "broadcast", "send", "recv", "reduce", "gather", "scatter")


def _is_collective_name(name: str) -> bool:
    base = name.split("::", 1)[-1].lower()
    return any(word in base for word in _COLLECTIVE_WORDS) and "barrier" not in base


def _numel(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _drop_warmup(tables: dict[str, list[dict]], min_step: int, assign: Callable[[int | None], int | None],
                 stats: ConvertStats) -> dict[str, list[dict]]:
    def keep(step: int | None) -> bool:
        return step is None or step >= min_step

    out: dict[str, list[dict]] = {}
    before = sum(len(v) for v in tables.values())
    out["ops"] = [r for r in tables["ops"] if keep(r["step"])]
    out["kernels"] = [r for r in tables["kernels"] if keep(r["step"])]
    out["launches"] = [r for r in tables["launches"] if keep(r["step"])]
    out["memory_ops"] = [r for r in tables["memory_ops"] if keep(r.get("_step"))]
    out["syncs"] = [r for r in tables["syncs"] if keep(r.get("_step") if r.get("_step") is not None
                                                       else assign(r["start_ns"]))]
    out["collectives"] = [r for r in tables["collectives"] if keep(r.get("_step"))]
    kept_ops = {r["op_id"] for r in out["ops"]}
    kept_corr = {r["correlation_id"] for r in out["kernels"]} | {r["correlation_id"] for r in out["memory_ops"]}
    out["op_kernels"] = [r for r in tables["op_kernels"] if r["op_id"] in kept_ops and r["correlation_id"] in kept_corr]
    stats.dropped_warmup_rows = before - sum(len(v) for v in out.values())
    return out


def strip_private(rows: Iterable[dict]) -> list[dict]:
    """Rows without the converter's private ``_``-prefixed helper keys."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
