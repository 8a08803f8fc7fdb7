"""The per-op path for virtual tensors: ``_dispatch`` -> ``_run`` (outputs, values, time).

# Note [VTensor dispatch]
# A VTensor is a wrapper tensor subclass; every aten or custom op that touches one reaches
# ``_dispatch`` (the Python dispatch key). Factory ops that name a cuda device (torch.empty,
# torch.zeros, nn.Linear(device="cuda"), tensor.cuda(), ...) reach revati/shim/factories.py
# through Python kernels registered for the CUDA dispatch key, so no dispatch mode is needed
# and every thread of the program is covered. For each op:
#   1. output metadata comes from a cache keyed by (op, input shapes/strides/offsets/dtypes,
#      scalar arguments); a miss runs the op's meta kernel once (revati/shim/op_cache.py);
#   2. outputs that alias an input (views, in-place, out=) share its storage; new outputs get
#      a storage accounted by the caching-allocator model (OOM as on the real GPU);
#   3. small tensors carry real CPU values (see Note [Device-to-host value policy]);
#   4. the op's predicted kernel time is launched on the current stream (Note [Streams and
#      synchronisation]) and the host is charged the launch overhead.
# Ops the meta kernel cannot answer go to a handler first (revati/shim/special_ops.py).
# The CPU time spent here is excluded from the host clock (Note [Virtual host clock]).
# Composite ops that arrive whole (under inference_mode) are decomposed, except those kept
# whole because the GPU runs them as one kernel group (KEEP_WHOLE).
"""

from __future__ import annotations

import torch

from revati.shim import runtime as _runtime_mod
from revati.shim.clock import cpu_ns
from revati.shim.host_transfers import _to_host_result
from revati.shim.op_cache import (NEW, ONE, OTHER, SELF, SEQ, VIEW, Entry, FuncInfo, _build_entry, _CACHE,
                                  _func_info, _INFO, _ref, _sig_args, _sig_into, _Unhashable)
from revati.shim.shim_call import _TLS
from revati.shim.special_ops import _SPECIAL
from revati.shim.vtensor import VStorage, VTensor, _cpu_args, _cpu_kwargs, _numel, new_vtensor, storage_nbytes

# Every name the per-op path reads is a module global bound above, at import: no attribute
# lookups on modules per op. ShimCall (revati/shim/shim_call.py) is inlined in ``_dispatch``.


def _dispatch(func, args, kwargs):
    special = _SPECIAL.get(func)
    if special is not None:
        return special(func, args, kwargs)
    info = _INFO.get(func) or _func_info(func)
    rt = _runtime_mod._RUNTIME
    if info.decompose:
        rt.stats.decomposed += 1
        return func.decompose(*args, **kwargs)
    depth = getattr(_TLS, "depth", 0)
    cpu0 = cpu_ns()
    if depth == 0:
        rt.clock.segment(func, cpu0)   # Note [Host-time drift filter]
    _TLS.depth = depth + 1
    try:
        return _run(func, info, args, kwargs, rt, cpu0)
    finally:
        _TLS.depth = depth
        if depth == 0:
            rt.clock.exclude_since(cpu0)


def _run(func, info: FuncInfo, args, kwargs, rt, cpu0: int):
    stats = rt.stats
    stats.ops += 1
    vts: list[VTensor] = []
    try:
        key = (func, _sig_args(args, vts), _sig_into(tuple(kwargs.items()), vts) if kwargs else None)
        entry = _CACHE.get(key)
    except _Unhashable as exc:
        key, entry = None, None
        stats.bypass[f"unhashable {exc}"] += 1
    if entry is None:
        stats.cache_misses += 1
        entry = _build_entry(func, info, args, kwargs, key, rt)
    else:
        stats.cache_hits += 1
    dev = vts[0]._dev if vts else _device_kwarg(kwargs, rt)
    target = kwargs.get("device")
    if target is not None and torch.device(target).type == "cpu":
        return _to_host_result(func, args, kwargs, entry, vts, rt)

    # outputs
    if entry.kind == OTHER:
        out = entry.outs[0].value
        outs = []
    else:
        outs = [_materialize(spec, args, kwargs, dev) for spec in entry.outs]
        out = outs[0] if entry.kind == ONE else entry.seq_type(outs)

    # values (Note [Device-to-host value policy])
    if entry.small or entry.resizes or info.overwrite:
        if entry.valueless_work or info.overwrite or all(t._v is not None for t in vts):
            _propagate_values(func, info, entry, args, kwargs, vts, outs, rt)
    else:
        for spec, o in zip(entry.outs, outs):
            if spec.mode == SELF:
                o._v = None

    # time
    if entry.cost_ns is not None:
        gpus = rt.gpus
        gpus.launch(entry.cost_ns, entry.label or info.name, rt.clock.now_at(cpu0), dev, fallback=entry.fallback)
        rt.clock.charge(rt.config.launch_overhead_ns)
    return out


