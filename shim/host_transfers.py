"""Device <-> host transfers of virtual tensors: what a read costs the host, and what it returns.

A read (``.item()``, ``.cpu()``, ``.tolist()``, ``copy_`` to a CPU tensor, an op with a
``device="cpu"`` result) synchronises the host with the tensor's stream and the PCIe copy
(``_copy_ns``); it returns the tensor's CPU values, or the value policy's where it carries none
(Note [Device-to-host value policy], revati/shim/values.py). Host -> device copies launch a copy
on the current stream and give a small destination the source's values.

``_local_scalar_dense``, ``_to_copy`` and ``_copy_`` are special-op handlers (revati/shim/
special_ops.py); device -> device copies fall back to the generic op path.
"""

from __future__ import annotations

import torch

from revati.shim.clock import cpu_ns
from revati.shim.op_cache import ONE, VALUE, _func_info, _INFO
from revati.shim.shim_call import _TLS, guarded
from revati.shim.vtensor import CPU, VTensor, _cpu_args, _cpu_kwargs, _value_limit

D2H_LATENCY_NS = 8_000


def _run(func, info, args, kwargs, rt, cpu0: int):
    """Trampoline to ``revati.shim.dispatch._run``, the generic op path: the dispatcher imports
    this module (Note [Late-bound dispatcher], revati/shim/vtensor.py)."""
    global _run
    from revati.shim.dispatch import _run
    return _run(func, info, args, kwargs, rt, cpu0)


def _to_host_result(func, args, kwargs, entry, vts, rt):
    """An op on virtual tensors asked for a CPU result (device='cpu' kwarg)."""
    for t in vts:
        _sync_for_read(t, rt, "device->host copy")
    res = None
    if all(t._v is not None for t in vts):
        try:
            res = func(*_cpu_args(args), **{**_cpu_kwargs(kwargs), "device": CPU})
        except Exception:
            res = None
    if res is None:
        shapes = [s for s in entry.outs if s.mode != VALUE]
        res = tuple(rt.policy.read(s.shape, s.dtype) for s in shapes)
        res = res[0] if entry.kind == ONE else entry.seq_type(res)
    return res


def _sync_for_read(t: VTensor, rt, what: str, extra_ns: int = 0) -> None:
    gpus = rt.gpus
    ready = gpus.stream_ready(t._dev, gpus.current_stream(t._dev))
    gpus.host_wait(max(ready, rt.clock.now()) + extra_ns, what)


def _copy_ns(nbytes: int, rt) -> int:
    bw = rt.gpus.spec.pcie_bandwidth_bytes_per_s / 2.0  # one direction
    return int(D2H_LATENCY_NS + nbytes / bw * 1e9)


@guarded
def _local_scalar_dense(func, args, kwargs, rt):
    t = args[0]
    _sync_for_read(t, rt, ".item()", _copy_ns(t.element_size(), rt))
    rt.stats.d2h_reads += 1
    v = t._v
    if v is None:
        return rt.policy.read((), t.dtype).item()
    return v.reshape(()).item() if v.numel() == 1 else v.item()


def _host_value(t: VTensor, rt) -> torch.Tensor:
    v = t._v
    if v is None:
        return rt.policy.read(tuple(t.shape), t.dtype)
    return v


@guarded
def _to_copy(func, args, kwargs, rt):
    x = args[0]
    device = kwargs.get("device")
    if device is not None and torch.device(device).type == "cpu" and type(x) is VTensor:
        if not kwargs.get("non_blocking", False):
            _sync_for_read(x, rt, "device->host copy", _copy_ns(x.numel() * x.element_size(), rt))
        rt.stats.d2h_reads += 1
        val = _host_value(x, rt)
        dtype = kwargs.get("dtype") or x.dtype
        out = val.to(dtype=dtype, copy=True)
        mf = kwargs.get("memory_format")
        return out.contiguous(memory_format=mf) if mf is not None and mf != torch.preserve_format else out
    _TLS.depth -= 1  # the generic path measures itself
    try:
        info = _INFO.get(func) or _func_info(func)
        return _run(func, info, args, kwargs, rt, cpu_ns())
    finally:
        _TLS.depth += 1


@guarded
def _copy_(func, args, kwargs, rt):
    dst, src = args[0], args[1]
    non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
    dst_v, src_v = type(dst) is VTensor, type(src) is VTensor
    if dst_v and not src_v:  # host -> device
        rt.stats.h2d_copies += 1
        gpus = rt.gpus
        nbytes = src.numel() * src.element_size()
        end = gpus.launch(_copy_ns(nbytes, rt), "memcpy HtoD", rt.clock.now(), dst._dev)
        rt.clock.charge(rt.config.launch_overhead_ns)
        if not non_blocking and end >= 0:
            gpus.host_wait(end, "host->device copy")
        if dst.numel() <= _value_limit(rt, dst.dtype):
            val = src.detach().to(dtype=dst.dtype).expand(dst.shape)
            if dst._v is not None and tuple(dst._v.shape) == tuple(dst.shape):
                dst._v.copy_(val)
            else:
                dst._v = val.clone()
        else:
            dst._v = None
        return dst
    if src_v and not dst_v:  # device -> host
        if not non_blocking:
            _sync_for_read(src, rt, "device->host copy", _copy_ns(src.numel() * src.element_size(), rt))
        rt.stats.d2h_reads += 1
        dst.copy_(_host_value(src, rt))
        return dst
    # device -> device: a copy kernel; a small destination takes the source's value
    _TLS.depth -= 1
    try:
        info = _INFO.get(func) or _func_info(func)
        had = src._v is not None
        out = _run(func, info, args, kwargs, rt, cpu_ns())
        if dst._v is None and had and dst.numel() <= _value_limit(rt, dst.dtype):
            dst._v = src._v.detach().to(dtype=dst.dtype).expand(dst.shape).clone()
        return out
    finally:
        _TLS.depth += 1

