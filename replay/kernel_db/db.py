"""The kernel database: a DuckDB file of *views* over every revati table on disk.

Where the tables are (the trace roots):

- the embedded ``traces/`` folder shipped with revati (``revati.paths.embedded_traces_dir``);
- ``$REVATI_HOME/traces`` (``revati.paths.user_traces_dir``): runs recorded by ``revati trace``
  (``<run>/<table>.parquet``) and imports (``imports/<source>/<table>-*.parquet``).

Each schema table (``revati.schema.TABLES``) is one view reading the glob
``<root>/**/<table>*.parquet`` of every root, so DuckDB re-lists the files at query time and a
file dropped into a root is seen by the next query without a rebuild. Paths with a component
starting with ``.`` below a root (staging folders of an import in progress, see
``importers.common``) are filtered out.

Note [Views that always have a file]
DuckDB refuses a glob that matches no file. Every view therefore also reads
``$REVATI_HOME/traces/_schema/<table>.parquet``, an empty file with the table's exact schema that
:func:`ensure_schema_files` (re)writes; it also fixes the column types when older files lack a
column. The embedded root is listed in a view only while it holds a file of that table; the
views are recomputed by every ``KernelDB`` open and rewritten only when they change.

Before a view is used, every file it would read is checked (:func:`validate_file`: revati
metadata, table name, schema version, columns and types) so that a foreign or truncated file is
reported as a one-line error naming it instead of a DuckDB stack trace.

Example::

    from revati.replay.kernel_db.db import KernelDB
    with KernelDB.open() as kdb:
        print(kdb.query("SELECT op, count(*) AS n FROM op_samples GROUP BY op").to_pylist())
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from revati import gpus, parquet_io, paths, schema
from revati.errors import BadInput, QueryError, ReadOnlyQuery, SchemaError

DB_FILENAME = "revati.duckdb"
SCHEMA_DIRNAME = "_schema"
META_TABLE = "_revati_meta"


def db_path(home: Path | None = None) -> Path:
    return (home or paths.revati_home()) / DB_FILENAME


# -- files -------------------------------------------------------------------------------------

def default_roots(home: Path | None = None) -> list[Path]:
    """Embedded traces first, then the user's; resolved and without duplicates."""
    user = (home / "traces") if home is not None else paths.user_traces_dir()
    roots: list[Path] = []
    for root in (paths.embedded_traces_dir(), user):
        root = root.absolute().resolve()
        if root not in roots:
            roots.append(root)
    return roots


