"""Virtual collectives: torch.distributed with "nccl" requested, without GPUs or NCCL.

# Note [Virtual collectives]
# A process group asked for "nccl" is created as "gloo" (rendezvous, ranks and group names
# stay real); ``get_backend`` still answers "nccl". Collectives are completed by the
# coordinator's rendezvous (Note [Virtual time coordination]) rather than by gloo:
#   - a c10d op on virtual tensors (all_reduce, all_gather, reduce_scatter, broadcast,
#     send/recv, all_to_all, barrier) is a kernel on the rank's current stream: it arrives when
#     that stream reaches it, completes for every rank at max(arrival times) + the predicted
#     collective time, and the stream's ready time moves there; the host does not wait;
#   - small tensors that carry values travel with the rendezvous and are combined as the
#     collective defines (sum/max/min/product, concatenation, the root's copy), so control flow
#     that reads them (vLLM broadcasts metadata) works;
#   - object collectives and barriers carry real pickled objects through the rendezvous and
#     block the host until every rank arrived: the host clock jumps to the completion.
# The rendezvous key is (group name, per-group sequence number); every rank issues a group's
# collectives in the same order, as NCCL requires too.
"""

from __future__ import annotations

import io
import pickle
import threading
from collections import defaultdict
from typing import Any

import torch

from revati.shim import runtime as _runtime_mod
from revati.shim import special_ops, vtensor
from revati.shim.patching import patch
from revati.shim.shim_call import ShimCall
from revati.shim.vtensor import VTensor

_REQUESTED_BACKEND: dict[str, str] = {}
_SEQ: dict[str, int] = defaultdict(int)
_SEQ_LOCK = threading.Lock()
HOST_COLLECTIVE_LATENCY_NS = 30_000   # a gloo/TCP round on one host, for object collectives


def _next_seq(key: str) -> int:
    with _SEQ_LOCK:
        _SEQ[key] += 1
        return _SEQ[key]


def _coordinator():
    return _runtime_mod.get().coordinator


def _pg_info(script_pg) -> tuple[str, int, int]:
    from torch._C._distributed_c10d import ProcessGroup

    pg = ProcessGroup.unbox(script_pg)
    return f"pg:{pg.group_name}", pg.rank(), pg.size()


def _reduce_kind(script_op) -> str:
    try:
        code = int(script_op.op())
    except Exception:
        return "sum"
    return {0: "sum", 1: "avg", 2: "product", 3: "min", 4: "max"}.get(code, "sum")


def _values(tensors: list) -> list | None:
    vals = []
    for t in tensors:
        v = t.__dict__.get("_v") if type(t) is VTensor else None
        if v is None:
            return None
        vals.append(v.detach().clone())
    return vals


def _combine(kind: str, parts: list[torch.Tensor]) -> torch.Tensor:
    out = parts[0].clone()
    for p in parts[1:]:
        if kind in ("sum", "avg"):
            out = out + p
        elif kind == "product":
            out = out * p
        elif kind == "max":
            out = torch.maximum(out, p)
        elif kind == "min":
            out = torch.minimum(out, p)
    if kind == "avg":
        out = out / len(parts)
    return out


def _set_value(t, v: torch.Tensor | None) -> None:
    if type(t) is not VTensor:
        return
    if v is None or t.numel() > vtensor._value_limit(_runtime_mod.get(), t.dtype):
        t._v = None
        return
    v = v.to(dtype=t.dtype).reshape(t.shape)
    if t._v is not None and tuple(t._v.shape) == tuple(t.shape):
        t._v.copy_(v)
    else:
        t._v = v.clone()


