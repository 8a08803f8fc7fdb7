"""GPU facts from NVML (``libnvidia-ml.so.1``, shipped with the driver) through ctypes.

No Python package and no CUDA context: safe to call from the ``revati trace`` process before
and after the command runs. Every query is best effort; a missing library (no driver, as on
this project's CI) gives ``None``.

Clock locking: ``nvidia-smi -lgc`` / ``nvmlDeviceSetGpuLockedClocks`` and application clocks
both show up in the clock event reasons as "applications clocks setting" (bit 0x2, alias
UserDefinedClocks); an applications clock differing from its default counts too.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
REASON_APPLICATIONS_CLOCKS = 0x2


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _load():
    try:
        return ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None


def _call(lib, name: str, *args) -> bool:
    fn = getattr(lib, name, None)
    if fn is None:
        return False
    try:
        return fn(*args) == 0
    except (OSError, ctypes.ArgumentError):
        return False


def _text(lib, name: str, *prefix) -> str | None:
    buf = ctypes.create_string_buffer(256)
    if _call(lib, name, *prefix, buf, ctypes.c_uint(256)):
        return buf.value.decode(errors="replace")
    return None


def _uint(lib, name: str, *prefix) -> int | None:
    value = ctypes.c_uint(0)
    return int(value.value) if _call(lib, name, *prefix, ctypes.byref(value)) else None


def visible_index() -> int | str:
    """The physical NVML index (or UUID) of CUDA device 0 under CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return 0
    first = visible.split(",")[0].strip()
    return int(first) if first.isdigit() else first


def query(device: int | str | None = None) -> dict[str, Any] | None:
    """Facts about one GPU (default: the first the command will see); None without NVML."""
    lib = _load()
    if lib is None or not _call(lib, "nvmlInit_v2"):
        return None
    try:
        return _query(lib, visible_index() if device is None else device)
    finally:
        _call(lib, "nvmlShutdown")


def _query(lib, device: int | str) -> dict[str, Any] | None:
    handle = ctypes.c_void_p()
    if isinstance(device, str):
        ok = _call(lib, "nvmlDeviceGetHandleByUUID", device.encode(), ctypes.byref(handle))
    else:
        ok = _call(lib, "nvmlDeviceGetHandleByIndex_v2", ctypes.c_uint(device), ctypes.byref(handle))
    if not ok:
        return None
    info: dict[str, Any] = {
        "gpu_name": _text(lib, "nvmlDeviceGetName", handle),
        "gpu_uuid": _text(lib, "nvmlDeviceGetUUID", handle),
        "driver_version": _text(lib, "nvmlSystemGetDriverVersion"),
    }
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    if _call(lib, "nvmlDeviceGetCudaComputeCapability", handle, ctypes.byref(major), ctypes.byref(minor)):
        info["cc_major"], info["cc_minor"] = major.value, minor.value
    mem = _Memory()
    if _call(lib, "nvmlDeviceGetMemoryInfo", handle, ctypes.byref(mem)):
        info["memory_total_bytes"] = int(mem.total)
    info["sm_clock_max_mhz"] = _uint(lib, "nvmlDeviceGetMaxClockInfo", handle, NVML_CLOCK_SM)
    info["mem_clock_max_mhz"] = _uint(lib, "nvmlDeviceGetMaxClockInfo", handle, NVML_CLOCK_MEM)
    sm_now = _uint(lib, "nvmlDeviceGetClockInfo", handle, NVML_CLOCK_SM)
    info["sm_clock_mhz"] = sm_now
    cuda = ctypes.c_int(0)
    if _call(lib, "nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(cuda)) and cuda.value:
        info["cuda_driver_version"] = f"{cuda.value // 1000}.{(cuda.value % 1000) // 10}"
    reasons = ctypes.c_ulonglong(0)
    got_reasons = (_call(lib, "nvmlDeviceGetCurrentClocksEventReasons", handle, ctypes.byref(reasons))
                   or _call(lib, "nvmlDeviceGetCurrentClocksThrottleReasons", handle, ctypes.byref(reasons)))
    app = _uint(lib, "nvmlDeviceGetApplicationsClock", handle, NVML_CLOCK_SM)
    app_default = _uint(lib, "nvmlDeviceGetDefaultApplicationsClock", handle, NVML_CLOCK_SM)
    locked = None
    if got_reasons:
        locked = bool(reasons.value & REASON_APPLICATIONS_CLOCKS)
    if app is not None and app_default is not None and app != app_default:
        locked = True
    info["clocks_locked"] = locked
    info["sm_clock_locked_mhz"] = (app if app and app != app_default else sm_now) if locked else None
    power = _uint(lib, "nvmlDeviceGetPowerManagementLimit", handle)
    info["power_limit_w"] = power / 1000.0 if power else None
    current, pending = ctypes.c_uint(0), ctypes.c_uint(0)
    if _call(lib, "nvmlDeviceGetMigMode", handle, ctypes.byref(current), ctypes.byref(pending)):
        info["mig"] = bool(current.value)
    return info