def _hidden_below(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def table_files(root: Path, table: str) -> list[Path]:
    """The data files the view of ``table`` reads under ``root`` (its glob, minus ``_schema/``)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob(f"{table}*.parquet")
                  if p.is_file() and not _hidden_below(p, root) and p.parent != root / SCHEMA_DIRNAME)


def validate_file(path: Path, table: str) -> None:
    """Raise BadInput/SchemaError unless ``path`` is a readable revati ``table`` file."""
    try:
        pf = pq.ParquetFile(path)
        arrow = pf.schema_arrow
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise BadInput(path, f"truncated or not a Parquet file ({text[0] if text else type(exc).__name__})") from None
    ident = schema.identify(arrow.metadata, path)
    if ident.table != table:
        raise SchemaError(path, f"named like a {table!r} table but holds {ident.table!r}")
    if ident.schema_version > schema.SCHEMA_VERSION:
        raise SchemaError(path, f"schema version {ident.schema_version} is newer than this revati "
                                f"({schema.SCHEMA_VERSION})")
    expected = schema.table_schema(table)
    unknown = [n for n in arrow.names if n not in expected.names]
    if unknown:
        raise SchemaError(path, f"unknown column(s) {', '.join(unknown[:5])} for table {table!r}")
    for f in arrow:
        want = expected.field(f.name).type
        if not f.type.equals(want):
            raise SchemaError(path, f"column {f.name!r} has type {f.type}, expected {want}")
    missing = [f.name for f in expected if not f.nullable and f.name not in arrow.names]
    if missing:
        raise SchemaError(path, f"missing required column(s) {', '.join(missing)}")


def ensure_schema_files(user_root: Path) -> Path:
    """Write ``_schema/<table>.parquet`` (empty, exact schema) where missing or outdated."""
    folder = user_root / SCHEMA_DIRNAME
    for table in schema.TABLES:
        path = folder / f"{table}.parquet"
        try:
            current, want = pq.read_schema(path), schema.with_metadata(table)
            if current.equals(want) and current.metadata == want.metadata:
                continue
        except (FileNotFoundError, pa.ArrowInvalid, OSError):
            pass
        parquet_io.write_table(schema.empty(table), table, path)
    return folder


@dataclass
class Catalog:
    """What the views read: per table, the validated files of each root."""

    roots: list[Path]
    files: dict[str, dict[Path, list[Path]]] = field(default_factory=dict)   # table -> root -> files

    def count(self, table: str) -> int:
        return sum(len(v) for v in self.files.get(table, {}).values())


def build_catalog(roots: Iterable[Path], validate: bool = True) -> Catalog:
    cat = Catalog(list(roots))
    for table in schema.TABLES:
        cat.files[table] = {}
        for root in cat.roots:
            found = table_files(root, table)
            if validate:
                for path in found:
                    validate_file(path, table)
            cat.files[table][root] = found
    return cat


# -- views -------------------------------------------------------------------------------------

def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duck_type(typ: pa.DataType) -> str:
    simple = {pa.string(): "VARCHAR", pa.int8(): "TINYINT", pa.int16(): "SMALLINT", pa.int32(): "INTEGER",
              pa.int64(): "BIGINT", pa.uint64(): "UBIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
              pa.bool_(): "BOOLEAN"}
    for arrow_type, name in simple.items():
        if typ.equals(arrow_type):
            return name
    if pa.types.is_list(typ):
        return _duck_type(typ.value_type) + "[]"
    if pa.types.is_map(typ):
        return f"MAP({_duck_type(typ.key_type)}, {_duck_type(typ.item_type)})"
    raise SchemaError(typ, "no DuckDB type for this Arrow type")


def view_sql(table: str, cat: Catalog, schema_root: Path) -> str:
    """``CREATE OR REPLACE VIEW`` reading every root's glob (see Note [Views that always have a file])."""
    globs = [str(schema_root / SCHEMA_DIRNAME / f"{table}.parquet")]
    for root in cat.roots:
        if root == schema_root or cat.files[table].get(root):
            globs.append(f"{root}/**/{table}*.parquet")
    globs = list(dict.fromkeys(globs))
    cols = ", ".join(f'CAST("{f.name}" AS {_duck_type(f.type)}) AS "{f.name}"' for f in schema.table_schema(table))
    hidden = "^(" + "|".join(rf"\Q{root}\E" for root in cat.roots) + r")/(.*/)?\."
    return (f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} "
            f"FROM read_parquet([{', '.join(map(_sql_str, globs))}], union_by_name = true, filename = true) "
            f"WHERE NOT regexp_matches(filename, {_sql_str(hidden)})")