def _rendezvous(group: str, rank: int, world: int, family: str, nbytes: int, dtype: torch.dtype,
                tensors: list, payload: Any) -> tuple[int, list]:
    """Launch the collective on this rank's stream and wait for every rank's arrival."""
    rt = _runtime_mod.get()
    gpus = rt.gpus
    dev = tensors[0]._dev if tensors and type(tensors[0]) is VTensor else gpus.current_device()
    stream = gpus.current_stream(dev)
    host = rt.clock.now()
    arrival = max(host, gpus.stream_ready(dev, stream))
    from revati.replay.op_mapping import VocabOp  # noqa: F401 (vocabulary documented there)
    from revati.shim.timing import dtype_name

    cost = 0
    if world > 1 and nbytes > 0:
        cost = int(rt.predictor.predict_ns(family, {"message_bytes": nbytes, "world_size": world},
                                           dtype_name(dtype) or "bf16"))
    elif world > 1:
        cost = int(rt.predictor.predict_ns(family, {"message_bytes": 4, "world_size": world}, "fp32"))
    seq = _next_seq(group)
    # the values travel pickled: the timekeeper's wire carries bytes (shim/coord/wire.py)
    res = _coordinator().collective(group, seq, rank, world, arrival, cost,
                                    None if payload is None else _dumps(payload))
    completion, payloads = (res.completion_ns, res.payloads) if hasattr(res, "completion_ns") else res
    payloads = [None if p is None else pickle.loads(p) for p in payloads]
    gpus.wait_until(dev, stream, completion)
    gpus.collective_ns_total += cost
    if rt.timeline.enabled:
        rt.timeline.kernel(dev, stream, f"{family} (x{world})", completion - cost, cost)
    rt.clock.charge(rt.config.launch_overhead_ns)
    return completion, list(payloads)


def _work(result) -> Any:
    from torch._C._distributed_c10d import _create_work_from_future

    fut = torch.futures.Future()
    fut.set_result(result)
    return _create_work_from_future(fut).boxed()


def _nbytes(tensors: list) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _guard(fn):
    """Exclude revati's own CPU time; the rendezvous itself is a wait and costs no CPU."""
    def wrapper(func, args, kwargs):
        rt = _runtime_mod.get()
        with ShimCall(rt):
            rt.stats.ops += 1
            return fn(func, args, kwargs)
    return wrapper


# -- c10d ops on virtual tensors ----------------------------------------------------------------

@_guard
def _allreduce(func, args, kwargs):
    tensors, pg, op = args[0], args[1], args[2]
    group, rank, world = _pg_info(pg)
    payloads = _rendezvous(group, rank, world, "all_reduce", _nbytes(tensors), tensors[0].dtype,
                           tensors, _values(tensors))[1]
    kind = _reduce_kind(op)
    if all(p is not None for p in payloads):
        for i, t in enumerate(tensors):
            _set_value(t, _combine(kind, [p[i] for p in payloads]))
    else:
        for t in tensors:
            _set_value(t, None)
    return tensors, _work(tensors)


@_guard
def _broadcast(func, args, kwargs):
    tensors, pg, root = args[0], args[1], args[2]
    group, rank, world = _pg_info(pg)
    payload = _values(tensors) if rank == root else None
    payloads = _rendezvous(group, rank, world, "all_gather", _nbytes(tensors), tensors[0].dtype, tensors, payload)[1]
    src = payloads[root] if root < len(payloads) else None
    for i, t in enumerate(tensors):
        _set_value(t, src[i] if src is not None else None)
    return tensors, _work(tensors)


@_guard
def _allgather_base(func, args, kwargs):
    out, inp, pg = args[0], args[1], args[2]
    group, rank, world = _pg_info(pg)
    payloads = _rendezvous(group, rank, world, "all_gather", _nbytes([out]), out.dtype, [out], _values([inp]))[1]
    _set_value(out, torch.cat([p[0].reshape(-1) for p in payloads]) if all(p is not None for p in payloads) else None)
    return out, _work(out)


@_guard
def _allgather(func, args, kwargs):
    outs, inps, pg = args[0], args[1], args[2]
    group, rank, world = _pg_info(pg)
    flat = [t for lst in outs for t in lst]
    payloads = _rendezvous(group, rank, world, "all_gather", _nbytes(flat), inps[0].dtype, flat, _values(inps))[1]
    ok = all(p is not None for p in payloads)
    for i, lst in enumerate(outs):
        for r, t in enumerate(lst):
            _set_value(t, payloads[r][i] if ok else None)
    return outs, _work(outs)


