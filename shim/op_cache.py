"""What the dispatcher knows about an op: per-op schema facts and the output-metadata cache.

- ``FuncInfo`` (one per op overload, in ``_INFO``): its name, whether it is decomposed, which
  argument each return aliases (``RetAlias``), whether it overwrites its input's values;
- ``Entry`` (one per op *signature*, in ``_CACHE``): the outputs' metadata (``NewOut``,
  ``ViewOut``, ``SelfOut`` or ``ValueOut``), whether their values are computed on the CPU, and the
  predicted kernel time. A miss runs the op's meta kernel once (``_build_entry``).

The signature (``_sig_args``) is the op with its inputs' shapes, strides, offsets and dtypes and
its scalar arguments (Note [VTensor dispatch], revati/shim/dispatch.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._pytree import tree_map

from revati.errors import UnsupportedOp
from revati.shim.vtensor import META, VTensor, _itemsize, _numel, storage_nbytes

aten = torch.ops.aten

# How an output relates to the op's inputs (``*Out.mode``)
NEW, VIEW, SELF, VALUE = 0, 1, 2, 3
# What the op returns (``Entry.kind``): one tensor, a list/tuple of tensors, anything else
ONE, SEQ, OTHER = 0, 1, 2


# -- per-op information ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ArgRef:
    """Where an op argument is: ``kind`` "a" (positional, ``where`` its index) or "k"
    (keyword-only, ``where`` its name)."""
    kind: str
    where: int | str


@dataclass(frozen=True, slots=True)
class RetAlias:
    """A return that aliases the argument ``ref``; ``is_write``: the op writes it (in place, out=)."""
    ref: ArgRef
    is_write: bool


class FuncInfo:
    __slots__ = ("name", "decompose", "ret_alias", "overwrite")

    def __init__(self, func):
        self.name = func.name()
        self.decompose = False
        self.ret_alias: list[RetAlias | None] = []
        schema = func._schema
        sets: dict[str, RetAlias] = {}
        wildcard = None  # `Tensor(a -> *) self`: list returns (split, unbind, chunk) view it
        positional = 0
        for arg in schema.arguments:
            ref = ArgRef("k", arg.name) if arg.kwarg_only else ArgRef("a", positional)
            if not arg.kwarg_only:
                positional += 1
            ai = arg.alias_info
            if ai is not None:
                for s in ai.before_set:
                    sets[s] = RetAlias(ref, ai.is_write)
                if "*" in ai.after_set and wildcard is None:
                    wildcard = RetAlias(ref, ai.is_write)
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
# Output records: frozen, with slots (a slot read costs what a tuple index does on the per-op
# path). The tensor ones share their first fields (TensorOut): shape, stride, offset, dtype.

@dataclass(frozen=True, slots=True)
class TensorOut:
    """The metadata every tensor output has."""
    shape: tuple
    stride: tuple
    offset: int
    dtype: torch.dtype


@dataclass(frozen=True, slots=True)
class NewOut(TensorOut):
    """An output in a storage of its own, allocated for it."""
    nbytes: int                      # its storage's size
    mode: int = field(default=NEW, init=False)


@dataclass(frozen=True, slots=True)
class ViewOut(TensorOut):
    """An output that views the storage of the input ``base``."""
    base: ArgRef
    mode: int = field(default=VIEW, init=False)


@dataclass(frozen=True, slots=True)
class SelfOut(TensorOut):
    """An output that is the input ``target`` itself (in-place ops, out=)."""
    target: ArgRef
    changed: bool                    # the op resizes it: its metadata is set anew
    mode: int = field(default=SELF, init=False)


@dataclass(frozen=True, slots=True)
class ValueOut:
    """The whole result of an op that returns no tensors (sizes, a scalar): the same every call."""
    value: Any
    mode: int = field(default=VALUE, init=False)


class Entry:
    __slots__ = ("outs", "kind", "seq_type", "cost_ns", "label", "fallback", "small", "resizes", "valueless_work",
                 "no_cpu_kernel")

    def __init__(self):
        self.outs: list[NewOut | ViewOut | SelfOut | ValueOut] = []
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
        # The op's CPU call raised NotImplementedError for this signature: no CPU kernel, so
        # values are never asked of it again (a C++ error message per call: FA3's scheduler
        # metadata, every decode step)
        self.no_cpu_kernel = False


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
        entry.outs = [ValueOut(mout)]
        outs = []
    aliases = info.ret_alias
    for i, o in enumerate(outs):
        alias = aliases[i] if i < len(aliases) else (aliases[0] if len(aliases) == 1 else None)
        shape, stride, offset, dtype = tuple(o.shape), tuple(o.stride()), o.storage_offset(), o.dtype
        if alias is None:
            nbytes = storage_nbytes(shape, stride, offset, dtype)
            entry.outs.append(NewOut(shape, stride, offset, dtype, nbytes))
        elif alias.is_write:
            src = _ref(args, kwargs, alias.ref)  # the real input: the meta one was resized in place
            changed = isinstance(src, torch.Tensor) and \
                (tuple(src.shape), tuple(src.stride()), src.storage_offset()) != (shape, stride, offset)
            entry.resizes = entry.resizes or changed
            entry.outs.append(SelfOut(shape, stride, offset, dtype, alias.ref, changed))
        else:
            entry.outs.append(ViewOut(shape, stride, offset, dtype, alias.ref))
        limit = vmax if not (o.dtype.is_floating_point or o.dtype.is_complex) else vmax_float
        if _numel(o.shape) > limit:
            entry.small = False
    for spec in entry.outs:
        if spec.mode == SELF or (spec.mode == NEW and not (spec.dtype.is_floating_point
                                                           or spec.dtype.is_complex)
                                 and _numel(spec.shape) <= vmax):
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


def _ref(args, kwargs, ref: ArgRef):
    """The argument ``ref`` names in this call (None: an optional one not passed)."""
    kind, where = ref.kind, ref.where
    if kind == "a":
        return args[where] if where < len(args) else None
    return kwargs.get(where)
