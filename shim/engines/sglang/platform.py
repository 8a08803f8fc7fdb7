"""SGLang takes its CUDA code path under revati, on torch's CPU build.

SGLang decides between its CUDA and CPU paths once, with ``is_cuda()``: ``torch.cuda.is_available()
and torch.version.cuda is not None``. The shim answers the first for the virtual GPUs; the second
is the build's CUDA version, None on the CPU build. The adapter presents the CUDA version of the
torch build SGLang 0.5.23 is released against (torch 2.14.1, CUDA 13.0), which also makes an
H100 "Hopper with CUDA >= 12.3" (FA3 as the default attention backend), as on a real install.
"""

from __future__ import annotations

import torch

from revati.shim.patching import original, patch

PRESENTED_CUDA_VERSION = "13.0"


def torch_built_with_cuda() -> bool:
    """Whether torch itself is a CUDA build (the value before present_cuda_build)."""
    return original(torch.version, "cuda") is not None


def present_cuda_build() -> None:
    if torch.version.cuda is None:
        patch(torch.version, "cuda", PRESENTED_CUDA_VERSION)
