"""NVML answering for the virtual GPUs: ``patch_module(pynvml_module)``.

Serving engines ask NVML (not CUDA) how many GPUs there are, what they are and how they are
connected, because NVML does not create a CUDA context. There is no libnvidia-ml here, so the
Python bindings' functions are replaced on the module object itself -- ``pynvml`` (the
nvidia-ml-py package) and copies vendored by engines (``vllm.third_party.pynvml``) alike.
Exception classes and constants of the real module stay; only the calls an engine makes to
learn about devices are answered, from the GPU spec table and the allocator model.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from revati.shim import runtime as _runtime
from revati.shim.patching import patch

_PATCHED_ATTR = "__revati_nvml__"


class _Handle:
    """An NVML device handle: the device index."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __repr__(self) -> str:
        return f"<revati nvmlDevice {self.index}>"


def _spec():
    return _runtime.get().gpus.spec


def _count() -> int:
    return _runtime.get().gpus.count


def _handle(index: int) -> _Handle:
    if not 0 <= int(index) < _count():
        raise _error(2)  # NVML_ERROR_INVALID_ARGUMENT
    return _Handle(int(index))


_ERROR_CLASS: list = []


def _error(code: int) -> Exception:
    cls = _ERROR_CLASS[0] if _ERROR_CLASS else RuntimeError
    try:
        return cls(code)
    except TypeError:
        return RuntimeError(f"NVML error {code}")


def uuid(index: int) -> str:
    """The same UUID torch.cuda.get_device_properties reports (cuda_api.VirtualDeviceProperties)."""
    return f"GPU-revati-{_spec().key}-{index:04d}"


def _memory(handle: _Handle) -> SimpleNamespace:
    from revati.shim.cuda_api import mem_get_info

    free, total = mem_get_info(handle.index)
    return SimpleNamespace(total=total, free=free, used=total - free, reserved=0)


def _pci(handle: _Handle) -> SimpleNamespace:
    bus = 0x18 + handle.index
    bus_id = f"00000000:{bus:02X}:00.0"
    return SimpleNamespace(busId=bus_id, busIdLegacy=bus_id[4:], domain=0, bus=bus, device=0,
                           pciDeviceId=0x233010DE, pciSubSystemId=0)


def _p2p_status(h1: _Handle, h2: _Handle, index: int) -> int:
    # NVML_P2P_STATUS_OK (0) where the GPUs are linked by NVLink, else "not supported" (5).
    return 0 if _spec().nvlink_bandwidth_bytes_per_s > 0 else 5


def _cpu_affinity(handle: _Handle, cpu_set_size: int) -> list[int]:
    import os

    mask = [0] * max(int(cpu_set_size), 1)
    for cpu in os.sched_getaffinity(0):
        word, bit = divmod(cpu, 64)
        if word < len(mask):
            mask[word] |= 1 << bit
    return mask


def functions() -> dict[str, Any]:
    """NVML calls by name -> the virtual implementation."""
    return {
        "nvmlInit": lambda *a, **k: None,
        "nvmlInitWithFlags": lambda *a, **k: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": _count,
        "nvmlDeviceGetHandleByIndex": _handle,
        "nvmlDeviceGetHandleByUUID": lambda u: _handle(int(str(u if isinstance(u, str) else u.decode())
                                                            .rsplit("-", 1)[-1])),
        "nvmlDeviceGetHandleByPciBusId": lambda bus_id: _handle(0),
        "nvmlDeviceGetIndex": lambda h: h.index,
        "nvmlDeviceGetName": lambda h: _spec().name,
        "nvmlDeviceGetUUID": lambda h: uuid(h.index),
        "nvmlDeviceGetCudaComputeCapability": lambda h: tuple(_spec().cc),
        "nvmlDeviceGetMemoryInfo": _memory,
        "nvmlDeviceGetPciInfo": _pci,
        "nvmlDeviceGetPciInfo_v3": _pci,
        "nvmlDeviceGetP2PStatus": _p2p_status,
        "nvmlDeviceGetNumaNodeId": lambda h: 0,
        "nvmlDeviceGetCpuAffinity": _cpu_affinity,
        "nvmlDeviceGetMinorNumber": lambda h: h.index,
        "nvmlDeviceGetMaxClockInfo": lambda h, kind=0: _spec().sm_clock_max_mhz,
        "nvmlDeviceGetClockInfo": lambda h, kind=0: _spec().sm_clock_max_mhz,
        "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=0, memory=0),
        "nvmlDeviceGetPowerUsage": lambda h: 100_000,
        "nvmlDeviceGetTemperature": lambda h, sensor=0: 40,
        "nvmlDeviceGetComputeRunningProcesses": lambda h: [],
        "nvmlSystemGetDriverVersion": lambda: "570.00",
        "nvmlSystemGetCudaDriverVersion": lambda: 12080,
        "nvmlSystemGetCudaDriverVersion_v2": lambda: 12080,
    }


def patch_module(mod: Any) -> None:
    """Make an NVML binding module answer for the virtual GPUs (idempotent)."""
    if getattr(mod, _PATCHED_ATTR, False):
        return
    err = getattr(mod, "NVMLError", None)
    if err is not None and not _ERROR_CLASS:
        _ERROR_CLASS.append(err)
    for name, fn in functions().items():
        patch(mod, name, fn)
    setattr(mod, _PATCHED_ATTR, True)
