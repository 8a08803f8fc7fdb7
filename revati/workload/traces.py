"""Recorded request traces: the shipped ``request_trace`` tables and Mooncake-style JSONL.

Shipped traces live in ``traces/workloads/request_trace-<name>.parquet`` (table
``request_trace`` of revati/schema.py; the file-name prefix is what ``revati db``'s
``request_trace`` view globs for), next to their licence and citation. A trace replays at its recorded
timestamps: request i arrives ``arrival_ns[i]`` after the first one (optionally sped up).

Mooncake JSONL (kvcache-ai/Mooncake ``mooncake_trace.jsonl``; also read by NVIDIA Dynamo and
AIPerf) has one request per line::

    {"timestamp": 3052, "input_length": 7234, "output_length": 794, "hash_ids": [0, 28, 29]}

``timestamp`` is the arrival in milliseconds since the first request; ``hash_ids`` name the
prompt's KV blocks of ``block_size`` tokens (512 in Mooncake's traces), equal ids meaning equal
prefix blocks. Prompts built from them share real prefixes (revati.workload.prompts).

Example::

    from revati.workload.traces import load_request_trace, trace_requests
    reqs = trace_requests(load_request_trace("azure_conv_2023"), max_requests=200)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa

from revati import parquet_io
from revati.errors import BadInput
from revati.paths import embedded_traces_dir
from revati.workload.request import WorkloadRequest

MOONCAKE_BLOCK_SIZE = 512
WORKLOADS_DIR = "workloads"
FILE_PREFIX = "request_trace-"


def trace_file_name(name: str) -> str:
    return f"{FILE_PREFIX}{name}.parquet"


def shipped_traces() -> dict[str, Path]:
    """Name -> path of every request trace shipped in ``traces/workloads/``."""
    folder = embedded_traces_dir() / WORKLOADS_DIR
    return {p.stem[len(FILE_PREFIX):]: p for p in sorted(folder.glob(f"{FILE_PREFIX}*.parquet"))}


def load_request_trace(name_or_path: str | os.PathLike) -> pa.Table:
    """A shipped trace by name (``azure_conv_2023``) or any ``request_trace`` Parquet file."""
    shipped = shipped_traces()
    if str(name_or_path) in shipped:
        path = shipped[str(name_or_path)]
    else:
        path = Path(name_or_path)
        if not path.exists():
            raise BadInput(name_or_path, f"no such request trace; shipped: {', '.join(shipped) or 'none'}")
    return parquet_io.read_table(path, "request_trace")


def trace_requests(
    table: pa.Table,
    max_requests: int | None = None,
    start_s: float = 0.0,
    time_scale: float = 1.0,
) -> list[WorkloadRequest]:
    """Requests of a ``request_trace`` table at their recorded offsets.

    ``start_s`` skips the trace's first seconds (the window then starts at its first request);
    ``time_scale`` > 1 replays faster (offsets are divided by it). Requests that generated no
    token in the recording get one, since a benchmark request needs >= 1 output token.
    """
    if time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    table = table.sort_by([("arrival_ns", "ascending"), ("request_id", "ascending")])
    arrivals = table.column("arrival_ns").to_pylist()
    inputs = table.column("input_tokens").to_pylist()
    outputs = table.column("output_tokens").to_pylist()
    start_ns = int(start_s * 1e9)
    rows = [i for i, a in enumerate(arrivals) if a >= start_ns]
    if max_requests is not None:
        rows = rows[:max_requests]
    if not rows:
        raise BadInput("request trace", f"no request at or after {start_s} s")
    t0 = arrivals[rows[0]]
    return [
        WorkloadRequest(
            request_id=k,
            arrival_s=(arrivals[i] - t0) / 1e9 / time_scale,
            prompt_tokens=max(1, int(inputs[i])),
            output_tokens=max(1, int(outputs[i])),
        )
        for k, i in enumerate(rows)
    ]


def read_mooncake_jsonl(
    path: str | os.PathLike,
    max_requests: int | None = None,
    time_scale: float = 1.0,
) -> list[WorkloadRequest]:
    """Requests of a Mooncake-style JSONL trace (timestamps in ms since the first request)."""
    path = Path(path)
    if not path.exists():
        raise BadInput(path, "no such file")
    if time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    rows: list[tuple[float, int, int, tuple[int, ...] | None]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                ts_ms = float(rec["timestamp"])
                inp = int(rec["input_length"])
                out = int(rec["output_length"])
                hashes = rec.get("hash_ids")
                hashes = tuple(int(h) for h in hashes) if hashes is not None else None
            except (ValueError, KeyError, TypeError) as exc:
                raise BadInput(path, f"line {lineno}: not a Mooncake trace record ({exc!r})") from None
            if ts_ms < 0 or inp < 1 or out < 0:
                raise BadInput(path, f"line {lineno}: negative timestamp or empty prompt")
            rows.append((ts_ms, inp, out, hashes))
            if max_requests is not None and len(rows) >= max_requests:
                break
    if not rows:
        raise BadInput(path, "no requests in the trace")
    rows.sort(key=lambda r: r[0])  # stable: equal timestamps keep file order
    t0 = rows[0][0]
    return [
        WorkloadRequest(
            request_id=i,
            arrival_s=(ts - t0) / 1000.0 / time_scale,
            prompt_tokens=inp,
            output_tokens=max(1, out),
            prefix_hash_ids=hashes,
        )
        for i, (ts, inp, out, hashes) in enumerate(rows)
    ]


def write_mooncake_jsonl(requests: list[WorkloadRequest], path: str | os.PathLike) -> Path:
    """Write requests as Mooncake JSONL (atomically). Requests without hash ids get fresh,
    unshared ones (one per started block), as Mooncake's format requires the field."""
    from revati.parquet_io import atomic_write_bytes

    next_hash = 1 + max((h for r in requests for h in (r.prefix_hash_ids or ())), default=-1)
    lines = []
    for r in requests:
        hashes = r.prefix_hash_ids
        if hashes is None:
            nblocks = -(-r.prompt_tokens // MOONCAKE_BLOCK_SIZE)
            hashes = tuple(range(next_hash, next_hash + nblocks))
            next_hash += nblocks
        lines.append(json.dumps({
            "timestamp": round(r.arrival_s * 1000),
            "input_length": r.prompt_tokens,
            "output_length": r.output_tokens,
            "hash_ids": list(hashes),
        }))
    path = Path(path)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path
