"""Virtual CUDA tensors: shape, dtype and strides on ``cuda:N``, no device memory.

# Note [VTensor dispatch]
# A VTensor is a wrapper tensor subclass; every aten or custom op that touches one reaches
# ``_dispatch`` (the Python dispatch key). Factory ops that name a cuda device (torch.empty,
# torch.zeros, nn.Linear(device="cuda"), tensor.cuda(), ...) reach ``_empty_*`` through Python
# kernels registered for the CUDA dispatch key, so no dispatch mode is needed and every thread
# of the program is covered. For each op:
#   1. output metadata comes from a cache keyed by (op, input shapes/strides/offsets/dtypes,
#      scalar arguments); a miss runs the op's meta kernel once;
#   2. outputs that alias an input (views, in-place, out=) share its storage; new outputs get
#      a storage accounted by the caching-allocator model (OOM as on the real GPU);
#   3. small tensors carry real CPU values (see Note [Device-to-host value policy]);
#   4. the op's predicted kernel time is launched on the current stream (Note [Streams and
#      synchronisation]) and the host is charged the launch overhead.
# The CPU time spent here is excluded from the host clock (Note [Virtual host clock]).
# Composite ops that arrive whole (under inference_mode) are decomposed, except those kept
# whole because the GPU runs them as one kernel group (KEEP_WHOLE).
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

import torch
from torch.utils._pytree import tree_map

from revati.errors import UnsupportedOp
from revati.shim import runtime as _runtime_mod
from revati.shim.allocator import AllocatorOOM
from revati.shim.clock import cpu_ns

aten = torch.ops.aten
META = torch.device("meta")
CPU = torch.device("cpu")

_DEVICES = [torch.device("cuda", i) for i in range(64)]
_TLS = threading.local()

NEW, VIEW, SELF = 0, 1, 2
ONE, SEQ, OTHER = 0, 1, 2


class VStorage:
    """A virtual allocation: the allocator block is returned when the last view dies."""

    __slots__ = ("block", "device", "nbytes", "__weakref__")

    def __init__(self, device: int, nbytes: int):
        self.device = device
        self.nbytes = nbytes
        self.block = None
        if nbytes > 0:
            gpus = _runtime_mod._RUNTIME.gpus  # type: ignore[union-attr]
            try:
                self.block = gpus.allocators[device].malloc(nbytes, gpus.current_stream(device))
            except AllocatorOOM as exc:
                raise _oom_error(exc, device) from None

    def __del__(self):
        block = self.block
        if block is not None:
            rt = _runtime_mod._RUNTIME
            if rt is not None:
                rt.gpus.allocators[self.device].free(block)
            self.block = None

    @property
    def address(self) -> int:
        return self.block.address if self.block is not None else 0


def _oom_error(exc: AllocatorOOM, device: int) -> Exception:
    st = exc.stats
    gib = 1 << 30
    total = _runtime_mod._RUNTIME.gpus.spec.memory_bytes  # type: ignore[union-attr]
    msg = (f"CUDA out of memory. Tried to allocate {_fmt_bytes(exc.requested_bytes)}. GPU {device} has a total "
           f"capacity of {total / gib:.2f} GiB of which "
           f"{_fmt_bytes(max(exc.capacity_bytes - st.reserved_bytes, 0))} is free. Of the allocated memory "
           f"{_fmt_bytes(st.allocated_bytes)} is allocated by PyTorch, and "
           f"{_fmt_bytes(st.reserved_bytes - st.allocated_bytes)} is reserved by PyTorch but unallocated. "
           "(revati virtual GPU)")
    return torch.cuda.OutOfMemoryError(msg)


def _fmt_bytes(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"


class VTensor(torch.Tensor):
    """A tensor on a virtual CUDA device. See Note [VTensor dispatch]."""

    # No __slots__: torch.utils.swap_tensors (Module.to with swapping) needs identical slots.
    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})

    def __repr__(self, *, tensor_contents=None):
        val = ""
        v = self.__dict__.get("_v")
        if v is not None and v.numel() <= 8:
            val = f", value={v.tolist()}"
        return f"VTensor(size={tuple(self.shape)}, dtype={self.dtype}, device='{self.device}'{val})"

    def __deepcopy__(self, memo):
        out = self.clone()
        memo[id(self)] = out
        out.requires_grad_(self.requires_grad)
        return out

    def __reduce_ex__(self, proto):
        raise TypeError("revati virtual CUDA tensors cannot be pickled; move them to the CPU first")

    def tolist(self):
        return self.cpu().tolist()

    def numpy(self, *, force: bool = False):
        raise TypeError(f"can't convert {self.device} device type tensor to numpy. "
                        "Use Tensor.cpu() to copy the tensor to host memory first.")

    def untyped_storage(self):
        raise RuntimeError("revati: virtual CUDA tensors have no storage to access")

    def data_ptr(self) -> int:
        st = self.__dict__.get("_st")
        base = st.address if st is not None else 0
        return base + self.storage_offset() * self.element_size()


def new_vtensor(shape, stride, offset: int, dtype: torch.dtype, dev: int,
                storage: VStorage | None, value: torch.Tensor | None = None) -> VTensor:
    t = torch.Tensor._make_wrapper_subclass(
        VTensor, shape, strides=stride, storage_offset=offset, dtype=dtype, device=_DEVICES[dev])
    t._st = storage
    t._v = value
    t._dev = dev
    return t


def storage_nbytes(shape, stride, offset: int, dtype: torch.dtype) -> int:
    if any(s == 0 for s in shape):
        return 0
    extent = 1 + offset + sum((s - 1) * st for s, st in zip(shape, stride))
    return extent * _itemsize(dtype)


_ITEMSIZE: dict[torch.dtype, int] = {}


def _itemsize(dtype: torch.dtype) -> int:
    size = _ITEMSIZE.get(dtype)
    if size is None:
        size = _ITEMSIZE[dtype] = torch.empty((), dtype=dtype, device=META).element_size()
    return size


def alloc_vtensor(shape, stride, dtype: torch.dtype, dev: int, offset: int = 0) -> VTensor:
    st = VStorage(dev, storage_nbytes(shape, stride, offset, dtype))
    return new_vtensor(shape, stride, offset, dtype, dev, st)


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def _value_limit(rt, dtype: torch.dtype) -> int:
    """Largest tensor of this dtype that carries real values (Note [Device-to-host value policy])."""
    if dtype.is_floating_point or dtype.is_complex:
        return rt.config.value_max_float_elements
    return rt.config.value_max_elements


# -- per-op information ---------------------------------------------------------------------

class FuncInfo:
    __slots__ = ("name", "decompose", "ret_alias", "overwrite")

    def __init__(self, func):
        self.name = func.name()
        self.decompose = False
        self.ret_alias: list[tuple[str, Any, bool] | None] = []
        schema = func._schema
        sets: dict[str, tuple[str, Any, bool]] = {}
        wildcard = None  # `Tensor(a -> *) self`: list returns (split, unbind, chunk) view it
        positional = 0
        for arg in schema.arguments:
            ref = ("k", arg.name) if arg.kwarg_only else ("a", positional)
            if not arg.kwarg_only:
                positional += 1
            ai = arg.alias_info
            if ai is not None:
                for s in ai.before_set:
                    sets[s] = (ref[0], ref[1], ai.is_write)
                if "*" in ai.after_set and wildcard is None:
                    wildcard = (ref[0], ref[1], ai.is_write)
        for ret in schema.returns:
            ai = ret.alias_info
            if ai is None:
                self.ret_alias.append(None)
            elif not ai.before_set:
                # `Tensor(a)[]`: the element alias is not exposed; the set is the wildcard arg's
                self.ret_alias.append(wildcard)
            else:
                self.ret_alias.append(next((sets[s] for s in ai.before_set if s in sets), None))
        base = self.name.split("::")[-1]
        self.overwrite = base in OVERWRITE_OPS


# GEMMs, convolutions and attention: computing their values on the CPU costs far more than
# the values are worth (they are float activations, never control flow).
NO_VALUE_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "einsum",
                          "convolution", "conv1d", "conv2d", "_convolution", "scaled_dot_product_attention",
                          "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                          "_scaled_dot_product_cudnn_attention", "cdist", "tensordot"})
OVERWRITE_OPS = frozenset({"fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_", "exponential_"})

# Composite ops the GPU runs as one kernel (group): never decomposed when they arrive whole.
KEEP_WHOLE: set = {aten.linear.default, aten.scaled_dot_product_attention.default, aten.matmul.default}
_INFO: dict = {}


def _func_info(func) -> FuncInfo:
    info = _INFO.get(func)
    if info is None:
        info = FuncInfo(func)
        if func not in KEEP_WHOLE and func.namespace == "aten":
            info.decompose = torch._C._dispatch_has_kernel_for_dispatch_key(
                func.name(), "CompositeImplicitAutograd")
        _INFO[func] = info
    return info


# -- the output-metadata cache --------------------------------------------------------------

class Entry:
    __slots__ = ("outs", "kind", "seq_type", "cost_ns", "label", "fallback", "small", "resizes", "valueless_work")

    def __init__(self):
        self.outs: list[tuple] = []
        self.kind = OTHER
        self.seq_type = tuple
        self.cost_ns: int | None = None
        self.label = ""
        self.fallback = False
        self.small = True
        self.resizes = False
        # With value-less inputs, is there anything to do for values? (in-place targets lose
        # theirs; small integer/bool outputs get policy values)
        self.valueless_work = False


_CACHE: dict = {}


class _Unhashable(Exception):
    pass


_SCALARS = (int, float, bool, str, torch.dtype, torch.device, torch.memory_format, torch.layout, type(None))


def _sig_args(args, vts: list) -> tuple:
    """The cache-key part for a flat argument tuple (the common case, without recursion)."""
    out = []
    append = out.append
    for x in args:
        t = type(x)
        if t is VTensor:
            vts.append(x)
            append((x.shape, x.stride(), x.storage_offset(), x.dtype))
        elif t in _SCALARS:
            append(x)
        else:
            append(_sig_into(x, vts))
    return tuple(out)


def _sig_into(x, vts: list) -> Any:
    if type(x) is VTensor:
        vts.append(x)
        return (x.shape, x.stride(), x.storage_offset(), x.dtype)
    if isinstance(x, torch.Tensor):
        return ("cpu", x.shape, x.stride(), x.storage_offset(), x.dtype, x.device.type)
    if isinstance(x, (list, tuple)):
        return tuple(_sig_into(y, vts) for y in x)
    if isinstance(x, (int, float, bool, str, torch.dtype, torch.device, torch.memory_format,
                      torch.layout, type(None))):
        return x
    if type(x) in HASHABLE_ARG_TYPES:
        return x
    if isinstance(x, torch.Generator):
        return "generator"  # output metadata and cost do not depend on the generator's state
    raise _Unhashable(type(x).__name__)


# Argument types (beyond scalars) that can be part of an op-cache key as they are: hashable
# value types engines pass to their custom ops (vLLM's LayerName); adapters add theirs.
HASHABLE_ARG_TYPES: set = set()


def _meta_of(x):
    if type(x) is VTensor:
        n = storage_nbytes(x.shape, x.stride(), x.storage_offset(), x.dtype) // _itemsize(x.dtype)
        base = torch.empty((max(n, 1),), dtype=x.dtype, device=META)
        return base.as_strided(x.shape, x.stride(), x.storage_offset())
    if isinstance(x, torch.Tensor):
        return x.to(META) if x.device.type != "meta" else x
    if isinstance(x, torch.device) and x.type == "cuda":
        return META
    if isinstance(x, torch.Generator):
        return None  # shapes do not depend on it, and meta kernels (refs) reject one
    return x


def _cpu_of(x):
    if type(x) is VTensor:
        return x._v
    if isinstance(x, torch.device) and x.type == "cuda":
        return CPU
    return x


def _cpu_args(args: tuple) -> list:
    # tree_map over an op's arguments, for the only containers aten schemas take (lists and
    # tuples of tensors/scalars): a third of the cost of computing a small tensor's values.
    out = []
    for x in args:
        tx = type(x)
        if tx is VTensor:
            out.append(x._v)
        elif tx is list or tx is tuple:
            out.append(tx(_cpu_args(x)))
        else:
            out.append(_cpu_of(x))
    return out


def _cpu_kwargs(kwargs: dict) -> dict:
    if not kwargs:
        return {}
    return dict(zip(kwargs, _cpu_args(tuple(kwargs.values()))))


def _build_entry(func, info: FuncInfo, args, kwargs, key, rt) -> Entry:
    margs = tree_map(_meta_of, args)
    mkwargs = tree_map(_meta_of, kwargs)
    try:
        mout = func(*margs, **mkwargs)
    except NotImplementedError as exc:
        raise UnsupportedOp(info.name, f"no meta implementation ({exc})") from None
    flat_in = [a for a in margs if isinstance(a, torch.Tensor)]
    entry = Entry()
    vmax = rt.config.value_max_elements
    vmax_float = rt.config.value_max_float_elements
    if info.name.split("::")[-1] in NO_VALUE_OPS:
        vmax = vmax_float = -1  # heavy kernels: never recomputed on the CPU for values
    if isinstance(mout, torch.Tensor):
        entry.kind = ONE
        outs = [mout]
    elif isinstance(mout, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in mout) and mout:
        entry.kind = SEQ
        entry.seq_type = type(mout)
        outs = list(mout)
    else:
        entry.kind = OTHER
        entry.outs = [("value", mout)]
        outs = []
    aliases = info.ret_alias
    for i, o in enumerate(outs):
        alias = aliases[i] if i < len(aliases) else (aliases[0] if len(aliases) == 1 else None)
        meta = (tuple(o.shape), tuple(o.stride()), o.storage_offset(), o.dtype)
        if alias is None:
            entry.outs.append((NEW,) + meta + (storage_nbytes(*meta),))
        elif alias[2]:
            src = _ref(args, kwargs, alias)  # the real input: the meta one was resized in place
            changed = (tuple(src.shape), tuple(src.stride()), src.storage_offset()) != meta[:3] \
                if isinstance(src, torch.Tensor) else False
            entry.resizes = entry.resizes or changed
            entry.outs.append((SELF,) + meta + ((alias[0], alias[1]), changed))
        else:
            entry.outs.append((VIEW,) + meta + ((alias[0], alias[1]),))
        limit = vmax if not (o.dtype.is_floating_point or o.dtype.is_complex) else vmax_float
        if _numel(o.shape) > limit:
            entry.small = False
    for spec in entry.outs:
        if spec[0] == SELF or (spec[0] == NEW and not (spec[4].is_floating_point or spec[4].is_complex)
                               and _numel(spec[1]) <= vmax):
            entry.valueless_work = True
    # what the op costs on the GPU
    in_shapes = [tuple(a.shape) if isinstance(a, torch.Tensor) else None for a in margs]
    in_dtypes = [a.dtype if isinstance(a, torch.Tensor) else None for a in margs]
    for kname in ("out",):
        if kname in mkwargs and isinstance(mkwargs[kname], torch.Tensor):
            in_shapes.append(tuple(mkwargs[kname].shape))
            in_dtypes.append(mkwargs[kname].dtype)
    out_shapes = [tuple(o.shape) for o in outs]
    with rt.busy():   # a first lookup may load kernel tables (native threads: no stall)
        cost = rt.coster.cost(info.name, in_shapes, in_dtypes, out_shapes)
    if cost is not None:
        entry.cost_ns, entry.label, entry.fallback = cost
    del flat_in
    if key is not None:
        _CACHE[key] = entry
    return entry


def _ref(args, kwargs, alias):
    kind, where = alias[0], alias[1]
    if kind == "a":
        return args[where] if where < len(args) else None
    return kwargs.get(where)


# -- dispatch ---------------------------------------------------------------------------------

class ShimCall:
    """``with ShimCall(rt):`` -- the CPU time of the outermost shim call on this thread is
    revati's, not the program's (Note [Virtual host clock]): excluded from the host clock when
    it ends. ``_dispatch``, the per-op hot path, does the same inline."""

    __slots__ = ("rt", "depth", "cpu0")

    def __init__(self, rt):
        self.rt = rt

    def __enter__(self):
        self.depth = depth = getattr(_TLS, "depth", 0)
        self.cpu0 = cpu_ns()
        _TLS.depth = depth + 1
        return self

    def __exit__(self, *exc):
        _TLS.depth = self.depth
        if self.depth == 0:
            self.rt.clock.exclude_since(self.cpu0)
        return False


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
        out = entry.outs[0][1]
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
            if spec[0] == SELF:
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
    mode = spec[0]
    if mode == NEW:
        _, shape, stride, offset, dtype, nbytes = spec
        return new_vtensor(shape, stride, offset, dtype, dev, VStorage(dev, nbytes))
    if mode == VIEW:
        _, shape, stride, offset, dtype, ref = spec
        base = _ref(args, kwargs, ref)
        if _inference_mode() and not base.is_inference():
            # A view of a normal tensor is a normal tensor even under inference_mode: autograd
            # shares the base's version counter with it, which an inference tensor cannot take.
            with torch.inference_mode(False):
                return new_vtensor(shape, stride, offset, dtype, base._dev, base._st)
        return new_vtensor(shape, stride, offset, dtype, base._dev, base._st)
    _, shape, stride, offset, dtype, ref, changed = spec
    t = _ref(args, kwargs, ref)
    if changed:
        _set_metadata(t, shape, stride, offset, dtype)
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
        try:
            res = func(*_cpu_args(args), **_cpu_kwargs(kwargs))
        except Exception:  # an op with no CPU kernel for this dtype: no values, never an error
            res = None
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
        mode = spec[0]
        if mode == SELF:
            o._v = None
        elif mode == NEW and _numel(spec[1]) <= rt.config.value_max_elements and vts:
            if in_shapes is None:
                in_shapes = [tuple(t.shape) for t in vts]
            o._v = policy.fill(info.name, spec[1], spec[4], in_shapes, i)
        else:
            o._v = None


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
        shapes = [s for s in entry.outs if s[0] != "value"]
        res = tuple(rt.policy.read(s[1], s[4]) for s in shapes)
        res = res[0] if entry.kind == ONE else entry.seq_type(res)
    return res


# -- host <-> device ----------------------------------------------------------------------------

def _sync_for_read(t: VTensor, rt, what: str, extra_ns: int = 0) -> None:
    gpus = rt.gpus
    ready = gpus.stream_ready(t._dev, gpus.current_stream(t._dev))
    gpus.host_wait(max(ready, rt.clock.now()) + extra_ns, what)


def _copy_ns(nbytes: int, rt) -> int:
    bw = rt.gpus.spec.pcie_bandwidth_bytes_per_s / 2.0  # one direction
    return int(D2H_LATENCY_NS + nbytes / bw * 1e9)


D2H_LATENCY_NS = 8_000


def _guarded(fn):
    """Run a special handler with its CPU time excluded from the host clock."""
    def wrapper(func, args, kwargs):
        rt = _runtime_mod._RUNTIME
        with ShimCall(rt):
            rt.stats.ops += 1
            return fn(func, args, kwargs, rt)
    return wrapper


@_guarded
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


@_guarded
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


@_guarded
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


def _noop(func, args, kwargs):
    return None


def _is_pinned(func, args, kwargs):
    return False


@_guarded
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


@_guarded
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


# -- factories through the CUDA dispatch key ------------------------------------------------------

_FACTORY_CACHE: dict = {}


def _cuda_index(device) -> int:
    if device is not None:
        device = torch.device(device)
        if device.index is not None:
            return device.index
    return _runtime_mod._RUNTIME.gpus.current_device()  # type: ignore[union-attr]


_FIRST_USE_DONE: list[bool] = []


def _first_use() -> None:
    """Imports that torch makes only because a tensor subclass is about, done on the shim's time.

    The first op on a VTensor makes torch's C++ argument parser import
    ``torch.distributed.tensor`` (sympy and all: ~0.5 s of CPU here) to check for DTensor. A
    GPU box running plain tensors never pays that, so it must not reach the program's clock
    (DESIGN §4: nothing revati does for itself moves a program's clock); the first factory call
    runs it inside its excluded region.
    """
    _FIRST_USE_DONE.append(True)
    try:
        import torch.distributed.tensor  # noqa: F401
    except Exception:  # a build without distributed: nothing to pre-import
        pass


def _factory(shape, stride, dtype, device) -> VTensor:
    rt = _runtime_mod._RUNTIME
    with ShimCall(rt):
        if not _FIRST_USE_DONE:
            _first_use()
        rt.stats.ops += 1
        dev = _cuda_index(device)
        t = alloc_vtensor(shape, stride, dtype, dev)
        if not dtype.is_floating_point and not dtype.is_complex and _numel(shape) <= rt.config.value_max_elements:
            t._v = torch.zeros(shape, dtype=dtype)  # small index buffers carry values from birth
        return t


def _empty_memory_format(size, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    dtype = dtype or torch.get_default_dtype()
    key = (tuple(size), dtype, memory_format)
    meta = _FACTORY_CACHE.get(key)
    if meta is None:
        m = torch.empty(size, dtype=dtype, device=META, memory_format=memory_format or torch.contiguous_format)
        meta = _FACTORY_CACHE[key] = (tuple(m.shape), tuple(m.stride()))
    return _factory(meta[0], meta[1], dtype, device)


def _empty_strided(size, stride, dtype=None, layout=None, device=None, pin_memory=None):
    return _factory(tuple(size), tuple(stride), dtype or torch.get_default_dtype(), device)


_LIBRARIES: list = []


def register_factories() -> None:
    """Route cuda factory ops to revati for every thread (Note [VTensor dispatch])."""
    if _LIBRARIES:
        return
    import warnings

    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        # On CUDA builds this overrides the real CUDA kernels, which is the point.
        warnings.simplefilter("ignore")
        lib.impl("empty.memory_format", _empty_memory_format, "CUDA")
        lib.impl("empty_strided", _empty_strided, "CUDA")
    _LIBRARIES.append(lib)


def is_virtual(t: Any) -> bool:
    return type(t) is VTensor


def value_of(t: VTensor) -> torch.Tensor | None:
    return t.__dict__.get("_v")


_ = weakref  # storages are freed by refcount (VStorage.__del__); kept for debugging hooks


def register_special(func, handler) -> None:
    """Handle ``func`` on virtual tensors with ``handler(func, args, kwargs)`` instead of its Meta kernel.

    For ops whose cost or result depends on more than input shapes (engine attention timed
    from the scheduled batch, aliasing ops whose schema does not say so). The handler's CPU
    time is excluded from the host clock like the shim's own (Note [Virtual host clock]).
    """
    def guarded(f, args, kwargs):
        rt = _runtime_mod._RUNTIME
        with ShimCall(rt):
            rt.stats.ops += 1
            return handler(f, args, kwargs)
    _SPECIAL[func] = guarded