@_guard
def _reduce_scatter_base(func, args, kwargs):
    out, inp, pg, op = args[0], args[1], args[2], args[3]
    group, rank, world = _pg_info(pg)
    payloads = _rendezvous(group, rank, world, "reduce_scatter", _nbytes([inp]), inp.dtype, [out], _values([inp]))[1]
    if all(p is not None for p in payloads):
        total = _combine(_reduce_kind(op), [p[0] for p in payloads]).reshape(-1)
        _set_value(out, total.chunk(world)[rank])
    else:
        _set_value(out, None)
    return out, _work(out)


@_guard
def _reduce_scatter(func, args, kwargs):
    outs, inps, pg, op = args[0], args[1], args[2], args[3]
    group, rank, world = _pg_info(pg)
    flat_in = [t for lst in inps for t in lst]
    _rendezvous(group, rank, world, "reduce_scatter", _nbytes(flat_in), flat_in[0].dtype, outs, None)
    for t in outs:
        _set_value(t, None)
    return outs, _work(outs)


@_guard
def _alltoall_base(func, args, kwargs):
    out, inp, pg = args[0], args[1], args[2]
    group, rank, world = _pg_info(pg)
    _rendezvous(group, rank, world, "all_gather", _nbytes([inp]), inp.dtype, [out], None)
    _set_value(out, None)
    return _work(out)


@_guard
def _barrier(func, args, kwargs):
    tensor, pg = args[0], args[1]
    group, rank, world = _pg_info(pg)
    _rendezvous(group, rank, world, "all_reduce", 4, torch.float32, [tensor], None)
    return _work([tensor])


def _p2p_key(group: str, a: int, b: int, tag: int) -> str:
    return f"{group}:p2p:{min(a, b)}-{max(a, b)}:{tag}"


@_guard
def _send(func, args, kwargs):
    tensors, pg, dst, tag = args[0], args[1], args[2], args[3]
    group, rank, world = _pg_info(pg)
    key = _p2p_key(group, rank, dst, tag)
    side = 0 if rank < dst else 1
    _rendezvous(key, side, 2, "send_recv", _nbytes(tensors), tensors[0].dtype, tensors, _values(tensors))
    return _work(tensors)


@_guard
def _recv(func, args, kwargs):
    tensors, pg, src, tag = args[0], args[1], args[2], args[3]
    group, rank, world = _pg_info(pg)
    key = _p2p_key(group, rank, src, tag)
    side = 0 if rank < src else 1
    payloads = _rendezvous(key, side, 2, "send_recv", _nbytes(tensors), tensors[0].dtype, tensors, None)[1]
    sent = payloads[1 - side]
    for i, t in enumerate(tensors):
        _set_value(t, sent[i] if sent is not None else None)
    return _work(tensors)


def _c10d_handlers() -> dict:
    c10d = torch.ops.c10d
    table = {
        "allreduce_": _allreduce, "broadcast_": _broadcast, "_allgather_base_": _allgather_base,
        "allgather_": _allgather, "_reduce_scatter_base_": _reduce_scatter_base,
        "reduce_scatter_": _reduce_scatter, "alltoall_base_": _alltoall_base, "barrier": _barrier,
        "send": _send, "recv_": _recv,
    }
    out = {}
    for name, fn in table.items():
        op = getattr(c10d, name, None)
        if op is not None and hasattr(op, "default"):
            out[op.default] = fn
    return out


# -- the Python API -------------------------------------------------------------------------------

def _map_backend(backend: Any) -> Any:
    if backend is None:
        return "gloo"
    text = str(backend).lower()
    if "nccl" in text or "cuda" in text:
        return "gloo"
    return backend


def _host_rendezvous(group_obj, payload: Any) -> list:
    """An object collective or barrier: blocks the host until every rank of the group arrived."""
    import torch.distributed as dist

    rt = _runtime_mod.get()
    arrival = rt.clock.now()
    # The bookkeeping and the wait (this thread reads the timekeeper's answer itself) are
    # revati's CPU, not the program's: counted, the rank that arrived first resumed later than
    # the others by however long it polled (0.4 ms of a TP=2 barrier, varying run to run).
    with ShimCall(rt):
        group_obj = group_obj or dist.group.WORLD
        name = f"pg:{dist.distributed_c10d._get_process_group_name(group_obj)}:host"
        rank, world = dist.get_rank(group_obj), dist.get_world_size(group_obj)
        res = _coordinator().collective(name, _next_seq(name), rank, world, arrival,
                                        HOST_COLLECTIVE_LATENCY_NS if world > 1 else 0, payload)
        completion, payloads = (res.completion_ns, res.payloads) if hasattr(res, "completion_ns") else res
    rt.clock.advance_to(completion)
    return list(payloads)


