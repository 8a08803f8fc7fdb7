"""``torch.cuda`` entry points that serving engines call beyond what revati.shim.cuda_api covers.

A CPU build of torch has no ``torch._C._cuda_*`` functions behind these, so each answers as a
driver-backed build would for the virtual GPUs: the native caching allocator is the backend,
allocator settings are accepted, ``torch.Generator("cuda")`` is a host generator, the snapshot has no segments (memory is accounted by the
allocator model), sync-debug mode is off, and NCCL reports a version. Installed by
engines.install (idempotent); candidates to move into cuda_api.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from revati.shim.patching import patch

NCCL_VERSION = (2, 27, 3)
_DONE: list = []


def _snapshot(*args: Any, **kwargs: Any) -> dict:
    settings = ""
    get = getattr(torch._C, "_accelerator_getAllocatorSettings", None)
    if get is not None:
        settings = get()
    return {"segments": [], "device_traces": [], "allocator_settings": {"PYTORCH_CUDA_ALLOC_CONF": settings}}


def _set_allocator_settings(settings: str) -> None:
    setter = getattr(torch._C, "_accelerator_setAllocatorSettings", None)
    if setter is not None:
        setter(settings)


class _CudaRt:
    """The few cudart calls engines make from Python (profiler start/stop)."""

    def cudaProfilerStart(self) -> int:  # noqa: N802 - CUDA's name
        return 0

    def cudaProfilerStop(self) -> int:  # noqa: N802
        return 0


_RealGenerator = torch._C.Generator


class _GeneratorMeta(type(_RealGenerator)):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _RealGenerator)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _RealGenerator)


class Generator(_RealGenerator, metaclass=_GeneratorMeta):
    """``torch.Generator(device="cuda")``: a host generator that reports the virtual device.

    Random values on the virtual GPU have no data, so the generator only has to exist, be
    seeded and be passed around; a CUDA generator needs the CUDA library.
    """

    def __new__(cls, device: Any = "cpu"):
        d = torch.device(device) if device is not None else torch.device("cpu")
        self = _RealGenerator.__new__(cls, "cpu" if d.type == "cuda" else d)
        self._revati_device = d
        return self

    def __init__(self, device: Any = "cpu"):
        pass

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return self._revati_device


def install() -> None:
    if _DONE:
        return
    c = torch.cuda
    mem = c.memory
    patch(torch, "Generator", Generator)
    patch(mem, "get_allocator_backend", lambda: "native")
    patch(mem, "_set_allocator_settings", _set_allocator_settings)
    patch(mem, "_snapshot", _snapshot)
    patch(c, "memory_snapshot", lambda *a, **k: [])
    patch(c, "get_allocator_backend", mem.get_allocator_backend)
    patch(c, "get_device_count", c.device_count)
    patch(c, "get_sync_debug_mode", lambda: 0)
    patch(c, "set_sync_debug_mode", lambda debug_mode: None)
    patch(c, "current_blas_handle", lambda: 0)
    patch(c, "cudart", lambda: _CudaRt())
    patch(c.Stream, "priority_range", staticmethod(lambda: (0, -5)))
    nccl = getattr(c, "nccl", None)
    if nccl is None:
        nccl = types.ModuleType("torch.cuda.nccl")
        patch(c, "nccl", nccl)
    patch(nccl, "version", lambda: NCCL_VERSION)
    patch(nccl, "is_available", lambda tensors=None: True)
    _DONE.append(True)
