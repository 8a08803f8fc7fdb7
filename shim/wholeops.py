"""Keep ops whole that the GPU runs as one kernel, even where torch would decompose them first.

Under ``torch.no_grad`` (HF ``generate``), composite ops such as scaled_dot_product_attention
are decomposed by the autograd kernel before revati sees them; on a CPU build the CUDA
backend choice then falls back to the math path (bmm, softmax, ...), which is not what a GPU
runs. A kernel registered for the AutogradCUDA key steps below autograd and re-dispatches the
op whole, so revati charges it as one attention kernel. Inference only: no gradients flow
through these kernels.
"""

from __future__ import annotations

import warnings

import torch

WHOLE_UNDER_AUTOGRAD = ("scaled_dot_product_attention",)
_LIBS: list = []


def _below_autograd(op):
    def kernel(*args, **kwargs):
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args, **kwargs)
    return kernel


def install() -> None:
    if _LIBS:
        return
    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in WHOLE_UNDER_AUTOGRAD:
            op = getattr(torch.ops.aten, name).default
            lib.impl(name, _below_autograd(op), "AutogradCUDA")
    _LIBS.append(lib)
