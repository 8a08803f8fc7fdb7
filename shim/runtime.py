"""The emulation state of one process: config, clock, virtual GPUs, predictor, value policy.

One Runtime exists per emulated process (``install`` sets it, ``get`` returns it). The
dispatch hot path reads it from a module global.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

from revati.shim.clock import ProcessClock
from revati.shim.config import EmulationConfig
from revati.shim.device import VirtualGPUs
from revati.shim.timeline import Timeline
from revati.shim.timing import OpCoster
from revati.shim.values import ValuePolicy


@dataclass
class DispatchStats:
    ops: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    decomposed: int = 0
    valued: int = 0
    d2h_reads: int = 0
    h2d_copies: int = 0
    bypass: Counter = field(default_factory=Counter)   # reason -> ops not cached

    def line(self) -> str:
        rate = self.cache_hits / self.ops if self.ops else 0.0
        byp = ", ".join(f"{k}={v}" for k, v in self.bypass.most_common(5)) or "none"
        return (f"dispatch: {self.ops} ops, {rate:.1%} cached ({self.cache_misses} signatures), "
                f"{self.valued} with values, {self.d2h_reads} device->host reads; bypass: {byp}")


def _load_predictor(config: EmulationConfig):
    from revati.replay.prediction import predictor as pred

    loader = getattr(pred, "load_predictor", None)
    if loader is not None:
        return loader(config.gpu, models_dir=config.models_dir, kernel_stack=config.kernel_stack)
    return pred.Predictor(config.gpu)


class Runtime:
    def __init__(self, config: EmulationConfig, start_ns: int = 0, coordinator=None):
        self.config = config
        self.coordinator = coordinator
        extra = coordinator.coordination_cpu_ns if coordinator is not None else None
        self.clock = ProcessClock(start_ns, config.count_host_cpu, config.host_speed, extra)
        self.clock.drift_filter = config.host_drift_filter
        name = config.process_name or os.path.basename(sys.argv[0] or "python")
        self.timeline = Timeline(config.timeline_path, name)
        self.gpus = VirtualGPUs(config, self.clock, self.timeline)
        self.predictor = _load_predictor(config)
        self.coster = OpCoster(self.predictor)
        self.policy = ValuePolicy(config.token_id, config.eos_token_ids)
        self.stats = DispatchStats()

    def busy(self):
        """revati's own possibly long work (the coordinator's busy(), where it has one)."""
        busy = getattr(self.coordinator, "busy", None)
        return busy() if busy is not None else contextlib.nullcontext()

    def summary(self) -> dict:
        g = self.gpus
        return {
            "pid": os.getpid(),
            "process_name": _process_name(self.timeline.process_name),
            "gpu": self.config.gpu,
            "virtual_now_ns": self.clock.now(),
            "host_cpu_ns": self.clock.host_ns(),
            "shim_cpu_ns": self.clock.shim_cpu_ns,
            "gc_full_ns": self.clock.gc_full_ns,
            "ops": self.stats.ops,
            "cache_hits": self.stats.cache_hits,
            "signatures": self.stats.cache_misses,
            "kernels_launched": g.kernels_launched,
            "graph_replays": g.graph_replays,
            "syncs": g.syncs,
            "predictor_calls": self.predictor.stats.calls,
            "fallback_op_count": g.fallback_launches,
            "fallback_shapes": self.predictor.stats.fallback_count,
            "unannounced_children": _unannounced_children(),
            **_hold_counts(),
            "fallbacks": dict(self.predictor.stats.fallbacks),
            "peak_allocated_bytes": [a.stats.peak_allocated_bytes for a in g.allocators],
            "peak_reserved_bytes": [a.stats.peak_reserved_bytes for a in g.allocators],
        }


def _process_name(started_as: str) -> str:
    """What to call this process in reports. A spawned multiprocessing child starts as
    ``python -c ...`` (``-c``); its Process name (vLLM's ``EngineCore_DP0``, ``VllmWorker-1``) is
    known only once it runs, so it is read here."""
    mp = sys.modules.get("multiprocessing")
    if started_as == "-c" and mp is not None:
        name = mp.current_process().name
        if name != "MainProcess":
            return name
    return started_as


def _hold_counts() -> dict:
    """Note [Threads in virtual time]: holds made, and those that gave up (nondeterminism)."""
    from revati.shim import vtime

    waits = vtime.current_waits()
    return {"holds": waits.holds, "hold_timeouts": waits.hold_timeouts} if waits is not None else {}


def _unannounced_children() -> int:
    from revati.shim import vtime

    return vtime.unannounced_children()


_RUNTIME: Runtime | None = None


def install(runtime: Runtime) -> Runtime:
    global _RUNTIME
    _RUNTIME = runtime
    return runtime


def get() -> Runtime:
    if _RUNTIME is None:
        raise RuntimeError("revati shim is not active in this process")
    return _RUNTIME


def active() -> bool:
    return _RUNTIME is not None
