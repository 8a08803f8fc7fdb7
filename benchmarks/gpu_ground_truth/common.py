"""Shared pieces of the ground-truth benchmarks: devices, dtypes, careful timing, results.

Timing discipline (shared/spikes/TRACING_REPORT.md §3): a warm-up pass first (lazy loading,
cuBLAS heuristics, autotuning) marked as step 0 so ``revati trace --warmup-steps 1`` drops it;
an L2 flush (writing a buffer larger than L2) before every timed call so no call finds its
inputs cached; CUDA events around each call as a cross-check of the tracer's kernel times; GPU
clocks read through NVML before and after (``revati trace`` records them in ``runs`` too).
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

try:  # a no-op when the script is not run under `revati trace`
    import revati.tracer as tracer
except ImportError:  # pragma: no cover - revati not installed: run untraced
    tracer = None

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
L2_FLUSH_BYTES = 256 * 1024 * 1024   # 5x an H100's 50 MiB L2


def step() -> None:
    if tracer is not None:
        tracer.step()


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible (use --device cpu --tiny for a pipeline check)")
    return torch.device(name)


class Timer:
    """CUDA events on a GPU, perf_counter on the CPU; L2 flushed before each timed call."""

    def __init__(self, device: torch.device, flush_l2: bool = True):
        self.device = device
        self.cuda = device.type == "cuda"
        self.flush_buffer = (torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device=device)
                             if self.cuda and flush_l2 else None)

    def flush(self) -> None:
        if self.flush_buffer is not None:
            self.flush_buffer.zero_()

    def time_ms(self, fn: Callable[[], Any]) -> float:
        """Time one call (flush first, outside any labelled range, if its inputs must be cold)."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def gpu_state() -> dict[str, Any]:
    """Clocks and identity of the GPU (NVML through revati, else torch), for the results file."""
    state: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        from revati.tracer import nvml

        state.update(nvml.query() or {})
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        state.update(device_name=props.name, sm_count=props.multi_processor_count)
    return state


class Results:
    """JSON lines: a header with the GPU state, one line per timed call, a footer with clocks."""

    def __init__(self, path: str | None, meta: dict[str, Any]):
        self.path = Path(path) if path else None
        self.rows: list[dict[str, Any]] = []
        self.meta = {"kind": "header", "argv": sys.argv, "pid": os.getpid(), **meta, "gpu_before": gpu_state()}

    def add(self, **row: Any) -> None:
        self.rows.append({"kind": "sample", **row})

    def close(self) -> None:
        footer = {"kind": "footer", "gpu_after": gpu_state(), "samples": len(self.rows)}
        lines = [self.meta, *self.rows, footer]
        text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in lines)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)


@contextmanager
def labelled(name: str) -> Iterator[None]:
    """A record_function range naming the case: replay descends through it, readers group by it."""
    with torch.profiler.record_function(name):
        yield