# -- the database ------------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class KernelDB:
    """An open kernel database. Use :meth:`open`; queries run on a read-only connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, catalog: Catalog, path: Path, in_memory: bool):
        self.con = con
        self.catalog = catalog
        self.path = path
        self.in_memory = in_memory   # True when the file was locked by another process

    @classmethod
    def open(cls, home: Path | None = None, roots: list[Path] | None = None) -> "KernelDB":
        home = (home or paths.revati_home()).absolute()
        home.mkdir(parents=True, exist_ok=True)
        user_root = home / "traces"
        user_root.mkdir(parents=True, exist_ok=True)
        user_root = user_root.resolve()
        ensure_schema_files(user_root)
        roots = roots if roots is not None else default_roots(home)
        if user_root not in roots:
            roots = [*roots, user_root]
        cat = build_catalog(roots)
        statements = [view_sql(t, cat, user_root) for t in schema.TABLES]
        digest = hashlib.sha256("\n".join(statements).encode()).hexdigest()
        path = db_path(home)
        con, in_memory = cls._connect(path, statements, digest)
        return cls(con, cat, path, in_memory)

    @staticmethod
    def _connect(path: Path, statements: list[str], digest: str) -> tuple[duckdb.DuckDBPyConnection, bool]:
        if path.exists():
            try:
                con = duckdb.connect(str(path), read_only=True)
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if _locked(exc):
                    return _memory_db(statements), True
                raise BadInput(path, f"not a usable DuckDB database ({_first_line(exc)}); it only holds "
                                     f"views: delete it and revati rebuilds it") from None
            except duckdb.Error as exc:
                raise BadInput(path, f"not a usable DuckDB database ({_first_line(exc)}); it only holds "
                                     f"views: delete it and revati rebuilds it") from None
            try:
                stored = con.execute(f"SELECT value FROM {META_TABLE} WHERE key = 'views'").fetchall()
            except duckdb.Error:
                stored = []
            if stored and stored[0][0] == digest:
                return con, False
            con.close()
        try:
            con = duckdb.connect(str(path))
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if _locked(exc):
                return _memory_db(statements), True
            raise BadInput(path, f"cannot open the kernel database ({_first_line(exc)})") from None
        try:
            con.execute("BEGIN TRANSACTION")
            for sql in statements:
                con.execute(sql)
            con.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
            con.execute(f"INSERT OR REPLACE INTO {META_TABLE} VALUES ('views', ?)", [digest])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.close()
            raise QueryError("\n".join(statements), f"cannot create the views: {_first_line(exc)}") from None
        con.close()
        try:
            return duckdb.connect(str(path), read_only=True), False
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if _locked(exc):   # another process took the write lock in between
                return _memory_db(statements), True
            raise BadInput(path, f"cannot open the kernel database ({_first_line(exc)})") from None

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "KernelDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def query(self, sql: str, params: dict | list | None = None) -> pa.Table:
        """Run SQL that only reads (see :func:`check_read_only`); any DuckDB error becomes a
        one-line QueryError."""
        check_read_only(sql)
        try:
            rel = self.con.sql(sql, params=params)
            return rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.Error as exc:
            raise QueryError(sql, f"SQL error: {_first_line(exc)}") from None

    # -- summaries -----------------------------------------------------------------------------

    def info(self) -> "DBInfo":
        rows = {t: self.query(f"SELECT count(*) AS n FROM {t}").column("n")[0].as_py() for t in schema.TABLES}
        runs_by_source = self.query("""
            SELECT coalesce(source, '?') AS source, count(*) AS runs,
                   count(DISTINCT gpu) AS gpus FROM runs GROUP BY ALL ORDER BY source""").to_pylist()
        gpu_rows = self.query("""
            SELECT gpu, sum(runs)::BIGINT AS runs, sum(samples)::BIGINT AS samples,
                   sum(kernels)::BIGINT AS kernels FROM (
                SELECT gpu, count(*) AS runs, 0 AS samples, 0 AS kernels FROM runs WHERE gpu IS NOT NULL GROUP BY gpu
                UNION ALL SELECT gpu, 0, count(*), 0 FROM op_samples GROUP BY gpu
                UNION ALL SELECT r.gpu, 0, 0, count(*) FROM kernels k JOIN runs r USING (run_id)
                          WHERE r.gpu IS NOT NULL GROUP BY r.gpu)
            GROUP BY gpu ORDER BY gpu""").to_pylist()
        software = self.query("""
            SELECT source, software, count(*) AS samples FROM op_samples GROUP BY ALL
            UNION ALL
            SELECT source, coalesce(software, engine || ' ' || coalesce(engine_version, '')), 0 FROM runs
            WHERE source NOT IN (SELECT DISTINCT source FROM op_samples) AND coalesce(software, engine) IS NOT NULL
            GROUP BY ALL ORDER BY 1, 2""").to_pylist()
        files = {t: self.catalog.count(t) for t in schema.TABLES}
        # The same run in two folders (e.g. an import of data revati already ships) counts twice.
        duplicates = self.query("""
            SELECT run_id, count(*) AS copies FROM runs GROUP BY run_id HAVING count(*) > 1
            ORDER BY run_id""").to_pylist()
        return DBInfo(self.path, self.in_memory, self.catalog.roots, rows, files, runs_by_source, gpu_rows, software,
                      duplicates)

    def top_kernels(self, gpu: str | None = None, op: str | None = None, source: str | None = None,
                    limit: int = 20) -> pa.Table:
        """Ops (op_samples) and kernels (traced runs) ranked by total time.

        op_samples rows count once each with their median (else mean) duration; traced kernels
        are grouped by name. ``op`` matches an op family exactly or a kernel name as a substring.
        """
        if limit <= 0:
            raise BadInput("--limit", f"must be positive, got {limit}")
        gpu_key = gpus.resolve_key(gpu) if gpu else None
        sql = """
            WITH items AS (
                SELECT source, gpu, op, coalesce(kernel_source, op) AS kernel, count(*) AS count,
                       sum(coalesce(duration_median_ns, duration_mean_ns)) AS total_ns
                FROM op_samples
                WHERE ($gpu IS NULL OR gpu = $gpu) AND ($op IS NULL OR op = $op)
                  AND ($source IS NULL OR source = $source)
                GROUP BY ALL
                UNION ALL
                SELECT coalesce(k.source, r.source, 'trace') AS source, r.gpu, 'kernel' AS op,
                       coalesce(k.short_name, k.name) AS kernel, count(*) AS count,
                       sum(k.duration_ns)::DOUBLE AS total_ns
                FROM kernels k LEFT JOIN runs r USING (run_id)
                WHERE ($gpu IS NULL OR r.gpu = $gpu)
                  AND ($op IS NULL OR k.name ILIKE '%' || $op || '%')
                  AND ($source IS NULL OR coalesce(k.source, r.source) = $source)
                GROUP BY ALL)
            SELECT source, gpu, op, kernel, count, round(total_ns / 1e6, 3) AS total_ms,
                   round(total_ns / count / 1e3, 3) AS mean_us,
                   round(100.0 * total_ns / sum(total_ns) OVER (), 2) AS share_pct
            FROM items WHERE total_ns IS NOT NULL
            ORDER BY total_ns DESC, source, gpu, op, kernel
            LIMIT $limit"""
        return self.query(sql, {"gpu": gpu_key, "op": op, "source": source, "limit": limit})


# Note [Queries only read]
# The database file is opened read-only, but DuckDB can still write *files* from a read-only
# connection (COPY ... TO, EXPORT DATABASE, ATTACH of a new database, INSTALL, a profiling_output
# SET) -- and a COPY into a trace root replaces a stored table. Turning off external access would
# also stop the views reading their Parquet files, so instead every statement is classified by
# DuckDB's own parser and only queries run: SELECT (which covers WITH, FROM-first, VALUES,
# DESCRIBE, SUMMARIZE, SHOW, TABLE) and EXPLAIN of one (EXPLAIN ANALYZE runs its statement).
# No SELECT can write: the query() table function accepts SELECT only.

_QUERY_TYPES = frozenset({duckdb.StatementType.SELECT})
_EXPLAIN_PREFIX = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+|\((?:[^()]|\([^()]*\))*\)\s*)?", re.IGNORECASE)


def check_read_only(sql: str) -> None:
    """Raise ReadOnlyQuery unless every statement of ``sql`` is a query (see Note [Queries only read])."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(sql, f"SQL error: {_first_line(exc)}") from None
    for st in statements:
        if st.type == duckdb.StatementType.EXPLAIN:
            inner = _EXPLAIN_PREFIX.sub("", st.query, count=1)
            if inner != st.query and inner.strip().rstrip(";").strip():
                check_read_only(inner)
                continue
        if st.type not in _QUERY_TYPES:
            words = st.query.split()
            raise ReadOnlyQuery(sql, words[0].upper() if words else st.type.name)


