"""SGLang on the virtual GPUs: its CUDA code path, unmodified, on torch's CPU build.

``install(sglang_module)`` runs when the program imports ``sglang`` (engines.install registers
it). It refuses versions revati was not built for (UnsupportedEngine, raised from ``import
sglang``, with the supported list), then registers what the CUDA path needs:

- ``torch.version.cuda``: the CUDA version of the torch build SGLang is released against, so
  ``is_cuda()`` holds (engines.sglang.platform);
- ``sgl_kernel``'s compiled libraries: defined with their schemas and shape rules when they
  cannot load (engines.sglang.oplib, Note [sgl-kernel ops on a CPU build]);
- SGLang's JIT kernels: loading returns a stand-in, ``clamp_position`` runs in its torch form,
  the CuTe-DSL dual GEMM (SM100 only) is not selected (engines.sglang.jit_kernels);
- attention: timed from the scheduled batch (engines.sglang.attention);
- the scheduler and the data-parallel controller wait on their sockets when idle instead of spinning,
  and the busy scheduler checks for requests causally (engines.sglang.scheduler,
  Note [SGLang's idle scheduler waits]).

Cross-process virtual time (HTTP server, tokenizer manager, scheduler, detokenizer; ZeroMQ
between them) is the timekeeper's job, as for any processes (revati.shim.coord).
"""

from __future__ import annotations

from typing import Any

from revati.shim.engines.versions import refuse_unsupported

SUPPORTED_VERSIONS = ("0.5.23",)


def check_version(version: str) -> None:
    refuse_unsupported("SGLang", version, SUPPORTED_VERSIONS, "scripts/install_sglang_env.sh installs it")


def install(sglang: Any) -> None:
    from revati.shim import import_hooks
    from revati.shim.engines.sglang import attention, jit_kernels, oplib, platform, scheduler

    check_version(str(getattr(sglang, "__version__", "unknown")))
    platform.present_cuda_build()
    oplib.install_finder()
    import_hooks.on_import("sglang.kernels.jit.utils.compile.loader", jit_kernels.install_loader, engine="sglang")
    import_hooks.on_import("sglang.kernels.ops.attention.clamp_position", jit_kernels.pin_clamp_position,
                           engine="sglang")
    import_hooks.on_import("sglang.srt.layers.dual_gemm", jit_kernels.no_dual_gemm, engine="sglang")
    import_hooks.on_import("sglang.srt.managers.scheduler", scheduler.install, engine="sglang")
    import_hooks.on_import("sglang.srt.managers.data_parallel_controller", scheduler.install_dp_controller,
                           engine="sglang")
    import_hooks.on_import("sglang.srt.managers.scheduler_components.request_receiver",
                           scheduler.install_request_sync, engine="sglang")
    import_hooks.on_import("sglang.srt.layers.attention.base_attn_backend", attention.install, engine="sglang")
    import_hooks.on_import("sglang.srt.model_executor.runner.decode_cuda_graph_runner", attention.install_graph_replay,
                           engine="sglang")
