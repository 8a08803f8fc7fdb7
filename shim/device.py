"""The virtual GPUs of one process: streams and their ready times, memory, graph capture.

# Note [Streams and synchronisation]
# Every stream has a ready time: when the last work launched on it completes. A launch at host
# time t starts at max(t, stream ready) and ends after the predicted duration; the launch
# returns at once. Event.record(stream) stamps the stream's ready time; stream.wait_event(e)
# moves the stream's ready time to at least the event's; the host jumps only at real
# synchronisation points (device/stream/event synchronize, blocking copies to or from the host,
# .item()), to the ready time it waited for. Inside a CUDA-graph capture, launches are recorded
# instead of run; a replay is one launch whose duration is the captured total.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from revati import gpus
from revati.shim.allocator import CachingAllocatorModel
from revati.shim.clock import ProcessClock
from revati.shim.config import EmulationConfig
from revati.shim.timeline import Timeline


@dataclass
class GraphCapture:
    device: int
    stream: int
    kernels: list[tuple[int, str]] = field(default_factory=list)  # (duration_ns, name)
    fallback_kernels: int = 0     # of them, timed by the roofline fallback

    @property
    def total_ns(self) -> int:
        return sum(d for d, _ in self.kernels)


class VirtualGPUs:
    """Streams, memory and graph capture for this process's virtual devices."""

    def __init__(self, config: EmulationConfig, clock: ProcessClock, timeline: Timeline):
        self.config = config
        self.spec = gpus.get(config.gpu)
        self.count = config.num_gpus
        self.clock = clock
        self.timeline = timeline
        capacity = self.spec.memory_bytes - config.context_overhead_bytes
        self.allocators = [CachingAllocatorModel(capacity) for _ in range(self.count)]
        self._ready: list[dict[int, int]] = [{0: 0} for _ in range(self.count)]
        self._tls = threading.local()
        self._lock = threading.Lock()
        self._next_stream = 1
        self.kernels_launched = 0
        # kernels timed by the roofline fallback, counted per launch (graph replays included):
        # how much of the run's GPU time rests on the weakest rung of the prediction ladder
        self.fallback_launches = 0
        self.kernel_ns_total = 0          # predicted kernel time launched (graphs included)
        self.collective_ns_total = 0      # predicted collective time (virtual collectives)
        self.graph_replays = 0
        self.last_replayed = None   # the GraphCapture replayed last (engine adapters price its attention)
        self.syncs = 0
        self._current_device = lambda: 0  # replaced by the native guard's getter when installed

    # -- devices and streams ----------------------------------------------------------------
    def set_device_getter(self, getter) -> None:
        self._current_device = getter

    def current_device(self) -> int:
        return self._current_device()

    def _streams(self) -> dict[int, int]:
        cur = getattr(self._tls, "streams", None)
        if cur is None:
            cur = self._tls.streams = {}
        return cur

    def current_stream(self, device: int | None = None) -> int:
        dev = self.current_device() if device is None else device
        return self._streams().get(dev, 0)

    def set_current_stream(self, device: int, stream_id: int) -> None:
        self._streams()[device] = stream_id

    def new_stream(self, device: int) -> int:
        with self._lock:
            sid = self._next_stream
            self._next_stream += 1
            self._ready[device].setdefault(sid, 0)
        return sid

    def stream_ready(self, device: int, stream: int) -> int:
        return self._ready[device].get(stream, 0)

    def device_ready(self, device: int) -> int:
        return max(self._ready[device].values())

    # -- launches -----------------------------------------------------------------------------
    @property
    def capture(self) -> GraphCapture | None:
        return getattr(self._tls, "capture", None)

    def launch(self, duration_ns: int, name: str, host_now: int, device: int | None = None,
               stream: int | None = None, fallback: bool = False) -> int:
        """Queue a kernel; returns its virtual end time (or -1 while capturing a graph).
        ``fallback``: its duration came from the roofline fallback (counted)."""
        cap = getattr(self._tls, "capture", None)
        if cap is not None:
            cap.kernels.append((duration_ns, name))
            cap.fallback_kernels += fallback
            return -1
        dev = self.current_device() if device is None else device
        sid = self._streams().get(dev, 0) if stream is None else stream
        ready = self._ready[dev]
        start = max(host_now, ready.get(sid, 0))
        end = start + duration_ns
        ready[sid] = end
        self.kernels_launched += 1
        self.fallback_launches += fallback
        self.kernel_ns_total += duration_ns
        if self.timeline.enabled:
            self.timeline.kernel(dev, sid, name, start, duration_ns)
        return end

    def wait_until(self, device: int, stream: int, t_ns: int) -> None:
        """The stream does no further work before ``t_ns`` (stream.wait_event)."""
        ready = self._ready[device]
        if ready.get(stream, 0) < t_ns:
            ready[stream] = t_ns

    # -- host synchronisation -------------------------------------------------------------------
    def host_wait(self, t_ns: int, what: str) -> int:
        """Block the host until virtual time ``t_ns``: the host clock jumps there."""
        self.syncs += 1
        before = self.clock.now()
        after = self.clock.advance_to(t_ns)
        if self.timeline.enabled and after > before:
            self.timeline.host(what, before, after - before)
        return after

    def synchronize_stream(self, device: int, stream: int) -> int:
        return self.host_wait(self.stream_ready(device, stream), "stream synchronize")

    def synchronize_device(self, device: int | None = None) -> int:
        dev = self.current_device() if device is None else device
        return self.host_wait(self.device_ready(dev), "device synchronize")

    # -- graphs -------------------------------------------------------------------------------
    def begin_capture(self, device: int, stream: int) -> GraphCapture:
        cap = GraphCapture(device, stream)
        self._tls.capture = cap
        return cap

    def end_capture(self) -> GraphCapture | None:
        cap = getattr(self._tls, "capture", None)
        self._tls.capture = None
        return cap

    def replay(self, cap: GraphCapture, host_now: int) -> int:
        self.graph_replays += 1
        self.last_replayed = cap
        self.fallback_launches += cap.fallback_kernels
        self.clock.charge(self.config.graph_launch_overhead_ns)
        dev = self.current_device()
        sid = self._streams().get(dev, 0)
        ready = self._ready[dev]
        start = max(host_now, ready.get(sid, 0))
        end = start + cap.total_ns
        ready[sid] = end
        self.kernel_ns_total += cap.total_ns
        if self.timeline.enabled:
            self.timeline.kernel(dev, sid, f"cudaGraphLaunch ({len(cap.kernels)} kernels)", start, cap.total_ns)
        return end
