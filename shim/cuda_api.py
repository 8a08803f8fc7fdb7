"""``torch.cuda`` and ``torch.accelerator`` answering for the virtual GPUs.

Installed once per process by ``install(rt)``. Device properties come from the GPU spec table
(revati/gpus.py); memory functions read the caching-allocator model; streams, events and CUDA
graphs drive the virtual timeline (Note [Streams and synchronisation] in device.py).
Note: ``torch.cuda._is_compiled`` is deliberately left alone -- patching it makes
torch._dynamo import CUDA-only symbols that a CPU build lacks.
One module (not split into stand-in objects and patch tables) because both share the runtime
and native device setter that ``install`` binds (``_RT``, ``_set_device_native``): split, the
installer would have to set another module's globals.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import torch

from revati.shim.device import GraphCapture
from revati.shim.runtime import Runtime
from revati.shim.patching import patch

_RT: Runtime | None = None
CUDA_TYPE = 1  # c10::DeviceType::CUDA


def _rt() -> Runtime:
    assert _RT is not None
    return _RT


def _index(device: Any = None, optional: bool = True) -> int:
    if device is None:
        return _rt().gpus.current_device()
    if isinstance(device, int):
        return device if device >= 0 else _rt().gpus.current_device()
    if isinstance(device, str):
        device = torch.device(device)
    if isinstance(device, torch.device):
        return device.index if device.index is not None else _rt().gpus.current_device()
    index = getattr(device, "device_index", None)
    if index is not None:
        return index
    return _rt().gpus.current_device()


# -- device properties --------------------------------------------------------------------------

class VirtualDeviceProperties:
    """What torch.cuda.get_device_properties returns, from the GPU spec table."""

    def __init__(self, index: int):
        rt = _rt()
        spec = rt.gpus.spec
        self.name = spec.name
        self.major, self.minor = spec.cc
        self.total_memory = spec.memory_bytes
        self.multi_processor_count = spec.sm_count
        self.is_integrated = False
        self.is_multi_gpu_board = False
        self.max_threads_per_multi_processor = spec.max_threads_per_sm
        self.max_threads_per_block = 1024
        self.warp_size = 32
        self.regs_per_multiprocessor = spec.registers_per_sm
        self.shared_memory_per_block = 48 * 1024
        self.shared_memory_per_block_optin = spec.shared_memory_per_sm_bytes - 1024
        self.shared_memory_per_multiprocessor = spec.shared_memory_per_sm_bytes
        self.L2_cache_size = spec.l2_cache_bytes
        self.clock_rate = spec.sm_clock_max_mhz * 1000          # kHz, as CUDA reports it
        self.memory_clock_rate = spec.mem_clock_mhz * 1000
        self.memory_bus_width = spec.memory_bus_width_bits
        self.uuid = f"GPU-revati-{spec.key}-{index:04d}"
        self.pci_bus_id = 0x18 + index
        self.pci_device_id = 0
        self.pci_domain_id = 0
        self.gcnArchName = f"sm_{spec.cc[0]}{spec.cc[1]}"
        self.index = index

    def __repr__(self) -> str:
        return (f"_CudaDeviceProperties(name='{self.name}', major={self.major}, minor={self.minor}, "
                f"total_memory={self.total_memory // (1 << 20)}MB, "
                f"multi_processor_count={self.multi_processor_count}, uuid={self.uuid}, "
                f"L2_cache_size={self.L2_cache_size // (1 << 20)}MB)")


# -- streams and events -------------------------------------------------------------------------

class Stream(torch.Stream):
    """A virtual CUDA stream (a real torch.Stream, so record_stream and friends accept it)."""

    def __new__(cls, device: Any = None, priority: int = 0, stream_id: int | None = None,
                device_index: int | None = None, device_type: int | None = None, **kwargs):
        gpus = _rt().gpus
        dev = device_index if device_index is not None else _index(device)
        sid = gpus.new_stream(dev) if stream_id is None else stream_id
        self = torch.Stream.__new__(cls, stream_id=sid, device_index=dev, device_type=CUDA_TYPE)
        self._priority = priority
        return self

    def __init__(self, *args, **kwargs):
        pass

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", self.device_index)

    @property
    def cuda_stream(self) -> int:
        return 0 if self.stream_id == 0 else 0x5EC0_0000 + self.stream_id

    @property
    def priority(self) -> int:
        return getattr(self, "_priority", 0)

    def synchronize(self) -> None:
        _rt().gpus.synchronize_stream(self.device_index, self.stream_id)

    def query(self) -> bool:
        rt = _rt()
        return rt.gpus.stream_ready(self.device_index, self.stream_id) <= rt.clock.now()

    def wait_event(self, event: "Event") -> None:
        if event.time_ns is not None:
            _rt().gpus.wait_until(self.device_index, self.stream_id, event.time_ns)

    def wait_stream(self, stream: "Stream") -> None:
        gpus = _rt().gpus
        gpus.wait_until(self.device_index, self.stream_id, gpus.stream_ready(stream.device_index, stream.stream_id))

    def record_event(self, event: "Event | None" = None) -> "Event":
        event = event if event is not None else Event()
        event.record(self)
        return event

    def __eq__(self, other: object) -> bool:
        return isinstance(other, torch.Stream) and other.stream_id == self.stream_id \
            and other.device_index == self.device_index

    def __hash__(self) -> int:
        return hash((self.device_index, self.stream_id))

    def __enter__(self):
        self._ctx = stream(self)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    def __repr__(self) -> str:
        return f"<torch.cuda.Stream device=cuda:{self.device_index} cuda_stream={hex(self.cuda_stream)}>"


_STREAMS: dict[tuple[int, int], Stream] = {}


def _stream_obj(dev: int, sid: int) -> Stream:
    s = _STREAMS.get((dev, sid))
    if s is None:
        s = _STREAMS[(dev, sid)] = Stream(device_index=dev, stream_id=sid)
    return s


def current_stream(device: Any = None) -> Stream:
    dev = _index(device)
    return _stream_obj(dev, _rt().gpus.current_stream(dev))


def default_stream(device: Any = None) -> Stream:
    return _stream_obj(_index(device), 0)


def set_stream(s: torch.Stream) -> None:
    if s is not None:
        _rt().gpus.set_current_stream(s.device_index, s.stream_id)


class StreamContext:
    def __init__(self, s: torch.Stream | None):
        self.stream = s
        self.prev: tuple[int, int] | None = None

    def __enter__(self):
        if self.stream is None:
            return self.stream
        gpus = _rt().gpus
        dev = self.stream.device_index
        self.prev = (dev, gpus.current_stream(dev))
        self.prev_device = gpus.current_device()
        gpus.set_current_stream(dev, self.stream.stream_id)
        return self.stream

    def __exit__(self, *exc):
        if self.prev is not None:
            _rt().gpus.set_current_stream(*self.prev)
        return False


def stream(s: torch.Stream | None) -> StreamContext:
    return StreamContext(s)


class Event:
    """A virtual CUDA event: it carries the virtual time its stream reached when recorded."""

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False,
                 external: bool = False):
        self.enable_timing = enable_timing
        self.time_ns: int | None = None
        self.device_index = _rt().gpus.current_device()

    def record(self, s: torch.Stream | None = None) -> None:
        gpus = _rt().gpus
        if s is None:
            s = current_stream()
        self.device_index = s.device_index
        cap = gpus.capture
        if cap is not None:
            return
        self.time_ns = max(gpus.stream_ready(s.device_index, s.stream_id), _rt().clock.now())

    def wait(self, s: torch.Stream | None = None) -> None:
        (s if s is not None else current_stream()).wait_event(self)  # type: ignore[union-attr]

    def query(self) -> bool:
        return self.time_ns is None or self.time_ns <= _rt().clock.now()

    def synchronize(self) -> None:
        if self.time_ns is not None:
            _rt().gpus.host_wait(self.time_ns, "event synchronize")

    def elapsed_time(self, end: "Event") -> float:
        if self.time_ns is None or end.time_ns is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end.time_ns - self.time_ns) / 1e6

    def ipc_handle(self):
        raise RuntimeError("revati: interprocess CUDA events are not supported")


class AcceleratorEvent(Event):
    """``torch.Event``, the device-generic event (vLLM's model runner times its device->host
    copy of sampled ids with one): an event of the current accelerator, the virtual GPU."""

    def __init__(self, device: Any = None, *, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False):
        super().__init__(enable_timing, blocking, interprocess)
        index = getattr(torch.device(device), "index", None) if isinstance(device, (str, torch.device)) else device
        if index is not None:
            self.device_index = int(index)


# -- graphs and pools -----------------------------------------------------------------------------

class CUDAGraph:
    """Capture records the launched kernels; each replay launches their total as one graph."""

    def __init__(self, keep_graph: bool = False):
        self.capture: GraphCapture | None = None
        self._pool = (0, id(self) & 0xFFFF_FFFF)

    def capture_begin(self, pool=None, capture_error_mode: str = "global", **kwargs) -> None:
        rt = _rt()
        dev = rt.gpus.current_device()
        rt.gpus.begin_capture(dev, rt.gpus.current_stream(dev))

    def capture_end(self) -> None:
        self.capture = _rt().gpus.end_capture()

    def replay(self) -> None:
        if self.capture is None:
            raise RuntimeError("CUDAGraph.replay() called before a capture")
        rt = _rt()
        rt.gpus.replay(self.capture, rt.clock.now())

    def instantiate(self) -> None:
        pass

    def reset(self) -> None:
        self.capture = None

    def pool(self):
        return self._pool

    def enable_debug_mode(self) -> None:
        pass

    def debug_dump(self, path: str) -> None:
        pass

    @property
    def captured_kernels(self) -> int:
        return len(self.capture.kernels) if self.capture else 0

    @property
    def captured_ns(self) -> int:
        return self.capture.total_ns if self.capture else 0


class MemPool:
    def __init__(self, allocator=None, use_on_oom: bool = False, symmetric: bool = False):
        self.allocator = allocator
        self.id = (1, id(self) & 0xFFFF_FFFF)

    def use_count(self) -> int:
        return 1

    def snapshot(self):
        return []


@contextlib.contextmanager
def use_mem_pool(pool, device=None):
    yield


def graph_pool_handle():
    return (0, threading.get_ident() & 0xFFFF_FFFF)


# -- memory ----------------------------------------------------------------------------------------

def _alloc(device: Any = None):
    return _rt().gpus.allocators[_index(device)]


def mem_get_info(device: Any = None) -> tuple[int, int]:
    rt = _rt()
    total = rt.gpus.spec.memory_bytes
    used = rt.config.context_overhead_bytes + _alloc(device).stats.reserved_bytes
    return max(total - used, 0), total


def memory_stats(device: Any = None) -> dict[str, int]:
    return dict(sorted(_alloc(device).memory_stats().items()))


def memory_summary(device: Any = None, abbreviated: bool = False) -> str:
    st = _alloc(device).stats
    return (f"revati virtual GPU {_index(device)}: allocated {st.allocated_bytes} B (peak {st.peak_allocated_bytes} B), "
            f"reserved {st.reserved_bytes} B (peak {st.peak_reserved_bytes} B), {st.num_allocs} allocs, "
            f"{st.num_ooms} OOMs")


def _synchronize(device: Any = None) -> None:
    _rt().gpus.synchronize_device(_index(device))


# -- installation ---------------------------------------------------------------------------------

class _device_ctx:
    def __init__(self, device: Any):
        self.idx = _index(device) if device is not None else -1
        self.prev = -1

    def __enter__(self):
        gpus = _rt().gpus
        self.prev = gpus.current_device()
        if self.idx >= 0:
            _set_device(self.idx)

    def __exit__(self, *exc):
        if self.prev >= 0:
            _set_device(self.prev)
        return False


_set_device_native = None


def _set_device(device: Any) -> None:
    idx = _index(device)
    if not 0 <= idx < _rt().gpus.count:
        raise RuntimeError(f"CUDA error: invalid device ordinal (device {idx}, {_rt().gpus.count} virtual GPUs)")
    assert _set_device_native is not None
    _set_device_native(idx)


def install(rt: Runtime, guard_lib) -> None:
    """Patch torch.cuda / torch.accelerator for this process's virtual GPUs."""
    global _RT, _set_device_native
    _RT = rt
    _set_device_native = guard_lib.revati_set_current_device
    rt.gpus.set_device_getter(guard_lib.revati_current_device)
    n = rt.gpus.count
    c = torch.cuda
    spec = rt.gpus.spec
    cap = spec.cc

    def _alloc_fn(name):
        return lambda device=None: getattr(_alloc(device).stats, name)

    patches: dict[str, Any] = {
        "_lazy_init": lambda: None,
        "init": lambda: None,
        "is_initialized": lambda: True,
        "is_available": lambda: True,
        "device_count": lambda: n,
        "_device_count_nvml": lambda: n,
        "_device_count_amdsmi": lambda: -1,
        "current_device": lambda: rt.gpus.current_device(),
        "set_device": _set_device,
        "device": _device_ctx,
        "get_device_properties": lambda device=None: VirtualDeviceProperties(_index(device)),
        "get_device_name": lambda device=None: spec.name,
        "get_device_capability": lambda device=None: cap,
        "get_arch_list": lambda: [f"sm_{cap[0]}{cap[1]}"],
        "get_gencode_flags": lambda: f"-gencode compute=compute_{cap[0]}{cap[1]},code=sm_{cap[0]}{cap[1]}",
        "is_bf16_supported": lambda including_emulation=True: cap >= (8, 0),
        "is_tf32_supported": lambda: cap >= (8, 0),
        "synchronize": _synchronize,
        "Stream": Stream,
        "Event": Event,
        "current_stream": current_stream,
        "default_stream": default_stream,
        "stream": stream,
        "set_stream": set_stream,
        "StreamContext": StreamContext,
        "mem_get_info": mem_get_info,
        "memory_allocated": _alloc_fn("allocated_bytes"),
        "memory_reserved": _alloc_fn("reserved_bytes"),
        "max_memory_allocated": _alloc_fn("peak_allocated_bytes"),
        "max_memory_reserved": _alloc_fn("peak_reserved_bytes"),
        "memory_cached": _alloc_fn("reserved_bytes"),
        "max_memory_cached": _alloc_fn("peak_reserved_bytes"),
        "reset_peak_memory_stats": lambda device=None: _alloc(device).reset_peak(),
        "reset_max_memory_allocated": lambda device=None: _alloc(device).reset_peak(),
        "reset_max_memory_cached": lambda device=None: _alloc(device).reset_peak(),
        "reset_accumulated_memory_stats": lambda device=None: None,
        "memory_stats": memory_stats,
        "memory_summary": memory_summary,
        "empty_cache": lambda: [a.empty_cache() for a in rt.gpus.allocators] and None,
        "ipc_collect": lambda: None,
        "set_per_process_memory_fraction": lambda fraction, device=None: None,
        "get_per_process_memory_fraction": lambda device=None: 1.0,
        "device_memory_used": lambda device=None: mem_get_info(device)[1] - mem_get_info(device)[0],
        "CUDAGraph": CUDAGraph,
        "MemPool": MemPool,
        "use_mem_pool": use_mem_pool,
        "graph_pool_handle": graph_pool_handle,
        "is_current_stream_capturing": lambda: rt.gpus.capture is not None,
        "can_device_access_peer": lambda device, peer: spec.nvlink_bandwidth_bytes_per_s > 0,
        "manual_seed": lambda seed: None,
        "manual_seed_all": lambda seed: None,
        "seed": lambda: None,
        "seed_all": lambda: None,
        "initial_seed": lambda: 0,
        "get_rng_state": lambda device="cuda": torch.zeros(16, dtype=torch.uint8),
        "set_rng_state": lambda new_state, device="cuda": None,
        "get_rng_state_all": lambda: [torch.zeros(16, dtype=torch.uint8) for _ in range(n)],
        "set_rng_state_all": lambda new_states: None,
        "utilization": lambda device=None: 0,
        "temperature": lambda device=None: 40,
        "power_draw": lambda device=None: 100_000,
        "clock_rate": lambda device=None: spec.sm_clock_max_mhz,
    }
    for name, value in patches.items():
        patch(c, name, value)
    patch(c.graphs, "CUDAGraph", CUDAGraph)
    patch(c.graphs, "graph_pool_handle", graph_pool_handle)
    patch(c.graphs, "is_current_stream_capturing", patches["is_current_stream_capturing"])
    for sub in ("memory",):
        mod = getattr(c, sub, None)
        if mod is not None:
            for name in ("mem_get_info", "memory_allocated", "memory_reserved", "max_memory_allocated",
                         "max_memory_reserved", "memory_stats", "empty_cache", "reset_peak_memory_stats",
                         "memory_summary", "MemPool", "use_mem_pool"):
                if hasattr(mod, name):
                    patch(mod, name, patches[name])
    patch(c.streams, "Stream", Stream)
    patch(c.streams, "Event", Event)
    patch(torch, "Event", AcceleratorEvent)
    patch(c.random, "get_rng_state", patches["get_rng_state"])
    patch(c.random, "set_rng_state", patches["set_rng_state"])

    nvtx = c.nvtx
    patch(nvtx, "range_push", lambda msg: 0)
    patch(nvtx, "range_pop", lambda: 0)
    patch(nvtx, "mark", lambda msg: None)
    patch(nvtx, "range_start", lambda msg: 0)
    patch(nvtx, "range_end", lambda range_id: None)

    @contextlib.contextmanager
    def _nvtx_range(msg, *args, **kwargs):
        yield

    patch(nvtx, "range", _nvtx_range)

    # CUDA-only C entry points that stock torch.cuda Python code calls (graph capture, ...)
    for name in ("_host_emptyCache", "_cuda_clearCublasWorkspaces"):
        if not hasattr(torch._C, name):
            patch(torch._C, name, lambda *a, **k: None)
    patch(torch.backends.cuda, "is_built", lambda: True)
    patch(torch.backends.cudnn, "is_available", lambda: True)

    _install_accelerator(rt, n)
    _install_tensor_methods()


