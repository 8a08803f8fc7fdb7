"""Cuda factory ops make virtual tensors (Note [VTensor dispatch], revati/shim/dispatch.py).

``torch.empty(..., device="cuda")``, ``torch.zeros``, ``nn.Linear(device="cuda")``,
``tensor.cuda()``, ... all reach ``empty.memory_format`` or ``empty_strided`` for the CUDA
dispatch key; ``register_factories`` routes those two to Python kernels that return a VTensor,
for every thread of the program (no dispatch mode needed).
"""

from __future__ import annotations

import torch

from revati.shim import runtime as _runtime_mod
from revati.shim.shim_call import ShimCall
from revati.shim.vtensor import META, VTensor, _numel, alloc_vtensor

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
    shape, stride = meta
    return _factory(shape, stride, dtype, device)


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

