"""SGLang's run-time compiled (JIT) kernels under revati: nothing is compiled, nothing is run.

SGLang 0.5.23 builds many of its CUDA kernels at run time (``sglang.kernels.jit``: nvcc through
ninja, loaded with tvm-ffi). Most are wrapped as ``torch.ops.sglang.*`` custom ops with fake
kernels, and a virtual tensor always goes through the dispatcher (SGLang calls the compiled
function directly only for real CUDA tensors), so the VTensor dispatch charges them like any op
and the compiled module is never called. Loading still happens on the host -- e.g. to ask
whether a KV-cache row width is supported -- so ``load_jit`` returns a stand-in module whose
exports exist (the load "succeeds", as on a GPU with nvcc) but raise if called.

One JIT kernel is called directly, not as an op: ``clamp_position`` (decode positions). Its
fused op is pinned to its torch form (``forward_native``, a clamp and a cast: the same values,
charged as the aten ops they are).
"""

from __future__ import annotations

from typing import Any

from revati.errors import EmulationError
from revati.shim.patching import patch


class JitKernelCalled(EmulationError):
    """A stand-in JIT kernel was called directly with tensors (no rule for it exists)."""

    def __init__(self, module_name: str, export: str):
        self.module_name = module_name
        self.export = export
        super().__init__(f"SGLang JIT kernel {module_name}.{export} was called directly; revati has no "
                         "rule for it (only kernels reached as torch.ops.sglang.* are timed)")


class JitModuleStandIn:
    def __init__(self, name: str, exports: list[str]):
        self.name = name
        self.exports = exports

    def __getattr__(self, export: str):
        if export.startswith("__"):
            raise AttributeError(export)

        def call(*args, **kwargs):
            raise JitKernelCalled(self.name, export)

        return call


def load_jit(*args: str, cpp_wrappers=None, cuda_wrappers=None, **kwargs) -> JitModuleStandIn:
    exports = [name for name, _ in (cpp_wrappers or []) + (cuda_wrappers or [])]
    return JitModuleStandIn("_".join(str(a) for a in args), exports)


def install_loader(mod: Any) -> None:
    """On import of sglang.kernels.jit.utils.compile.loader (before its package re-exports it)."""
    patch(mod, "load_jit", load_jit)


def pin_clamp_position(mod: Any) -> None:
    """On import of sglang.kernels.ops.attention.clamp_position."""
    op = mod._CLAMP_POSITION
    patch(op, "_forward_method", op.forward_native)


def no_dual_gemm(mod: Any) -> None:
    """On import of sglang.srt.layers.dual_gemm: the CuTe-DSL dual GEMM is not selected.

    Selecting it imports cuda-python and CUTLASS's DSL (not installable without a GPU) and it is
    a small-batch Blackwell kernel; SGLang then runs the gate/up projection as a plain GEMM.
    """
    patch(mod.DualGemm, "_select_mode", lambda self, gate_up_proj, hidden_size: None)
