"""Let a torchvision wheel built for a CUDA torch import on the CPU build of torch.

PyPI's torchvision for Linux is built against the CUDA torch: its C++ extension needs
libtorch_cuda and cannot load on the CPU build. torchvision then imports its pure-Python part
(transforms, which engines' multimodal preprocessing imports) except for one step: at import,
``torchvision._meta_registrations`` registers fake kernels for ``torchvision::nms`` and
``qnms`` without checking that the extension (which defines them) loaded, and fails. Defining
their schemas first lets the import finish; calling them still fails (no kernel), as it would
without the extension. ``install()`` adds a finder that does this just before that module is
imported, only for ops that are missing.
"""

from __future__ import annotations

import importlib.abc
import sys

import torch

_MODULE = "torchvision._meta_registrations"
_SCHEMAS = {"nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"}
_LIBS: list = []


def _define_missing() -> None:
    for name, schema in _SCHEMAS.items():
        try:
            if torch._C._jit_get_schemas_for_operator(f"torchvision::{name}"):
                continue
        except RuntimeError:
            pass
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define(schema)
        _LIBS.append(lib)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == _MODULE:
            _define_missing()
        return None


_FINDER = _Finder()


def install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