def _install_accelerator(rt: Runtime, n: int) -> None:
    acc = torch.accelerator
    cuda = torch.device("cuda")
    real_get_device_module = torch.get_device_module

    def get_device_module(device=None):
        # With no device torch asks the C++ accelerator registry, which a CPU build says is the CPU.
        return torch.cuda if device is None else real_get_device_module(device)

    patch(torch, "get_device_module", get_device_module)
    patch(torch._C, "_get_accelerator", lambda: cuda)

    def _memory_info(device_index=None):
        return mem_get_info(device_index)

    patches = {
        "is_available": lambda: True,
        "current_accelerator": lambda check_available=False: cuda,
        "device_count": lambda: n,
        "current_device_index": lambda: rt.gpus.current_device(),
        "current_device_idx": lambda: rt.gpus.current_device(),
        "set_device_index": lambda device: _set_device(device),
        "set_device_idx": lambda device: _set_device(device),
        "current_stream": lambda device=None: current_stream(device),
        "set_stream": set_stream,
        "synchronize": lambda device=None: _synchronize(device),
        "get_memory_info": _memory_info,
        "get_device_capability": lambda device=None: {"capability": rt.gpus.spec.cc},
        "empty_cache": torch.cuda.empty_cache,
        "empty_host_cache": lambda: None,
        "memory_allocated": torch.cuda.memory_allocated,
        "memory_reserved": torch.cuda.memory_reserved,
        "max_memory_allocated": torch.cuda.max_memory_allocated,
        "max_memory_reserved": torch.cuda.max_memory_reserved,
        "memory_stats": memory_stats,
        "reset_peak_memory_stats": torch.cuda.reset_peak_memory_stats,
        "reset_accumulated_memory_stats": lambda device=None: None,
    }
    for name, value in patches.items():
        if hasattr(acc, name):
            patch(acc, name, value)
        if hasattr(acc, "memory") and hasattr(acc.memory, name):
            patch(acc.memory, name, value)

    class _device_index:
        def __init__(self, device, /):
            self.ctx = _device_ctx(device)

        def __enter__(self):
            self.ctx.__enter__()

        def __exit__(self, *exc):
            return self.ctx.__exit__(*exc)

    if hasattr(acc, "device_index"):
        patch(acc, "device_index", _device_index)


# Host tensor factories that accept pin_memory=True (a CPU build has no pinned allocator).
PINNABLE_FACTORIES = ("empty", "zeros", "ones", "full", "tensor", "as_tensor", "arange", "empty_strided",
                      "rand", "randn", "randint", "empty_like", "zeros_like", "ones_like", "full_like")


def _unpinned(fn):
    def factory(*args, **kwargs):
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        return fn(*args, **kwargs)
    factory.__name__ = getattr(fn, "__name__", "factory")
    factory.__doc__ = getattr(fn, "__doc__", None)
    factory.__wrapped__ = fn
    return factory


def _install_tensor_methods() -> None:
    # Pinned host memory needs a driver; pageable host tensors behave the same for emulation.
    patch(torch.Tensor, "pin_memory", lambda self, device=None: self)
    patch(torch.Tensor, "is_pinned", lambda self, device=None: False)
    # torch.device("cuda") as a context manager recognises factories by identity: let it
    # remember the real ones before they are wrapped.
    from torch.utils._device import _device_constructors

    _device_constructors()
    for name in PINNABLE_FACTORIES:
        fn = getattr(torch, name, None)
        if fn is not None and not hasattr(fn, "__wrapped__"):
            patch(torch, name, _unpinned(fn))
