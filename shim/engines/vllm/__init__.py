"""vLLM on the virtual GPUs: its CUDA code path, unmodified, with no GPU and no CUDA build of torch.

``install(vllm_module)`` runs when the program imports ``vllm`` (engines.install registers it).
It refuses versions it was not built for (UnsupportedEngine, raised from ``import vllm``), then
registers what the CUDA path needs, each when vLLM imports the module concerned:

- ``vllm.platforms``: CudaPlatform is the platform (detection through NVML would find no GPU, and
  the CPU wheel reports itself as a CPU build);
- ``vllm.third_party.pynvml``: NVML answers for the virtual GPUs (engines.nvml);
- ``vllm._C_stable_libtorch`` and FlashAttention's extensions: defined by engines.vllm.oplib when
  the installed wheel lacks them (Note [vLLM CUDA ops on a CPU build]);
- attention: timed from the scheduled batch (Note [vLLM attention timing]);
- ``EngineArgs.create_engine_config``: a torch.compile mode runs without compilation, decode in
  full CUDA graphs (engines.vllm.compile_mode, Note [vLLM compile mode under emulation]); kernel
  JIT warm-up (ahead-of-time Triton compilation, start-up only) is switched off.

Settings made before vLLM reads them (a value the user set always wins):
  VLLM_USE_V2_MODEL_RUNNER=0   model runner V2 (0.32's default on a GPU) computes its inputs and
                               samples with Triton kernels, whose outputs have no values here
                               (engines.triton_launch); V1 prepares inputs on the host, so every
                               value the host reads back is exact. V2 also runs (=1): output
                               lengths and attention timing are right (they come from the
                               scheduler), but sampled token ids read back as 0.
  VLLM_USE_FLASHINFER_SAMPLER=0  FlashInfer compiles its sampling kernels at run time with nvcc.
  VLLM_NO_USAGE_STATS=1        the usage report (sent over the network) reads the GPU's name in a
                               helper process, which a TP worker (a daemon process) may not
                               start: a traceback in every worker, and nothing to report.

Cross-process virtual time is the timekeeper's job (revati.shim.coord): the engine core in its
own process (``vllm serve``) and TP>1 (MultiprocExecutor, one worker process per virtual GPU;
``vllm.platforms.cuda`` counts the virtual GPUs) are ordered by it like any other processes.
"""

from __future__ import annotations

import os
from typing import Any

from revati.shim.engines.versions import refuse_unsupported

SUPPORTED_VERSIONS = ("0.32.0",)
ENV_DEFAULTS = {
    "VLLM_USE_V2_MODEL_RUNNER": "0",
    "VLLM_USE_FLASHINFER_SAMPLER": "0",
    "VLLM_NO_USAGE_STATS": "1",
}


def check_version(version: str) -> None:
    refuse_unsupported("vLLM", version, SUPPORTED_VERSIONS, 'see README: pip install "revati[vllm]"')


def install(vllm: Any) -> None:
    from revati.shim import import_hooks
    from revati.shim.engines import nvml
    from revati.shim.engines.vllm import attention, compile_mode, oplib, platform, shm_queue

    check_version(str(getattr(vllm, "__version__", "unknown")))
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    oplib.install_finder()
    platform.install_distribution_alias()
    import_hooks.on_import("vllm.platforms", platform.use_cuda_platform, engine="vllm")
    import_hooks.on_import("vllm.platforms.cuda", platform.count_virtual_gpus, engine="vllm")
    import_hooks.on_import("vllm.third_party.pynvml", nvml.patch_module, engine="vllm")
    import_hooks.on_import("vllm.engine.arg_utils", compile_mode.install, engine="vllm")
    import_hooks.on_import("vllm.model_executor.layers.attention.attention", attention.install_attention_op, engine="vllm")
    import_hooks.on_import("vllm.v1.worker.gpu_worker", attention.track_batches, engine="vllm")
    import_hooks.on_import("vllm.compilation.cuda_graph", attention.patch_graph_wrapper, engine="vllm")
    import_hooks.on_import("vllm.utils.torch_utils", _hashable_layer_names, engine="vllm")
    import_hooks.on_import("vllm.distributed.device_communicators.shm_broadcast", shm_queue.install, engine="vllm")


def _hashable_layer_names(mod: Any) -> None:
    """Layer names passed to vLLM's custom ops are hashable values: op-cache keys may hold them."""
    from revati.shim import op_cache

    layer_name = getattr(mod, "LayerName", None)
    if layer_name is not None:
        op_cache.HASHABLE_ARG_TYPES.add(layer_name)