def _device_kwarg(kwargs, rt) -> int:
    d = kwargs.get("device")
    if d is not None:
        d = torch.device(d)
        if d.type == "cuda":
            return d.index if d.index is not None else rt.gpus.current_device()
    return rt.gpus.current_device()


def _materialize(spec, args, kwargs, dev: int):
    """The output ``spec`` (an op_cache NewOut, ViewOut or SelfOut) describes, for this call."""
    mode = spec.mode
    if mode == NEW:
        return new_vtensor(spec.shape, spec.stride, spec.offset, spec.dtype, dev, VStorage(dev, spec.nbytes))
    if mode == VIEW:
        base = _ref(args, kwargs, spec.base)
        if _inference_mode() and not base.is_inference():
            # A view of a normal tensor is a normal tensor even under inference_mode: autograd
            # shares the base's version counter with it, which an inference tensor cannot take.
            with torch.inference_mode(False):
                return new_vtensor(spec.shape, spec.stride, spec.offset, spec.dtype, base._dev, base._st)
        return new_vtensor(spec.shape, spec.stride, spec.offset, spec.dtype, base._dev, base._st)
    t = _ref(args, kwargs, spec.target)
    if spec.changed:
        _set_metadata(t, spec.shape, spec.stride, spec.offset, spec.dtype)
    return t


_inference_mode = torch.is_inference_mode_enabled


def _set_metadata(t: VTensor, shape, stride, offset: int, dtype) -> None:
    """Change a VTensor's sizes in place (resize_, out= resizing, set_)."""
    need = storage_nbytes(shape, stride, offset, dtype)
    st = t._st
    if st is None or need > st.nbytes:
        st = VStorage(t._dev, need)
    repl = new_vtensor(shape, stride, offset, dtype, t._dev, st, None)
    v, dev = t.__dict__.get("_v"), t._dev
    t.data = repl
    t._st, t._dev = st, dev
    t._v = v if v is not None and tuple(v.shape) == tuple(shape) else None


def _propagate_values(func, info: FuncInfo, entry: Entry, args, kwargs, vts, outs, rt) -> None:
    all_valued = all(t._v is not None for t in vts)
    if not all_valued and info.overwrite and vts and vts[0]._v is None and entry.small:
        vts[0]._v = torch.zeros(vts[0].shape, dtype=vts[0].dtype)
        all_valued = all(t._v is not None for t in vts)
    if all_valued and entry.small:
        res, failed = None, entry.no_cpu_kernel
        if not failed:
            try:
                res = func(*_cpu_args(args), **_cpu_kwargs(kwargs))
            except NotImplementedError:
                entry.no_cpu_kernel = failed = True
            except Exception:  # a value-dependent failure: no values this time, never an error
                failed = True
        if failed:
            rt.stats.bypass[f"no cpu values: {info.name}"] += 1
        if res is not None:
            rt.stats.valued += 1
            if entry.kind == ONE:
                res_list = [res]
            elif entry.kind == SEQ:
                res_list = list(res)
            else:
                return
            for o, r in zip(outs, res_list):
                if isinstance(r, torch.Tensor):
                    o._v = r
            return
    policy = rt.policy
    in_shapes = None
    for i, (spec, o) in enumerate(zip(entry.outs, outs)):
        mode = spec.mode
        if mode == SELF:
            o._v = None
        elif mode == NEW and _numel(spec.shape) <= rt.config.value_max_elements and vts:
            if in_shapes is None:
                in_shapes = [tuple(t.shape) for t in vts]
            o._v = policy.fill(info.name, spec.shape, spec.dtype, in_shapes, i)
        else:
            o._v = None
