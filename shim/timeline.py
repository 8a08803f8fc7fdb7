"""The virtual timeline of one process, exportable as a Chrome/Perfetto trace.

Events are appended only when a timeline path is configured, so the hot path pays one
attribute test otherwise. Each process writes its own file (``timeline-PID.json``);
``merge_timelines`` joins a run's files into one trace (``timeline.json``), where every process
is a track group and every virtual GPU's streams are lanes, all on the one virtual time axis:
pipeline stages' idle gaps (bubbles) show between their kernels.
"""

from __future__ import annotations

import json
import os
from typing import Any

from revati.parquet_io import atomic_write_bytes


class Timeline:
    def __init__(self, path: str | None, process_name: str):
        self.path = path
        self.enabled = bool(path)
        self.process_name = process_name
        self.events: list[tuple] = []

    def kernel(self, device: int, stream: int, name: str, start_ns: int, dur_ns: int) -> None:
        self.events.append(("k", device, stream, name, start_ns, dur_ns))

    def host(self, name: str, start_ns: int, dur_ns: int, kind: str = "sync") -> None:
        self.events.append(("h", kind, name, start_ns, dur_ns))

    def instant(self, name: str, at_ns: int) -> None:
        self.events.append(("i", name, at_ns))

    def to_chrome(self) -> dict[str, Any]:
        pid = os.getpid()
        out: list[dict[str, Any]] = [
            {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": self.process_name}},
            {"ph": "M", "pid": pid, "tid": 0, "name": "thread_name", "args": {"name": "host"}},
        ]
        named: set[tuple[int, int]] = set()
        for ev in self.events:
            if ev[0] == "k":
                _, dev, stream, name, start, dur = ev
                tid = 1000 * (dev + 1) + stream
                if (dev, stream) not in named:
                    named.add((dev, stream))
                    out.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name",
                                "args": {"name": f"cuda:{dev} stream {stream}"}})
                out.append({"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": "kernel",
                            "ts": start / 1e3, "dur": dur / 1e3})
            elif ev[0] == "h":
                _, kind, name, start, dur = ev
                out.append({"ph": "X", "pid": pid, "tid": 0, "name": name, "cat": kind,
                            "ts": start / 1e3, "dur": dur / 1e3})
            else:
                _, name, at = ev
                out.append({"ph": "i", "pid": pid, "tid": 0, "name": name, "s": "t", "ts": at / 1e3})
        return {"traceEvents": out, "displayTimeUnit": "ms"}

    def write(self) -> str | None:
        if not self.enabled or not self.path:
            return None
        path = self.path.replace("{pid}", str(os.getpid()))
        atomic_write_bytes(path, json.dumps(self.to_chrome()).encode())  # type: ignore[arg-type]
        return path


MERGED_NAME = "timeline.json"


def merge_timelines(folder: str) -> str | None:
    """Join the per-process traces in ``folder`` into ``folder/timeline.json``; its path, or None
    if there were none. A file a process could not finish (killed mid-write) is left out."""
    from pathlib import Path

    events: list[dict[str, Any]] = []
    found = False
    for f in sorted(Path(folder).glob("timeline-*.json")):
        try:
            events.extend(json.loads(f.read_text())["traceEvents"])
        except (OSError, ValueError, KeyError):
            continue
        found = True
    if not found:
        return None
    path = str(Path(folder) / MERGED_NAME)
    atomic_write_bytes(path, json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}).encode())
    return path
