"""vLLM's compilation modes under emulation: what revati runs instead of torch.compile.

vLLM's default (``vllm serve MODEL``, ``LLM(model)``: optimization level 2) compiles the model
with its Inductor backend (``CompilationMode.VLLM_COMPILE``) and captures CUDA graphs
``FULL_AND_PIECEWISE``: decode-only batches replay one full graph, mixed and prefill batches
replay piecewise graphs of Inductor's kernels between attention calls. Inductor needs a GPU
compiler target and real tensors to tune with; revati has neither. So a configuration that
would compile is adapted before vLLM builds its engine config (Note [vLLM compile mode under
emulation]) and the run goes on; a one-line notice says what was changed.

Note [vLLM compile mode under emulation]
A compile mode becomes ``CompilationMode.NONE`` and the CUDA-graph mode keeps what runs without
compilation:

    FULL_AND_PIECEWISE (the default) -> FULL_DECODE_ONLY   decode: full graphs, as on the GPU
    PIECEWISE                        -> NONE               mixed batches were piecewise only
    FULL, FULL_DECODE_ONLY, NONE     -> unchanged

What this leaves out, all in mixed and prefill steps (decode steps are timed as deployed):
- Inductor's fusions: each unfused op (norms, activations, rotary, residual adds) is charged as
  its own kernel, where the GPU runs fewer, fused ones. Not yet measured against fused kernels:
  the kernel data has no traces of the compiled model to compare with.
- Piecewise replay: eager ops are dispatched one by one, so the host time of those steps is
  Python op dispatch (measured) where the GPU box replays a few graph pieces.
Both make mixed and prefill steps slower than deployed; TTFT at low load is the most affected.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

from revati.errors import UnsupportedEngine
from revati.shim.patching import is_patched, patch

COMPILE_HINT = ("torch.compile is not emulated; run eagerly with enforce_eager=True (--enforce-eager, or -O0), "
                "or with full CUDA graphs for decode and no compilation: "
                "compilation_config={'mode': 0, 'cudagraph_mode': 'FULL_DECODE_ONLY'}")
# the CUDA-graph mode that runs without compilation, per requested mode (None: vLLM's default)
GRAPH_MODE_WITHOUT_COMPILE = {None: "FULL_DECODE_ONLY", "FULL_AND_PIECEWISE": "FULL_DECODE_ONLY",
                              "PIECEWISE": "NONE"}


def adapted_modes(mode: Any, cudagraph_mode: Any, optimization_level: Any, enforce_eager: bool) -> tuple[str, str] | None:
    """(compilation mode, CUDA-graph mode) vLLM would use -> the CUDA-graph mode revati runs
    instead, as ``(was, now)`` names; None when nothing needs changing."""
    if enforce_eager:
        return None
    mode_value = None if mode is None else int(mode)
    if mode_value == 0 or (mode_value is None and optimization_level is not None and int(optimization_level) == 0):
        return None
    graph = None if cudagraph_mode is None else str(getattr(cudagraph_mode, "name", cudagraph_mode)).upper()
    return (graph or "FULL_AND_PIECEWISE (default)", GRAPH_MODE_WITHOUT_COMPILE.get(graph, graph))


def install(mod: Any) -> None:
    """Import hook of ``vllm.engine.arg_utils``: wrap EngineArgs.create_engine_config."""
    cls = mod.EngineArgs
    if is_patched(cls, "create_engine_config"):
        return
    real = cls.create_engine_config

    def create_engine_config(self, *args, **kwargs):
        cc = self.compilation_config
        change = adapted_modes(getattr(cc, "mode", None), getattr(cc, "cudagraph_mode", None),
                               getattr(self, "optimization_level", None), bool(getattr(self, "enforce_eager", False)))
        if change is not None:
            from vllm.config.compilation import CompilationMode, CUDAGraphMode

            cc = copy.deepcopy(cc)
            cc.mode = CompilationMode.NONE
            cc.cudagraph_mode = CUDAGraphMode[change[1]]
            self.compilation_config = cc
            print(f"revati: vLLM's torch.compile mode is not emulated: running with compilation mode NONE and "
                  f"cudagraph_mode {change[1]} instead of {change[0]} (decode steps as deployed; mixed and "
                  f"prefill steps eager, without Inductor's fusions: Note [vLLM compile mode under emulation])",
                  file=sys.stderr, flush=True)
        config = real(self, *args, **kwargs)
        mode = getattr(config.compilation_config, "mode", 0)
        if mode is not None and int(mode) != 0:   # a path the adaptation above did not foresee
            import vllm

            raise UnsupportedEngine("vLLM", vllm.__version__,
                                    f"compilation mode {getattr(mode, 'name', mode)} needs torch.compile. "
                                    + COMPILE_HINT)
        kernel = getattr(config, "kernel_config", None)
        if getattr(kernel, "enable_jit_warmup", False):
            # JIT warm-up compiles Triton kernels ahead of serving (start-up time only); there is
            # no compiler target here, and launches are charged, not compiled.
            patch(kernel, "enable_jit_warmup", False)
        return config

    create_engine_config.__wrapped__ = real
    patch(cls, "create_engine_config", create_engine_config)
