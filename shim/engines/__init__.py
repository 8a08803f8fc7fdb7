"""Adapters that let serving engines run on the virtual GPUs, installed lazily through import hooks.

``install(rt)`` is called once by ``revati.shim.activate``. Nothing is imported here eagerly:
each adapter runs when the program imports the library it adapts (revati.shim.import_hooks).

- torch.cuda calls engines make beyond cuda_api (allocator backend, snapshot, ...): engines.cuda_extras;
- on a CUDA build of torch without a driver, a stand-in libcuda.so.1 so CUDA extension modules
  import (revati.shim.native.stub_libcuda);
- ``torchvision`` built for a CUDA torch imports on the CPU build (engines.torchvision_compat);
- ``pynvml``: NVML answers for the virtual GPUs (engines.nvml);
- ``triton``: kernel launches are charged to the virtual stream instead of run (engines.triton_launch);
- ``zmq``: virtual waits on ZeroMQ sockets and causal stamps on their messages (engines.zmq_adapter);
- ``vllm``: the CUDA platform, vLLM's CUDA op library on CPU builds, attention timed from the
  scheduled batch, refusal of unsupported versions and torch.compile modes (engines.vllm);
- ``sglang``: its CUDA path on a CPU build (sgl-kernel stand-ins, JIT kernels, attention timed from
  the batch, the idle scheduler waiting virtually), refusal of unsupported versions (engines.sglang).
"""

from __future__ import annotations


def install(rt) -> None:
    from revati.shim import import_hooks
    from revati.shim.engines import cuda_extras, nvml, torchvision_compat, triton_launch, zmq_adapter
    from revati.shim.engines import sglang as sglang_adapter
    from revati.shim.engines import vllm as vllm_adapter

    cuda_extras.install()
    torchvision_compat.install()
    _driverless_cuda_extensions()
    import_hooks.on_import("pynvml", nvml.patch_module)
    import_hooks.on_import("triton", triton_launch.install)
    import_hooks.on_import("zmq", zmq_adapter.install)
    import_hooks.on_import("vllm", vllm_adapter.install)
    import_hooks.on_import("sglang", sglang_adapter.install)


def _driverless_cuda_extensions() -> None:
    import ctypes

    import torch

    if torch.version.cuda is None:
        return  # CPU build: no extension links the driver (engines.vllm.oplib stands in for them)
    try:
        ctypes.CDLL("libcuda.so.1")
        return   # a real driver library is installed (GPU box): leave it
    except OSError:
        pass
    from revati.shim import native

    native.stub_libcuda()
