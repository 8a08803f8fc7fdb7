"""What software a traced process ran: library versions, engine and attention backend.

Versions come from installed package metadata (no import, so asking never loads vLLM into a
process that did not); which engine and attention libraries were *used* comes from what the
process had imported by the time it exited. The same shape runs different kernels under
different versions, so every trace records these (DESIGN §2).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

# distribution names to record, keyed by the short name stored
PACKAGES = {
    "torch": "torch", "triton": "triton", "vllm": "vllm", "sglang": "sglang",
    "transformers": "transformers", "flash_attn": "flash-attn", "flashinfer": "flashinfer-python",
    "xformers": "xformers", "cupti_python": "cupti-python", "nvidia_ml_py": "nvidia-ml-py",
}
# engines in order of preference when several are imported (vLLM imports transformers)
ENGINES = ("vllm", "sglang", "transformers")
# module imported -> attention backend it indicates (first match wins)
ATTENTION_MODULES = (
    ("vllm.vllm_flash_attn", "vllm_flash_attn"), ("vllm_flash_attn", "vllm_flash_attn"),
    ("flashinfer", "flashinfer"), ("flash_attn", "flash_attn"), ("xformers.ops", "xformers"),
)
# environment variables worth keeping with the trace (prefixes); values that look secret are not
ENV_PREFIXES = ("CUDA_", "NCCL_", "VLLM_", "PYTORCH_", "TORCH_", "CUBLAS", "CUDNN_", "NVIDIA_",
                "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "HF_HUB_OFFLINE", "TRANSFORMERS_",
                "SGLANG_", "FLASHINFER_", "TRITON_", "RANK", "LOCAL_RANK", "WORLD_SIZE", "REVATI_")
_SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL", "AUTH")


def package_versions() -> dict[str, str]:
    out = {}
    for short, dist in PACKAGES.items():
        try:
            out[short] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def imported_engine() -> str | None:
    for name in ENGINES:
        if name in sys.modules:
            return name
    return None


def attention_backend() -> str | None:
    """The attention implementation the process used, as far as imports and env tell."""
    forced = os.environ.get("VLLM_ATTENTION_BACKEND")
    if forced and "vllm" in sys.modules:
        return forced.lower()
    for module, name in ATTENTION_MODULES:
        if module in sys.modules:
            return name
    return None


def selected_env(env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    out = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIXES) or any(w in key.upper() for w in _SECRET_WORDS):
            continue
        if key == "REVATI_INJECT":
            continue  # the tracer's own config: in runs.backends / notes already
        out[key] = value
    return dict(sorted(out.items()))


def python_version() -> str:
    return platform.python_version()


def torch_details() -> dict[str, Any]:
    """torch, CUDA, cuDNN and NCCL versions and the devices this process used (no CUDA init)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    out: dict[str, Any] = {"torch_version": getattr(torch, "__version__", None),
                           "cuda_version": getattr(getattr(torch, "version", None), "cuda", None)}
    try:
        initialized = bool(torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001 - a broken CUDA build must not break the traced program
        initialized = False
    out["cuda_initialized"] = initialized
    if not initialized:
        return out
    try:
        out["cudnn_version"] = str(torch.backends.cudnn.version())
    except Exception:  # noqa: BLE001
        pass
    try:
        nccl = torch.cuda.nccl.version()
        out["nccl_version"] = ".".join(str(x) for x in nccl) if isinstance(nccl, tuple) else str(nccl)
    except Exception:  # noqa: BLE001
        pass
    devices = []
    try:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            devices.append({"index": i, "name": p.name, "sm_count": p.multi_processor_count,
                            "memory_total_bytes": int(p.total_memory), "cc_major": p.major,
                            "cc_minor": p.minor, "uuid": str(getattr(p, "uuid", "")) or None})
    except Exception:  # noqa: BLE001
        pass
    out["devices"] = devices
    return out
