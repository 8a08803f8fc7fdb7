"""The one ``runs`` row of a traced run: the GPU (NVML, else what torch saw), software versions
from every traced process, the command line, selected environment and notes.

Pure Python over dicts: the NVML answer (tracer/nvml.py) and the processes' ``proc.<pid>.json``.
"""

from __future__ import annotations

import shlex
import socket
from typing import Any, Iterable, Mapping

from revati import gpus
from revati.errors import UnknownGPU
from revati.tracer import versions


def _first(metas: Iterable[Mapping[str, Any]], key: str) -> Any:
    for meta in metas:
        value = meta.get(key)
        if value not in (None, "", [], {}):
            return value
    return None


def gpu_key(name: str | None) -> str | None:
    """Canonical key of revati's GPU table for a driver-reported name, else None."""
    if not name:
        return None
    try:
        return gpus.resolve_key(name)
    except UnknownGPU:
        return None


def build_runs_row(*, run_id: str, started_at_ns: int, cmd: list[str], backends: Iterable[str],
                   host_gpu: Mapping[str, Any] | None, metas: list[Mapping[str, Any]],
                   env: Mapping[str, str], notes: Iterable[str],
                   host_score: Any = None) -> dict[str, Any]:
    host_gpu = dict(host_gpu or {})
    device = _first_device(metas)
    name = host_gpu.get("gpu_name") or (device or {}).get("name")
    spec_key = gpu_key(name)
    packages = _merged_packages(metas)
    engine = _engine(metas)
    sm_count = (device or {}).get("sm_count")
    notes = [n for n in notes if n]
    if sm_count is None and spec_key is not None:
        sm_count = gpus.GPUS[spec_key].sm_count
        notes.append(f"sm_count from revati's spec table for {spec_key} (no process initialised CUDA)")
    row = {
        "run_id": run_id, "started_at_ns": started_at_ns, "source": "+".join(backends), "host": socket.gethostname(),
        "cmdline": shlex.join(cmd), "backends": list(backends),
        "rank": None, "world_size": max((m.get("world_size") or 0 for m in metas), default=0) or None,
        "gpu": spec_key, "gpu_name": name, "gpu_uuid": host_gpu.get("gpu_uuid") or (device or {}).get("uuid"),
        "cc_major": host_gpu.get("cc_major", (device or {}).get("cc_major")),
        "cc_minor": host_gpu.get("cc_minor", (device or {}).get("cc_minor")),
        "sm_count": sm_count,
        "memory_total_bytes": host_gpu.get("memory_total_bytes") or (device or {}).get("memory_total_bytes"),
        "sm_clock_max_mhz": host_gpu.get("sm_clock_max_mhz"), "mem_clock_max_mhz": host_gpu.get("mem_clock_max_mhz"),
        "sm_clock_locked_mhz": host_gpu.get("sm_clock_locked_mhz"), "clocks_locked": host_gpu.get("clocks_locked"),
        "driver_version": host_gpu.get("driver_version"),
        "cuda_version": _first(metas, "cuda_version") or host_gpu.get("cuda_driver_version"),
        "cupti_version": packages.get("cupti_python"),
        "torch_version": _first(metas, "torch_version") or packages.get("torch"),
        "cudnn_version": _first(metas, "cudnn_version"), "nccl_version": _first(metas, "nccl_version"),
        "triton_version": packages.get("triton"),
        "python_version": _first(metas, "python_version") or versions.python_version(),
        "engine": engine, "engine_version": packages.get(engine) if engine else None,
        "attention_backend": _attention(metas, packages),
        "software": software_line(packages, _first(metas, "python_version") or versions.python_version()),
        "env": sorted(versions.selected_env(dict(env)).items()),
        "notes": "; ".join(dict.fromkeys(notes)) or None,
        "host_cpu_model": getattr(host_score, "cpu_model", None),
        "host_score_s": getattr(host_score, "score_s", None),
    }
    return row


def _first_device(metas: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    for meta in metas:
        for device in meta.get("devices") or []:
            return device
    return None


def _merged_packages(metas: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for meta in metas:
        for key, value in (meta.get("packages") or {}).items():
            merged.setdefault(key, value)
    if not merged:
        merged = versions.package_versions()
    return merged


def _engine(metas: list[Mapping[str, Any]]) -> str | None:
    used = {m.get("engine") for m in metas if m.get("engine")}
    for engine in versions.ENGINES:
        if engine in used:
            return engine
    return None


def _attention(metas: list[Mapping[str, Any]], packages: Mapping[str, str]) -> str | None:
    backend = _first(metas, "attention_backend")
    if backend is None:
        return None
    version = packages.get({"vllm_flash_attn": "vllm", "flash_attn": "flash_attn", "flashinfer": "flashinfer",
                            "xformers": "xformers"}.get(backend, backend))
    return f"{backend} {version}" if version else backend


def software_line(packages: Mapping[str, str], python: str) -> str:
    order = ("vllm", "sglang", "transformers", "torch", "triton", "flash_attn", "flashinfer", "xformers")
    parts = [f"{name} {packages[name]}" for name in order if name in packages]
    return ", ".join(parts + [f"python {python}"])
