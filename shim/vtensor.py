"""Virtual CUDA tensors: shape, dtype and strides on ``cuda:N``, no device memory.

This module holds the tensor type and its storage: ``VTensor``, ``VStorage`` (an allocation in
the caching-allocator model), the constructors ``new_vtensor`` / ``alloc_vtensor``, storage
sizing, and a tensor's CPU values (``value_of``, ``_cpu_args``). What happens to an op on one
lives elsewhere:

- revati/shim/dispatch.py       the per-op path (``_dispatch``); see Note [VTensor dispatch] there
- revati/shim/op_cache.py       per-op metadata and the output-metadata cache
- revati/shim/special_ops.py    ops handled outside the generic path, ``register_special``
- revati/shim/host_transfers.py device<->host copies, ``.item()``, host results
- revati/shim/factories.py      cuda factory ops (torch.empty(device="cuda"), ...) -> VTensors
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch

from revati.shim import runtime as _runtime_mod
from revati.shim.allocator import AllocatorOOM

META = torch.device("meta")
CPU = torch.device("cpu")

_DEVICES = [torch.device("cuda", i) for i in range(64)]

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


class StorageInfo:
    """What ``untyped_storage()`` of a virtual tensor answers: its allocation's size, address and
    device (engines check these, e.g. whether a cached buffer was freed). Its bytes do not exist."""

    __slots__ = ("_st", "device")

    def __init__(self, st: VStorage | None, device: torch.device):
        self._st = st
        self.device = device

    def nbytes(self) -> int:
        return self._st.nbytes if self._st is not None else 0

    size = nbytes
    __len__ = nbytes

    def data_ptr(self) -> int:
        return self._st.address if self._st is not None else 0

    def element_size(self) -> int:
        return 1

    def __getattr__(self, name: str):
        raise RuntimeError(f"revati: virtual CUDA tensors have no storage to access (untyped_storage().{name})")


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
    """A tensor on a virtual CUDA device. See Note [VTensor dispatch] (revati/shim/dispatch.py)."""

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
        return StorageInfo(self.__dict__.get("_st"), self.device)

    def data_ptr(self) -> int:
        st = self.__dict__.get("_st")
        base = st.address if st is not None else 0
        return base + self.storage_offset() * self.element_size()


# Note [Late-bound dispatcher]
# The dispatcher (revati/shim/dispatch.py) builds VTensors, so it imports this module; the
# class's dispatch hook cannot import it back at import time without a cycle. ``_dispatch``
# below starts as a trampoline: the first op imports the dispatcher (loaded already by
# revati/shim/activate.py, so this is a dictionary lookup, never the program's time) and rebinds
# this module-level name to ``dispatch._dispatch``. Every later op calls it directly: the hot
# path has no extra lookup or call. host_transfers.py reaches ``dispatch._run`` the same way.

def _dispatch(func, args, kwargs):
    """Trampoline to ``revati.shim.dispatch._dispatch`` (Note [Late-bound dispatcher])."""
    global _dispatch
    from revati.shim.dispatch import _dispatch
    return _dispatch(func, args, kwargs)


def new_vtensor(shape, stride, offset: int, dtype: torch.dtype, dev: int,
                storage: VStorage | None, value: torch.Tensor | None = None) -> VTensor:
    t = torch.Tensor._make_wrapper_subclass(
        VTensor, shape, strides=stride, storage_offset=offset, dtype=dtype, device=_DEVICES[dev])
    t._st = storage
    t._v = value
    t._dev = dev
    return t


class BorrowedStorage(VStorage):
    """Another allocation's address and size, not owning it: the allocation is freed when its
    owner's last view dies, whatever borrows it (a weak reference to device memory)."""

    __slots__ = ("_address",)

    def __init__(self, owner: VStorage | None, device: int):
        self.device = device
        self.nbytes = owner.nbytes if owner is not None else 0
        self.block = None
        self._address = owner.address if owner is not None else 0

    @property
    def address(self) -> int:
        return self._address


def weak_view(t: VTensor) -> VTensor:
    """What CUDA extensions' ``weak_ref_tensor`` returns: the same memory, not kept alive. Engines
    keep such views of CUDA-graph inputs and outputs, which share one graph memory pool on a GPU;
    a view that owned its memory would keep every captured graph's buffers (SGLang's 58 prefill
    graphs: out of memory)."""
    return new_vtensor(tuple(t.shape), tuple(t.stride()), t.storage_offset(), t.dtype, t._dev,
                       BorrowedStorage(t.__dict__.get("_st"), t._dev), t.__dict__.get("_v"))


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


def is_virtual(t: Any) -> bool:
    return type(t) is VTensor


def value_of(t: VTensor) -> torch.Tensor | None:
    return t.__dict__.get("_v")


# -- CPU values of an op's arguments (Note [Device-to-host value policy]) ----------------------

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


_ = weakref  # storages are freed by refcount (VStorage.__del__); kept for debugging hooks
