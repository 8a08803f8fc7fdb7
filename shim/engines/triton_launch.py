"""Triton kernel launches on the virtual GPUs: charged to the current stream, never compiled or run.

A ``kernel[grid](*args)`` launch reaches ``JITFunction.run`` (through ``Autotuner.run`` and
``Heuristics.run`` when decorated). On a machine without a GPU driver Triton cannot compile or
launch, and autotuning would benchmark with real events; so ``install(triton)`` replaces the
three ``run`` methods: the launch is costed once per (kernel, argument shapes) by the bytes of
the tensors it is given (a roofline estimate under the kernel's own name, counted as a
fallback) and queued on the current virtual stream like any other kernel. Attention kernels
launched inside an engine adapter's ``attention_timing.kernels_priced_by_batch()`` are launched
but not priced: their time comes from the scheduled batch (their arguments hold the whole KV
cache).

What a Triton kernel writes has no values here: small output tensors keep the values they
had (see Note [Device-to-host value policy]); engines whose control flow reads Triton results
need an adapter that supplies them (engines.vllm keeps vLLM on code paths that do not).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from revati.shim import runtime as _runtime
from revati.shim.engines import attention_timing
from revati.shim.patching import patch

_COSTS: dict[tuple, tuple[int, str]] = {}
LAUNCHES: Counter = Counter()   # kernel name -> launches (for reports and tests)
_INSTALLED: list = []


def _kernel_name(fn: Any) -> str:
    for _ in range(8):  # Autotuner -> Heuristics -> JITFunction
        if type(fn).__name__ not in ("Autotuner", "Heuristics"):
            break
        fn = fn.fn
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "fn", None), "__name__", None)
    return name or "triton_kernel"


def _tensor_sig(args: tuple, kwargs: dict) -> tuple[tuple, int, str]:
    import torch

    from revati.shim.timing import dtype_name

    sig = []
    nbytes = 0
    dtype = None
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            sig.append((tuple(a.shape), a.dtype))
            nbytes += a.numel() * a.element_size()
            if dtype is None and a.dtype.is_floating_point:
                dtype = dtype_name(a.dtype)
    return tuple(sig), nbytes, dtype or "bf16"


def launch(fn: Any, args: tuple, kwargs: dict) -> None:
    """Charge one Triton launch of ``fn`` to the current virtual stream."""
    rt = _runtime._RUNTIME
    if rt is None:
        raise RuntimeError("revati: a Triton launch outside an emulated process")
    from revati.shim.shim_call import ShimCall

    with ShimCall(rt) as call:
        name = _kernel_name(fn)
        sig, nbytes, dtype = _tensor_sig(args, kwargs)
        key = (name, sig)
        cost = _COSTS.get(key)
        if cost is None:
            ns = rt.predictor.generic_ns(float(nbytes), 0.0, dtype, label=f"triton:{name}")
            cost = _COSTS[key] = (int(ns), f"triton:{name}")
        LAUNCHES[name] += 1
        rt.stats.ops += 1
        if not attention_timing.priced_by_batch():   # an attention kernel: the adapter charges the batch
            rt.gpus.launch(cost[0], cost[1], rt.clock.now_at(call.cpu0), fallback=True)   # always the roofline
        rt.clock.charge(rt.config.launch_overhead_ns)


def install(triton_module: Any) -> None:
    """Replace Triton's launch entry points (idempotent)."""
    if _INSTALLED:
        return
    from triton.runtime import autotuner, jit

    def jit_run(self, *args, grid=None, warmup=False, **kwargs):
        if warmup:
            return None
        launch(self, args, kwargs)
        return None

    def tuned_run(self, *args, **kwargs):
        kwargs.pop("grid", None)
        kwargs.pop("warmup", None)
        launch(self, args, kwargs)
        return None

    patch(jit.JITFunction, "run", jit_run)
    patch(autotuner.Autotuner, "run", tuned_run)
    patch(autotuner.Heuristics, "run", tuned_run)
    _INSTALLED.append(True)
