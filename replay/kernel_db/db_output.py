"""Query results as bytes: CSV, JSON, Parquet (the CLI renders the ``table`` format with rich).

Example::

    from revati.replay.kernel_db import db_output
    data = db_output.encode(arrow_table, "csv")
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from revati import paths
from revati.errors import BadInput

FORMATS = ("table", "csv", "json", "parquet")


def _plain(value):
    """A JSON-ready value: NaN/inf -> null, maps -> objects, decimals -> numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time, dt.timedelta)):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):   # Arrow map -> pairs
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def cell_text(value) -> str:
    """One value as text for CSV and the pretty table (null -> empty)."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(table: pa.Table) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.column_names)
    for row in table.to_pylist():
        writer.writerow([cell_text(v) for v in row.values()])
    return buf.getvalue().encode()


def to_json(table: pa.Table) -> bytes:
    """A JSON array of row objects."""
    rows = [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]
    return (json.dumps(rows, indent=1, allow_nan=False) + "\n").encode()


def to_parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def revati_stores() -> list[Path]:
    """The folders revati owns: REVATI_HOME (database, traces, imports, models) and the traces
    and models shipped with the package. Query results are never written into them."""
    return [paths.revati_home(), paths.embedded_traces_dir(), paths.embedded_models_dir()]


def check_output_path(path: str | os.PathLike) -> Path:
    """The file ``-o`` may write: in an existing folder, not a folder itself, outside every store
    (a result written there would replace or join a stored table). Returns the path; BadInput otherwise."""
    path = Path(path).expanduser()
    target = path.absolute().resolve()        # follows symlinks: a link into a store is refused too
    for store in revati_stores():
        store = store.absolute().resolve()
        if target == store or store in target.parents:
            raise BadInput(path, f"inside revati's own store {store}: -o writes only outside it")
    parent = target.parent
    if not parent.exists():
        raise BadInput(path, f"no such folder {parent} (create it first)")
    if not parent.is_dir():
        raise BadInput(path, f"{parent} is not a folder")
    if target.is_dir():
        raise BadInput(path, "is a folder, not a file")
    return path


def encode(table: pa.Table, fmt: str) -> bytes:
    if fmt == "csv":
        return to_csv(table)
    if fmt == "json":
        return to_json(table)
    if fmt == "parquet":
        return to_parquet(table)
    raise ValueError(f"no byte encoding for format {fmt!r}")
