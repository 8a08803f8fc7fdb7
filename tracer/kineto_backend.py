"""The ``kineto`` backend: torch.profiler inside the traced process.

It starts when the program imports torch (a process that never does is not traced and pays
nothing), records CPU ops with shapes on every thread and, when a CUDA device is visible,
CUDA kernels, runtime calls, memory copies and synchronisations. At exit it exports the
profile as Chrome-trace JSON and converts it (tracer/kineto_convert.py).

Only one CUPTI subscriber may exist per process: a program that starts its own
torch.profiler while traced will fail to start it (the tracer got there first).
"""

from __future__ import annotations

import gzip
import importlib.abc
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from revati.tracer.steps import STEP_RANGE_NAME


class TorchImportHook(importlib.abc.MetaPathFinder):
    """Calls ``on_loaded()`` right after ``import torch`` finishes, once."""

    def __init__(self, on_loaded: Callable[[], None]):
        self.on_loaded = on_loaded
        self.fired = False

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch" or self.fired:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        original = spec.loader.exec_module
        hook = self

        def exec_module(module):
            original(module)
            hook._fire()

        spec.loader.exec_module = exec_module
        return spec

    def _fire(self) -> None:
        if self.fired:
            return
        self.fired = True
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        self.on_loaded()

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


class KinetoBackend:
    name = "kineto"

    def __init__(self, session, forked_child: bool = False):
        self.session = session
        self.forked_child = forked_child
        self.prof = None
        self.cuda_activity = False
        self.hook: TorchImportHook | None = None
        self._nvtx_stack = threading.local()
        self._patched_nvtx: dict[str, Any] = {}

    # -- start ---------------------------------------------------------------------------------
    def arm(self) -> None:
        """Start now if torch is loaded, else as soon as the program imports it."""
        if "torch" in sys.modules:
            self.start()
            return
        self.hook = TorchImportHook(self._start_guarded)
        self.hook.install()

    def _start_guarded(self) -> None:
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - never break the traced program's import
            self.session.error(f"kineto: could not start torch.profiler: {type(exc).__name__}: {exc}")

    def start(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        self.cuda_activity = self._cuda_visible(torch)
        if self.cuda_activity:
            activities.append(ProfilerActivity.CUDA)
        kwargs: dict[str, Any] = {"activities": activities, "record_shapes": self.session.config.record_shapes,
                                  "with_stack": False}
        experimental = self._experimental_config(torch)
        if experimental is not None:
            kwargs["experimental_config"] = experimental
        self.prof = profile(**kwargs)
        self.prof.start()
        self._patch_nvtx(torch)
        self.session.note_started(self.name, {"activities": [a.name for a in activities]})

    def _cuda_visible(self, torch) -> bool:
        try:
            if not torch.cuda._is_compiled():
                return False
            # a forked child of a process that initialised CUDA cannot use it
            if self.forked_child and torch.cuda.is_initialized():
                return False
            return torch.cuda.device_count() > 0  # NVML-based where possible: does not init CUDA
        except Exception:  # noqa: BLE001
            return False

    def _experimental_config(self, torch):
        try:
            from torch._C._profiler import _ExperimentalConfig
        except ImportError:
            return None
        # every thread (engine helper threads too) and CUDA sync events where supported
        for kwargs in ({"profile_all_threads": True, "enable_cuda_sync_events": self.cuda_activity},
                       {"enable_cuda_sync_events": self.cuda_activity}, {}):
            try:
                return _ExperimentalConfig(**kwargs)
            except TypeError:
                continue
        return None

    # -- NVTX step ranges -------------------------------------------------------------------------
    def _patch_nvtx(self, torch) -> None:
        """Record ``revati.step`` NVTX ranges as step marks (Kineto does not capture NVTX)."""
        nvtx = getattr(getattr(torch, "cuda", None), "nvtx", None)
        if nvtx is None or self._patched_nvtx:
            return
        backend = self

        def stack() -> list:
            if not hasattr(backend._nvtx_stack, "items"):
                backend._nvtx_stack.items = []
            return backend._nvtx_stack.items

        orig_push, orig_pop = nvtx.range_push, nvtx.range_pop
        orig_start, orig_end = getattr(nvtx, "range_start", None), getattr(nvtx, "range_end", None)
        open_ids: dict[int, int] = {}

        def range_push(msg, *args, **kwargs):
            stack().append((msg, self.session.now_ns()))
            return orig_push(msg, *args, **kwargs)

        def range_pop(*args, **kwargs):
            items = stack()
            if items:
                msg, start = items.pop()
                if msg == STEP_RANGE_NAME:
                    backend.session.add_step_range(start, backend.session.now_ns())
            return orig_pop(*args, **kwargs)

        def range_start(msg, *args, **kwargs):
            start = backend.session.now_ns()
            rid = orig_start(msg, *args, **kwargs)
            if msg == STEP_RANGE_NAME:
                open_ids[rid] = start
            return rid

        def range_end(rid, *args, **kwargs):
            start = open_ids.pop(rid, None)
            if start is not None:
                backend.session.add_step_range(start, backend.session.now_ns())
            return orig_end(rid, *args, **kwargs)

        self._patched_nvtx = {"range_push": orig_push, "range_pop": orig_pop}
        nvtx.range_push, nvtx.range_pop = range_push, range_pop
        if orig_start is not None and orig_end is not None:
            self._patched_nvtx.update(range_start=orig_start, range_end=orig_end)
            nvtx.range_start, nvtx.range_end = range_start, range_end

    # -- stop ------------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self.prof is not None

    def stop(self) -> dict | None:
        """Stop profiling and return the parsed Chrome trace (None if it never started)."""
        if self.hook is not None:
            self.hook.uninstall()
        if self.prof is None:
            return None
        prof, self.prof = self.prof, None
        prof.stop()
        run_dir = Path(self.session.config.out_dir)
        fd, tmp = tempfile.mkstemp(prefix=f".kineto.{os.getpid()}.", suffix=".json", dir=run_dir)
        os.close(fd)
        try:
            prof.export_chrome_trace(tmp)
            with open(tmp, "rb") as fh:
                trace = json.load(fh)
            if self.session.config.keep_raw:
                raw = run_dir / "raw"
                raw.mkdir(exist_ok=True)
                final = raw / f"kineto.{os.getpid()}.json.gz"
                with open(tmp, "rb") as src, gzip.open(f"{final}.tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(f"{final}.tmp", final)
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return trace