def _dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    pickle.Pickler(buf).dump(obj)
    return buf.getvalue()


def install() -> None:
    import torch.distributed as dist

    special_ops._SPECIAL.update(_c10d_handlers())
    real_init, real_new_group = dist.init_process_group, dist.new_group
    real_get_backend = dist.get_backend

    def init_process_group(backend=None, *args, **kwargs):
        kwargs.pop("device_id", None)  # gloo binds no CUDA device
        mapped = _map_backend(backend)
        real_init(mapped, *args, **kwargs)
        _REQUESTED_BACKEND[dist.distributed_c10d._get_process_group_name(dist.group.WORLD)] = \
            "nccl" if mapped != backend else str(backend)

    def new_group(ranks=None, timeout=None, backend=None, *args, **kwargs):
        kwargs.pop("device_id", None)
        mapped = _map_backend(backend) if backend is not None else None
        pg = real_new_group(ranks, timeout, mapped, *args, **kwargs)
        if pg is not None and pg is not dist.GroupMember.NON_GROUP_MEMBER:
            requested = str(backend) if backend is not None else _REQUESTED_BACKEND.get(
                dist.distributed_c10d._get_process_group_name(dist.group.WORLD), "gloo")
            _REQUESTED_BACKEND[dist.distributed_c10d._get_process_group_name(pg)] = \
                "nccl" if "nccl" in requested.lower() else requested
        return pg

    def get_backend(group=None):
        try:
            name = dist.distributed_c10d._get_process_group_name(group or dist.group.WORLD)
        except Exception:
            return real_get_backend(group)
        return _REQUESTED_BACKEND.get(name) or real_get_backend(group)

    def barrier(group=None, async_op=False, device_ids=None):
        _host_rendezvous(group, None)
        return _work_py() if async_op else None

    def broadcast_object_list(object_list, src=None, group=None, device=None, group_src=None):
        src = group_src if group_src is not None else src
        rank = dist.get_rank(group)
        payloads = _host_rendezvous(group, _dumps(list(object_list)) if rank == (src or 0) else None)
        data = payloads[src or 0]
        if data is not None and rank != (src or 0):
            object_list[:] = pickle.loads(data)

    def all_gather_object(object_list, obj, group=None):
        payloads = _host_rendezvous(group, _dumps(obj))
        object_list[:] = [pickle.loads(p) for p in payloads]

    def gather_object(obj, object_gather_list=None, dst=None, group=None, group_dst=None):
        payloads = _host_rendezvous(group, _dumps(obj))
        if object_gather_list is not None:
            object_gather_list[:] = [pickle.loads(p) for p in payloads]

    def scatter_object_list(scatter_object_output_list, scatter_object_input_list=None, src=None,
                            group=None, group_src=None):
        src = group_src if group_src is not None else (src or 0)
        rank = dist.get_rank(group)
        payloads = _host_rendezvous(group, _dumps(scatter_object_input_list) if rank == src else None)
        scatter_object_output_list[0] = pickle.loads(payloads[src])[rank]

    patch(dist, "init_process_group", init_process_group)
    patch(dist, "new_group", new_group)
    patch(dist, "get_backend", get_backend)
    patch(dist, "is_nccl_available", lambda: True)
    patch(dist, "barrier", barrier)
    patch(dist, "broadcast_object_list", broadcast_object_list)
    patch(dist, "all_gather_object", all_gather_object)
    patch(dist, "gather_object", gather_object)
    patch(dist, "scatter_object_list", scatter_object_list)
    for name in ("init_process_group", "new_group", "get_backend", "barrier", "broadcast_object_list",
                 "all_gather_object", "gather_object", "scatter_object_list"):
        patch(dist.distributed_c10d, name, getattr(dist, name))


def _work_py():
    from torch._C._distributed_c10d import _create_work_from_future

    fut = torch.futures.Future()
    fut.set_result(None)
    return _create_work_from_future(fut)