def _locked(exc: BaseException) -> bool:
    """Another process (lock) or connection of this one (other configuration) holds the file."""
    text = str(exc).lower()
    return "lock" in text or "different configuration" in text


def _memory_db(statements: list[str]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    for sql in statements:
        con.execute(sql)
    return con


@dataclass
class DBInfo:
    path: Path
    in_memory: bool
    roots: list[Path]
    rows: dict[str, int]
    files: dict[str, int]
    runs_by_source: list[dict]
    gpus: list[dict]
    software: list[dict]
    duplicate_runs: list[dict]


def traced_host_score(gpu: str | None, home: Path | None = None) -> tuple[str, float] | None:
    """(label, score) of the newest host CPU score that ``revati trace`` recorded on a box with
    ``gpu`` (``runs.host_score_s``), or None; the user's own traces before the embedded ones
    (traces/gpu). See Note [Host-speed calibration] in revati/hostcpu.py."""
    if gpu is None:
        return None
    embedded = {r["run_id"] for f in paths.embedded_traces_dir().rglob("runs.parquet")
                for r in parquet_io.read_table(f, "runs").select(["run_id"]).to_pylist()}
    try:
        with KernelDB.open(home) as kdb:
            rows = kdb.query("SELECT run_id, host, host_score_s FROM runs WHERE gpu = $gpu AND host_score_s IS NOT NULL "
                             "ORDER BY started_at_ns DESC", {"gpu": gpu}).to_pylist()
    except (QueryError, SchemaError):  # no runs table yet: nothing recorded
        return None
    if not rows:
        return None
    rows.sort(key=lambda r: r["run_id"] in embedded)  # stable: newest first within each group
    return f"traced host {rows[0]['host']}", float(rows[0]["host_score_s"])
