"""The ``op_samples`` table for fitting: the kernel database's DuckDB view (revati.replay.kernel_db.db).

Reads the embedded ``traces/`` folder (unless told not to), ``$REVATI_HOME/traces`` (always,
as ``revati db`` does) and any extra folders given; every file the view reads is validated by
the kernel database first, so a foreign or truncated file is a one-line error naming it.

Example::

    from revati.replay.kernel_db import samples
    con = samples.connect()                      # DuckDB connection with view op_samples
    con.sql("SELECT gpu, op, count(*) FROM op_samples GROUP BY ALL").show()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import duckdb

from revati import paths
from revati.errors import BadInput


def roots(extra_dirs: Sequence[os.PathLike | str] = (), include_embedded: bool = True) -> list[Path]:
    out: list[Path] = [paths.embedded_traces_dir().resolve()] if include_embedded else []
    for d in extra_dirs:
        d = Path(d)
        if not d.is_dir():
            raise BadInput(d, "not a folder of op_samples Parquet files")
        d = d.resolve()
        if d not in out:
            out.append(d)
    return out


def connect(extra_dirs: Sequence[os.PathLike | str] = (), include_embedded: bool = True) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose view ``op_samples`` reads the given trace roots."""
    from revati.replay.kernel_db.db import KernelDB

    return KernelDB.open(roots=roots(extra_dirs, include_embedded)).con
