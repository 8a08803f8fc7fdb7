"""Reading and writing revati tables as Parquet: validated on both sides, written atomically.

A write goes to a temporary file in the destination folder and is renamed into place, so an
interrupted write never leaves a half file where a reader (or DuckDB) would find it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from revati import schema
from revati.errors import BadInput, SchemaError

COMPRESSION = "zstd"
# mkstemp creates 0600 files; a finished table is as readable as any other file a user writes.
FILE_MODE = 0o644


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def write_table(table: pa.Table, table_name: str, path: str | os.PathLike) -> Path:
    """Validate ``table`` as ``table_name`` and write it to ``path`` atomically."""
    path = Path(path)
    table = schema.validate(table, table_name, where=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression=COMPRESSION)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def read_table(path: str | os.PathLike, table_name: str | None = None) -> pa.Table:
    """Read and validate a revati Parquet file.

    Raises BadInput for a missing or unreadable file and SchemaError for a foreign file or a
    table of another kind than ``table_name``.
    """
    path = Path(path)
    if not path.exists():
        raise BadInput(path, "no such file")
    try:
        pf = pq.ParquetFile(path)
        meta = pf.schema_arrow.metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(path, f"not a readable Parquet file ({_first_line(exc)})") from None
    ident = schema.identify(meta, path)
    if table_name is not None and ident.table != table_name:
        raise SchemaError(path, f"holds table {ident.table!r}, expected {table_name!r}")
    if ident.schema_version > schema.SCHEMA_VERSION:
        raise SchemaError(
            path, f"schema version {ident.schema_version} is newer than this revati ({schema.SCHEMA_VERSION})"
        )
    try:
        table = pf.read()
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(path, f"truncated or corrupt Parquet file ({_first_line(exc)})") from None
    return schema.validate(table, ident.table, where=path)


def identify_file(path: str | os.PathLike) -> schema.FileIdentity:
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(path, f"not a readable Parquet file ({_first_line(exc)})") from None
    return schema.identify(meta, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
