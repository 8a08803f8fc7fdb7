"""The layout of one run folder, and reading a table back from every file that holds it.

Every traced process writes its own files, so processes never share a file and a crash of one
loses nothing of the others::

    RUN_DIR/
      runs.parquet                       one row: the run's metadata (written by `revati trace`)
      <table>.<source>.<pid>.parquet     ops, kernels, launches, op_kernels, memory_ops,
                                         collectives, syncs; source = kineto | cupti | bpf
      op_samples.parquet                 timed ops in the common vocabulary, derived from the run
      proc.<pid>.json                    what one process recorded (versions, device, notes)
      steps.<pid>.jsonl                  its step marks (see tracer/steps.py)
      raw/                               optional raw profiler exports (--keep-raw)

Every file name starts with its table name, so ``**/<table>*.parquet`` globs (the DuckDB
views of ``revati db``) find them; ``ops*`` does not match ``op_kernels``/``op_samples``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import pyarrow as pa

from revati import parquet_io, schema
from revati.errors import BadInput

TRACE_TABLES = ("ops", "kernels", "launches", "op_kernels", "memory_ops", "collectives", "syncs")
PROC_PREFIX = "proc."
RUNS_FILE = "runs.parquet"
OP_SAMPLES_FILE = "op_samples.parquet"


def table_path(run_dir: Path, table: str, source: str, pid: int) -> Path:
    if table not in TRACE_TABLES:
        raise ValueError(f"{table!r} is not a per-process trace table")
    return Path(run_dir) / f"{table}.{source}.{pid}.parquet"


def proc_meta_path(run_dir: Path, pid: int) -> Path:
    return Path(run_dir) / f"{PROC_PREFIX}{pid}.json"


def write_process_tables(run_dir: Path, tables: Mapping[str, pa.Table], source: str, pid: int) -> dict[str, int]:
    """Write one process's tables (empty ones too: they say 'recorded, found nothing')."""
    counts = {}
    for name, table in tables.items():
        parquet_io.write_table(table, name, table_path(run_dir, name, source, pid))
        counts[name] = table.num_rows
    return counts


def write_proc_meta(run_dir: Path, pid: int, meta: Mapping) -> Path:
    path = proc_meta_path(run_dir, pid)
    parquet_io.atomic_write_bytes(path, (json.dumps(meta, sort_keys=True, indent=1, default=str) + "\n").encode())
    return path


def read_proc_metas(run_dir: Path) -> list[dict]:
    metas = []
    for path in sorted(Path(run_dir).glob(f"{PROC_PREFIX}*.json")):
        try:
            metas.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a process killed mid-write leaves no file (atomic), so this is foreign
    return metas


def table_files(run_dir: Path, table: str) -> list[Path]:
    run_dir = Path(run_dir)
    files = sorted(run_dir.glob(f"{table}.*.parquet"))
    single = run_dir / f"{table}.parquet"
    if single.exists():
        files.insert(0, single)
    return files


def read_run_table(run_dir: Path, table: str) -> pa.Table:
    """All rows of ``table`` in a run folder (every process's file), validated; empty if none."""
    parts = [parquet_io.read_table(p, table) for p in table_files(run_dir, table)]
    if not parts:
        return schema.empty(table)
    return pa.concat_tables(parts) if len(parts) > 1 else parts[0]


def check_run_dir(run_dir: Path) -> Path:
    """``run_dir`` if it is a readable run folder, else BadInput saying what is wrong."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise BadInput(run_dir, "no such run folder")
    if not run_dir.is_dir():
        raise BadInput(run_dir, "not a folder (expected a run folder written by `revati trace`)")
    if not (run_dir / RUNS_FILE).exists() and not any(table_files(run_dir, t) for t in TRACE_TABLES):
        raise BadInput(run_dir, "holds no revati trace tables (runs.parquet, ops.*.parquet, ...)")
    return run_dir


def holds_trace(run_dir: Path) -> bool:
    run_dir = Path(run_dir)
    return run_dir.is_dir() and ((run_dir / RUNS_FILE).exists()
                                 or any(table_files(run_dir, t) for t in TRACE_TABLES))
