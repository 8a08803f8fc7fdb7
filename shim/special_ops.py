"""Ops on virtual tensors handled outside the generic op path, and the table that names them.

The dispatcher (revati/shim/dispatch.py) looks every op up in ``_SPECIAL`` first. Handlers are
for ops whose result or cost the meta kernel cannot give: reads of values (``.item()``,
copies: revati/shim/host_transfers.py), ops whose output shape depends on values
(``nonzero``, ``unique``: ``_data_dependent``), ops that answer a Python bool from contents
(``equal``: ``_scalar_query``), and no-ops. Engine adapters add theirs with
``register_special``; collectives (revati/shim/collectives.py) add the c10d ops.
"""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_map

from revati.shim import runtime as _runtime_mod
from revati.shim.host_transfers import _copy_, _local_scalar_dense, _sync_for_read, _to_copy
from revati.shim.op_cache import _sig_into
from revati.shim.shim_call import ShimCall, guarded
from revati.shim.vtensor import VTensor, _cpu_args, _cpu_kwargs, _cpu_of, _value_limit, alloc_vtensor

aten = torch.ops.aten


def _noop(func, args, kwargs):
    return None


def _is_pinned(func, args, kwargs):
    return False


@guarded
def _data_dependent(func, args, kwargs, rt):
    """Ops whose output shape depends on values (nonzero, masked_select, unique, ...)."""
    vts: list[VTensor] = []
    _sig_into(args, vts)
    _sig_into(tuple(kwargs.items()), vts)
    dev = vts[0]._dev if vts else rt.gpus.current_device()
    for t in vts:  # the output size is copied back to the host: a sync on a real GPU
        _sync_for_read(t, rt, f"{func.name()} (data-dependent size)")
    if all(t._v is not None for t in vts):
        res = func(*_cpu_args(args), **_cpu_kwargs(kwargs))
    else:
        # No values: assume every element selected / distinct (an upper bound on the shape).
        res = func(*tree_map(lambda x: torch.ones(x.shape, dtype=x.dtype) if type(x) is VTensor else _cpu_of(x), args),
                   **tree_map(_cpu_of, kwargs))
    nbytes = sum(t.numel() * t.element_size() for t in vts)
    cost = rt.predictor.generic_ns(nbytes, 0.0, "int64", label=func.name())
    rt.gpus.launch(int(cost), func.name(), rt.clock.now(), dev, fallback=True)
    rt.clock.charge(rt.config.launch_overhead_ns)

    def wrap(r):
        if isinstance(r, torch.Tensor):
            out = alloc_vtensor(tuple(r.shape), tuple(r.stride()), r.dtype, dev)
            out._v = r if r.numel() <= _value_limit(rt, r.dtype) else None
            return out
        return r
    return tree_map(wrap, res)


@guarded
def _scalar_query(func, args, kwargs, rt):
    """Ops returning a Python bool from tensor contents (equal, is_nonzero, allclose)."""
    vts: list[VTensor] = []
    _sig_into(args, vts)
    for t in vts:
        _sync_for_read(t, rt, func.name())
    if all(t._v is not None for t in vts):
        return func(*_cpu_args(args), **_cpu_kwargs(kwargs))
    return True if func.name().endswith(("equal", "allclose")) else False


_SPECIAL: dict = {
    aten._local_scalar_dense.default: _local_scalar_dense,
    aten._to_copy.default: _to_copy,
    aten.copy_.default: _copy_,
    aten.record_stream.default: _noop,
    aten.is_pinned.default: _is_pinned,
    aten.nonzero.default: _data_dependent,
    aten.masked_select.default: _data_dependent,
    aten._unique2.default: _data_dependent,
    aten.unique_consecutive.default: _data_dependent,
    aten.unique_dim.default: _data_dependent,
    aten.equal.default: _scalar_query,
    aten.is_nonzero.default: _scalar_query,
}
for _name in ("nonzero_static", "argwhere"):
    if hasattr(aten, _name) and hasattr(getattr(aten, _name), "default"):
        _SPECIAL[getattr(aten, _name).default] = _data_dependent
if hasattr(aten.repeat_interleave, "Tensor"):
    _SPECIAL[aten.repeat_interleave.Tensor] = _data_dependent


def register_special(func, handler) -> None:
    """Handle ``func`` on virtual tensors with ``handler(func, args, kwargs)`` instead of its Meta kernel.

    For ops whose cost or result depends on more than input shapes (engine attention timed
    from the scheduled batch, aliasing ops whose schema does not say so). The handler's CPU
    time is excluded from the host clock like the shim's own (Note [Virtual host clock]).
    """
    def guarded_handler(f, args, kwargs):
        rt = _runtime_mod._RUNTIME
        with ShimCall(rt):
            rt.stats.ops += 1
            return handler(f, args, kwargs)
    _SPECIAL[func] = guarded_handler
