"""A traced run's ops as timed units: what each stands for in the vocabulary and what its
kernels really took. Shared by op_samples derivation (trace_samples.py) and replay (replay.py).

Kernels are linked to the *innermost* op that launched them (Note [How kernels are linked to
ops] in tracer/kineto_convert.py), but the vocabulary speaks of the op the framework called:
``aten::linear`` is a gemm although its kernel hangs under ``aten::addmm``. So the op tree is
walked from the roots and each op is

- descended into when it is an annotation (``record_function`` ranges have no inputs) or maps
  to no kernel (views, ``reshape``: their children may still copy);
- a **unit** otherwise: mapped with :func:`revati.replay.op_mapping.map_op`, measured as the
  device time of every kernel and memory activity linked to it or to any op below it.

Collectives take their size and group from the ``collectives`` table (``record_param_comms``).
Device activities linked to no op are reported apart, as unattributed time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from revati import vocab
from revati.replay.op_mapping import GenericOp, MappedOp, VocabOp, map_op, normalize_dtype, normalize_name
from revati.run_folder import check_run_dir, read_run_table

PARAM_COMMS = "record_param_comms"
# record_function ranges a communication backend opens around its own work ("nccl:all_reduce",
# "gloo:all_reduce"); the c10d op above them is the unit (gloo's run on a thread of their own)
BACKEND_RANGES = ("nccl:", "gloo:", "mpi:", "ucc:")


@dataclass
class Unit:
    pid: int | None
    op_id: int
    name: str
    step: int | None
    mapped: list[MappedOp]
    measured_ns: float | None          # None: the run has no device timing
    kernels: int = 0
    kernel_names: list[str] = field(default_factory=list)

    @property
    def family(self) -> str:
        """Vocabulary family for reporting; 'other' for roofline-only ops, 'unmapped' for none."""
        families = {m.op for m in self.mapped if isinstance(m, VocabOp)}
        if len(families) == 1 and all(isinstance(m, VocabOp) for m in self.mapped):
            return families.pop()
        if not self.mapped:
            return "unmapped"
        return "other"


@dataclass
class TraceOps:
    units: list[Unit]
    device_timing: bool
    unattributed_ns: float
    unattributed_count: int
    ops_total: int


def _shapes_and_dtypes(op: dict[str, Any]) -> tuple[list, list]:
    dims = op.get("input_dims") or []
    types = op.get("input_dtypes") or []
    shapes, dtypes = [], []
    for i, d in enumerate(dims):
        t = types[i] if i < len(types) else ""
        if normalize_dtype(t) is not None:    # a tensor input (scalars say 'Scalar', None says '')
            shapes.append(tuple(d or ()))
            dtypes.append(t)
        else:
            shapes.append(None)
            dtypes.append(None)
    return shapes, dtypes


def _is_annotation(op: dict[str, Any]) -> bool:
    return op.get("input_dims") is None


def _is_collective(name: str) -> bool:
    base = normalize_name(name)
    return name == PARAM_COMMS or base.startswith("c10d::") or base in vocab.COLLECTIVES


def load_trace_ops(run_dir: Path) -> TraceOps:
    run_dir = check_run_dir(run_dir)
    return trace_ops_from_rows(
        read_run_table(run_dir, "ops").to_pylist(), read_run_table(run_dir, "op_kernels").to_pylist(),
        read_run_table(run_dir, "kernels").to_pylist(), read_run_table(run_dir, "memory_ops").to_pylist(),
        read_run_table(run_dir, "collectives").to_pylist())


def trace_ops_from_rows(ops: list[dict], links: list[dict], kernels: list[dict], memory: Iterable[dict],
                        collectives: Iterable[dict] = ()) -> TraceOps:
    device_ns: dict[tuple, float] = {}
    device_name: dict[tuple, str] = {}
    for k in kernels:
        if k.get("correlation_id") is not None:
            key = (k.get("pid"), k["correlation_id"])
            device_ns[key] = device_ns.get(key, 0.0) + float(k["duration_ns"])
            device_name[key] = k.get("short_name") or k["name"]
    for m in memory:
        if m.get("correlation_id") is not None and m.get("end_ns") is not None:
            key = (m.get("pid"), m["correlation_id"])
            device_ns[key] = device_ns.get(key, 0.0) + float(m["end_ns"] - m["start_ns"])
            device_name.setdefault(key, f"{m['kind']} {m.get('copy_kind') or ''}".strip())
    device_timing = bool(kernels)

    links_by_op: dict[tuple, list[tuple]] = defaultdict(list)
    linked: set[tuple] = set()
    for link in links:
        key = (link.get("pid"), link["correlation_id"])
        links_by_op[(link.get("pid"), link["op_id"])].append(key)
        linked.add(key)
    comms = {(c.get("pid"), c["op_id"]): c for c in collectives if c.get("op_id") is not None}

    by_key = {(o.get("pid"), o["op_id"]): o for o in ops}
    children: dict[tuple, list[dict]] = defaultdict(list)
    roots = []
    for o in sorted(ops, key=lambda r: (r.get("pid") or 0, r.get("tid") or 0, r["start_ns"])):
        parent = (o.get("pid"), o.get("parent_op_id"))
        if o.get("parent_op_id") is not None and parent in by_key:
            children[parent].append(o)
        else:
            roots.append(o)

    def subtree(op: dict) -> list[dict]:
        out, todo = [], [op]
        while todo:
            cur = todo.pop()
            out.append(cur)
            todo.extend(children.get((cur.get("pid"), cur["op_id"]), ()))
        return out

    def measure(members: list[dict]) -> tuple[float | None, int, list[str]]:
        keys = [k for m in members for k in links_by_op.get((m.get("pid"), m["op_id"]), ())]
        if not device_timing:
            return None, 0, []
        names = [device_name[k] for k in keys if k in device_name]
        return sum(device_ns.get(k, 0.0) for k in keys), len(keys), names

    units: list[Unit] = []

    def unit(op: dict, mapped: list[MappedOp], members: list[dict]) -> None:
        measured, count, names = measure(members)
        units.append(Unit(op.get("pid"), op["op_id"], op["name"], op.get("step"), mapped, measured, count, names))

    todo = list(reversed(roots))
    while todo:
        op = todo.pop()
        key = (op.get("pid"), op["op_id"])
        kids = children.get(key, [])
        if _is_collective(op["name"]):
            members = subtree(op)
            comm = next((comms[(m.get("pid"), m["op_id"])] for m in members
                         if (m.get("pid"), m["op_id"]) in comms), None)
            if comm is not None:
                attrs = {"world_size": comm.get("group_size") or 1}
                if comm.get("message_bytes") is not None:
                    attrs["message_bytes"] = comm["message_bytes"]
                mapped = map_op(f"c10d::{comm['collective_name']}", [], [comm.get("dtype")], attrs)
                unit(op, mapped, members)
                continue
        if _is_annotation(op) or op["name"].startswith(BACKEND_RANGES):
            todo.extend(reversed(kids))
            continue
        shapes, dtypes = _shapes_and_dtypes(op)
        mapped = map_op(op["name"], shapes, dtypes)
        if not mapped:
            if links_by_op.get(key):  # a 'no kernel' op that launched one itself: say so
                unit(op, [], [op])
            todo.extend(reversed(kids))
            continue
        unit(op, mapped, subtree(op))

    unattributed = [k for k in device_ns if k not in linked]
    return TraceOps(units=units, device_timing=device_timing,
                    unattributed_ns=sum(device_ns[k] for k in unattributed),
                    unattributed_count=len(unattributed), ops_total=len(ops))


def describe(mapped: Iterable[MappedOp]) -> str:
    parts = []
    for m in mapped:
        if isinstance(m, VocabOp):
            parts.append(f"{m.op}({', '.join(f'{k}={v}' for k, v in m.params)}; {m.dtype})")
        elif isinstance(m, GenericOp):
            parts.append(f"{m.label}({m.bytes_moved:.0f} B; {m.dtype})")
    return " + ".join(parts)
