"""Load the GPU-free runtime into this process.

Called by revati's sitecustomize in every process ``revati emulate`` starts (revati/inject.py),
or directly::

    from revati.shim.activate import activate
    activate({"gpu": "h100", "num_gpus": 1})
    import torch
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)   # no memory, no GPU
    t0 = time.perf_counter(); (x @ x).sum().item(); print(time.perf_counter() - t0)  # H100 time
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path
from typing import Any

from revati.shim.config import EmulationConfig

_ACTIVE: dict[str, Any] = {}


def activate(config: dict[str, Any] | EmulationConfig) -> Any:
    """Install the virtual CUDA device and virtual time; returns the process Runtime."""
    if "runtime" in _ACTIVE:
        return _ACTIVE["runtime"]
    cfg = config if isinstance(config, EmulationConfig) else EmulationConfig.from_json(dict(config))
    from revati.shim import real

    activation_started_s = real.monotonic()

    # Register with the timekeeper before the slow imports: a parent waiting for this process
    # was told to expect it, and virtual time stands still until it registers.
    from revati.shim import runtime, vtime

    coordinator = vtime.connect_coordinator(
        cfg, lvt_fn=lambda: runtime._RUNTIME.clock.now() if runtime._RUNTIME is not None else 0)

    import torch

    # dispatch: loaded now, with everything else revati imports on its own time, not by the
    # first op on a VTensor (Note [Late-bound dispatcher], revati/shim/vtensor.py)
    from revati.shim import collectives, cuda_api, dispatch, engines, factories, native, wholeops  # noqa: F401

    guard = native.cuda_guard()
    guard.revati_install_cuda_guard(cfg.num_gpus)
    rt = runtime.install(runtime.Runtime(cfg, start_ns=coordinator.start_lvt_ns or 0, coordinator=coordinator))
    cuda_api.install(rt, guard)
    factories.register_factories()
    wholeops.install()
    collectives.install()
    # torch.tensor(data, device="cuda") builds on the CPU and then copies: a thread-local switch.
    torch._C._set_only_lift_cpu_tensors(True)
    vtime.THREAD_START_HOOKS.append(lambda: torch._C._set_only_lift_cpu_tensors(True))
    torch.__future__.set_swap_module_params_on_conversion(True)
    waits = vtime.install(rt, coordinator)
    from revati.shim import sockets

    sockets.install(rt.clock, waits)
    engines.install(rt)  # serving-engine adapters, applied when the program imports them
    if cfg.count_host_cpu and cfg.host_drift_filter:   # Note [Host-time drift filter]
        from revati.shim import host_references

        _ACTIVE["references"] = host_references.path_for()
        rt.clock.references = host_references.load(_ACTIVE["references"])
    from revati.shim.clock import install_gc_exclusion

    install_gc_exclusion(rt.clock, getattr(coordinator, "coordination_thread_idents", None))
    # Everything above (the predictor included) is revati's own start-up, not the program's.
    rt.clock.forget_host_cpu_so_far()
    from revati.shim.breakdown import WallClockStart

    _ACTIVE["wall_start"] = WallClockStart(rt.clock)        # Note [Wall-time breakdown]
    _ACTIVE["startup_s"] = _ACTIVE["wall_start"].wall_s - activation_started_s
    _ACTIVE["runtime"] = rt
    atexit.register(_at_exit)
    # after the coordinator's own fork handler (registered when it was imported): the child's
    # clock is rebased on the child's CPU time, and its run is measured from the fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _report_from_multiprocessing_children()
    from revati.shim import stop_signals

    stop_signals.install(_at_stop_signal, Path(cfg.stats_dir) if cfg.stats_dir else None)
    return rt


def _after_fork_in_child() -> None:
    rt = _ACTIVE.get("runtime")
    if rt is None:
        return
    from revati.shim.breakdown import WallClockStart

    rt.clock.after_fork_in_child()
    _ACTIVE["wall_start"] = WallClockStart(rt.clock)
    _ACTIVE["startup_s"] = 0.0


def _report_from_multiprocessing_children() -> None:
    """A multiprocessing child started by fork leaves through os._exit: atexit handlers never
    run, and it would write no summary (a forked vLLM engine core reported nothing). Its
    Process._bootstrap calls multiprocessing.util._exit_function last: report there too."""
    import multiprocessing.util as mp_util

    from revati.shim.patching import original, patch

    def _exit_function(*args, **kwargs):
        try:
            _at_exit()
        except Exception as exc:   # the child's own exit must go on
            print(f"revati: could not write this process's summary ({exc!r})", file=sys.stderr)
        return original(mp_util, "_exit_function")(*args, **kwargs)

    patch(mp_util, "_exit_function", _exit_function)


def _at_exit() -> None:
    rt = _ACTIVE.get("runtime")
    if rt is None or _ACTIVE.get("reported_by") == os.getpid():
        return
    _ACTIVE["reported_by"] = os.getpid()   # once per process (atexit and multiprocessing's exit)
    # The coordinator stays connected: atexit handlers registered before ours (multiprocessing's
    # finalizers joining its feeder threads) still wait virtually; the socket closes with the process.
    rt.timeline.write()
    if _ACTIVE.get("references") is not None:
        from revati.shim import host_references

        host_references.save(_ACTIVE["references"], rt.clock.segment_references())
    _write_summary(rt)


def _at_stop_signal(signal_name: str) -> None:
    """The program's SIGTERM handler is about to run, and the process may be killed right after
    (revati/shim/stop_signals.py): write what it has so far; a normal exit later rewrites it."""
    rt = _ACTIVE.get("runtime")
    if rt is None or _ACTIVE.get("reported_by") == os.getpid():
        return
    rt.timeline.write()
    _write_summary(rt, ended_by=signal_name)


def _write_summary(rt: Any, ended_by: str | None = None) -> None:
    if not rt.config.stats_dir:
        return
    from revati.parquet_io import atomic_write_bytes
    from revati.shim import patching
    from revati.shim.breakdown import breakdown

    summary = rt.summary()
    summary["explain"] = patching.explain()   # Note [Patch registry]
    summary["breakdown"] = breakdown(rt, _ACTIVE["wall_start"], _ACTIVE["startup_s"])
    summary["dispatch"] = rt.stats.line()
    summary["predictor"] = rt.predictor.stats.line()
    if ended_by is not None:
        summary["ended_by"] = ended_by
    from revati.shim.stop_signals import summary_path

    path = summary_path(Path(rt.config.stats_dir), os.getpid())
    atomic_write_bytes(path, json.dumps(summary, indent=2, default=str).encode())
