"""The ``op_samples`` table as a DuckDB view over every Parquet file that holds it.

Looks in the embedded ``traces/`` folder, in ``$REVATI_HOME/traces`` and in any extra folders
given, keeps the files whose revati metadata says they hold ``op_samples`` (trace folders hold
other tables too), and reads them with ``union_by_name`` so older files with fewer columns
still load.

Example::

    from revati.replay import samples
    con = samples.connect()                      # DuckDB connection with view op_samples
    con.sql("SELECT gpu, op, count(*) FROM op_samples GROUP BY ALL").show()
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import duckdb

from revati import parquet_io, paths
from revati.errors import BadInput, SchemaError

TABLE = "op_samples"


def default_dirs() -> list[Path]:
    return [paths.embedded_traces_dir(), paths.user_traces_dir()]


def op_sample_files(dirs: Iterable[os.PathLike | str]) -> list[Path]:
    """Every readable Parquet file under ``dirs`` whose metadata says it holds op_samples."""
    found: list[Path] = []
    seen: set[Path] = set()
    for d in dirs:
        d = Path(d)
        candidates = [d] if d.is_file() else sorted(d.rglob("*.parquet")) if d.is_dir() else []
        for f in candidates:
            real = f.resolve()
            # dot-files and dot-folders are staging areas of imports in progress
            hidden = any(part.startswith(".") for part in (f.relative_to(d).parts if d.is_dir() else (f.name,)))
            if real in seen or hidden:
                continue
            seen.add(real)
            try:
                ident = parquet_io.identify_file(f)
            except (BadInput, SchemaError):
                continue  # foreign or half-written files are not ours to read
            if ident.table == TABLE:
                found.append(f)
    return found


def connect(extra_dirs: Sequence[os.PathLike | str] = (), include_default: bool = True,
            con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view ``op_samples`` (empty when no file holds any)."""
    con = con or duckdb.connect()
    dirs = (default_dirs() if include_default else []) + [Path(d) for d in extra_dirs]
    files = op_sample_files(dirs)
    if files:
        listing = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE OR REPLACE VIEW {TABLE} AS "
                    f"SELECT * FROM read_parquet([{listing}], union_by_name = true)")
    else:
        from revati import schema

        con.register("_empty_op_samples", schema.empty(TABLE))
        con.execute(f"CREATE OR REPLACE VIEW {TABLE} AS SELECT * FROM _empty_op_samples")
    return con
