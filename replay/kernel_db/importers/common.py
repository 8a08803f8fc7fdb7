"""What every importer shares: the import result, op_samples/runs builders, unit checks, writing.

An importer reads a source's files into memory, checks them, and returns an
:class:`ImportResult`; nothing touches the disk until :func:`write_import`, which writes the
whole result into a staging folder and swaps it with the destination in one step. A bad file
therefore never changes anything already stored (see Note [All-or-nothing imports]).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from revati import gpus, parquet_io, schema, vocab
from revati.errors import BadInput, RevatiError
from revati.replay import roofline

MS_TO_NS = 1e6

# (done, total, label): called once per source file so the CLI can draw a progress bar.
ProgressFn = Callable[[int, int, str], None]

# Roofline estimate / measured time, median over a file: see check_units.
ROOFLINE_RATIO_RANGE = (1e-2, 10.0)
# No single op or collective in these sources takes more than 100 s.
MAX_PLAUSIBLE_MS = 1e5
# A row may not run faster than this multiple of the GPU's dense peak (FLOP/s): the margin
# covers clocks above base and rounding of tiny times, not a unit error (x1000).
PEAK_MARGIN = 1.5


def ms_to_ns(values_ms: np.ndarray) -> np.ndarray:
    # Rounded to 1/1000 ns so that 0.9825 ms reads 982500.0, not 982499.9999999999.
    return np.round(np.asarray(values_ms, dtype=np.float64) * MS_TO_NS, 3)


@dataclass
class FileReport:
    """What one source file became."""

    origin_file: str
    run_id: str
    rows_read: int
    samples: int
    skipped: Counter = field(default_factory=Counter)   # reason -> rows not imported
    note: str = ""


@dataclass
class ImportResult:
    source: str
    op_samples: pa.Table
    runs: pa.Table
    reports: list[FileReport]
    license_files: list[Path] = field(default_factory=list)

    def counts(self) -> dict[tuple[str, str], int]:
        """Rows per (gpu, op family)."""
        if self.op_samples.num_rows == 0:
            return {}
        grouped = self.op_samples.group_by(["gpu", "op"]).aggregate([("op", "count")])
        return {(g, o): n for g, o, n in zip(*(grouped.column(c).to_pylist()
                                                 for c in ("gpu", "op", "op_count")))}


def samples_table(n: int, columns: Mapping[str, Any]) -> pa.Table:
    """``n`` op_samples rows; each column is a scalar (repeated) or a sequence of length n."""
    arrays = {}
    for name, value in columns.items():
        typ = schema.OP_SAMPLES.field(name).type
        if isinstance(value, (pa.Array, pa.ChunkedArray)):
            arr = value.cast(typ)
        elif isinstance(value, (np.ndarray, list, tuple)):
            arr = pa.array(value, type=typ, from_pandas=True)   # NaN -> null
        else:
            arr = pa.nulls(n, typ) if value is None else pa.repeat(pa.scalar(value, typ), n)
        if len(arr) != n:
            raise ValueError(f"column {name}: {len(arr)} values for {n} rows")
        arrays[name] = arr
    return schema.validate(pa.table(arrays), "op_samples")


def concat_samples(tables: Iterable[pa.Table]) -> pa.Table:
    tables = list(tables)
    if not tables:
        return schema.empty("op_samples")
    return pa.concat_tables(tables).combine_chunks()


def runs_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    if not rows:
        return schema.empty("runs")
    names = schema.RUNS.names
    cols = {name: [row.get(name) for row in rows] for name in names if any(name in r for r in rows)}
    arrays = {name: pa.array(vals, type=schema.RUNS.field(name).type) for name, vals in cols.items()}
    return schema.validate(pa.table(arrays), "runs")


def resolve_gpu(name: str, where: object) -> str:
    try:
        return gpus.resolve_key(name)
    except RevatiError as exc:
        raise BadInput(where, f"cannot tell the GPU: {exc}") from None


# -- unit and sanity checks -------------------------------------------------------------------

def row_label(row: int, line_offset: int | None) -> str:
    """``row 5`` (0-based data row, as in ``origin_row``), plus the 1-based line for text files."""
    return f"row {row}" if line_offset is None else f"row {row} (line {row + line_offset})"


def check_stats_ms(stats: Mapping[str, np.ndarray], path: object, rows: np.ndarray,
                   what: str, line_offset: int | None = None) -> None:
    """Row checks of one op's statistics in ms: finite, non-negative, min <= median/mean <= max.

    ``rows`` holds the source row index of each value, so the error can name the row.
    """
    def at(i) -> str:
        return row_label(int(rows[i]), line_offset)

    for stat, values in stats.items():
        bad = ~np.isfinite(values)
        if bad.any():
            raise BadInput(path, f"{at(bad.argmax())}: {what} {stat} is missing or not a number")
        neg = values < 0
        if neg.any():
            raise BadInput(path, f"{at(neg.argmax())}: {what} {stat} is negative "
                                 f"({values[neg.argmax()]!r})")
        huge = values > MAX_PLAUSIBLE_MS
        if huge.any():
            i = huge.argmax()
            raise BadInput(path, f"{at(i)}: {what} {stat} = {values[i]:g} ms is not a "
                                 f"plausible time in ms (more than {MAX_PLAUSIBLE_MS:g}); wrong unit?")
    lo, hi = stats.get("min"), stats.get("max")
    if lo is not None and hi is not None:
        tol = 1e-9 + 1e-6 * np.abs(hi)
        for stat in ("median", "mean"):
            mid = stats.get(stat)
            if mid is None:
                continue
            bad = (mid < lo - tol) | (mid > hi + tol)
            if bad.any():
                i = bad.argmax()
                raise BadInput(path, f"{at(i)}: {what} {stat} {mid[i]:g} is outside "
                                     f"[min {lo[i]:g}, max {hi[i]:g}]")


def check_units(samples: pa.Table, path: object, max_rows: int = 400) -> None:
    """File check: the times must be ms, judged against the GPU's roofline.

    For up to ``max_rows`` evenly spread rows, take roofline estimate / measured time
    (``revati.replay.roofline``, kernel floor included). On the public sources the per-file
    median of that ratio lies between 0.09 and 1.7; a file in s, us or ns read as ms moves it
    by a factor of 1000 or more, far outside ROOFLINE_RATIO_RANGE.
    """
    n = samples.num_rows
    if n == 0:
        return
    idx = np.unique(np.linspace(0, n - 1, min(n, max_rows)).astype(np.int64))
    ratios = []
    for row in samples.take(pa.array(idx)).to_pylist():
        params = {p: row[p] for p in vocab.family(row["op"]).params}
        measured = row["duration_median_ns"] if row["duration_median_ns"] is not None else row["duration_mean_ns"]
        if any(v is None for v in params.values()) or not measured or measured <= 0:
            continue
        est = roofline.roofline_ns(gpus.get(row["gpu"]), row["op"], params, row["dtype"] or "bf16")
        if est > 0:
            ratios.append(est / measured)
    if not ratios:
        return
    ratio = float(np.median(ratios))
    lo, hi = ROOFLINE_RATIO_RANGE
    if not lo <= ratio <= hi:
        guess = "us or ns" if ratio < lo else "s"
        raise BadInput(path, f"times are not in ms: a typical row takes {1 / ratio:.3g}x the roofline estimate "
                             f"for its GPU (expected {1 / hi:g}x..{1 / lo:g}x); looks like {guess}")


def check_peak(op: str, params: Mapping[str, np.ndarray], dtype: str, gpu: str,
               duration_ns: np.ndarray, path: object, rows: np.ndarray,
               line_offset: int | None = None) -> None:
    """No row may beat the GPU's dense peak FLOP/s by more than PEAK_MARGIN (a unit error would)."""
    if op != "gemm" and op not in vocab.ATTENTION:
        return
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    if op == "gemm":
        flop = 2.0 * p["m"] * p["n"] * p["k"]
    else:
        q, kv = np.minimum(p["q_tokens"], p["kv_len"]), p["kv_len"]
        flop = 4.0 * p["batch_size"] * p["num_heads"] * p["head_dim"] * (q * kv - q * (q - 1) / 2.0)
    peak = gpus.get(gpu).flops_for(dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = flop / (duration_ns * 1e-9)
    bad = np.isfinite(rate) & (rate > PEAK_MARGIN * peak)
    if bad.any():
        i = int(np.argmax(np.where(bad, rate, 0)))
        raise BadInput(path, f"{row_label(int(rows[i]), line_offset)}: {op} takes {duration_ns[i] / 1e6:g} ms, which is "
                             f"{rate[i] / 1e12:.0f} TFLOP/s, above {PEAK_MARGIN}x the {gpu} {dtype} peak "
                             f"({peak / 1e12:.0f} TFLOP/s); times not in ms?")


# -- writing ----------------------------------------------------------------------------------

# Note [All-or-nothing imports]
# An import replaces its destination folder as a whole. Everything is parsed and checked in
# memory first (bad input raises before any write); then the new folder is written next to the
# destination under a hidden name, which the kernel database ignores, and exchanged with the
# destination in one rename (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames). Files
# that are not tables (README, notes) are carried over from the old folder.

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False if the platform cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def table_files(result: ImportResult) -> dict[str, pa.Table]:
    """File name -> table: ``runs.parquet`` and one ``op_samples-<gpu>-<kind>.parquet`` per group.

    Splitting by GPU and op kind keeps each file small and lets a user drop one GPU's file.
    """
    files = {"runs.parquet": result.runs}
    samples = result.op_samples
    if samples.num_rows == 0:
        return files
    kind_of = {name: fam.kind for name, fam in vocab.FAMILIES.items()}
    kinds = pa.array([kind_of.get(op, "other") for op in samples.column("op").to_pylist()])
    for gpu in sorted(set(samples.column("gpu").to_pylist())):
        for kind in sorted(set(kinds.to_pylist())):
            mask = pc.and_(pc.equal(samples.column("gpu"), gpu), pc.equal(kinds, kind))
            part = samples.filter(mask)
            if part.num_rows:
                files[f"op_samples-{gpu}-{kind}.parquet"] = part
    return files


def check_destination(dest: Path, source: str) -> None:
    """Refuse to replace a folder that is not an earlier import of the same source."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise BadInput(dest, "destination exists and is not a folder")
    subdirs = [p.name for p in dest.iterdir() if p.is_dir()]
    if subdirs:
        raise BadInput(dest, f"refusing to replace a folder with subfolders ({', '.join(sorted(subdirs)[:3])}); "
                             f"an import destination holds one import")
    runs = dest / "runs.parquet"
    tables = list(dest.glob("*.parquet"))
    if not tables:
        return
    if not runs.exists():
        raise BadInput(dest, "refusing to replace a folder of Parquet files that is not a revati import")
    sources = set(parquet_io.read_table(runs, "runs").column("source").to_pylist())
    if sources - {source}:
        raise BadInput(dest, f"refusing to replace an import of {', '.join(sorted(map(str, sources)))} "
                             f"with {source}")


def write_import(result: ImportResult, dest: str | os.PathLike) -> list[Path]:
    """Write ``result`` into ``dest`` all-or-nothing; return the files written."""
    dest = Path(dest).absolute()
    check_destination(dest, result.source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        os.chmod(staging, 0o755)   # mkdtemp makes it 0700; it becomes the import folder
        if dest.is_dir():
            for old in dest.iterdir():
                if old.is_file() and old.suffix != ".parquet":
                    shutil.copy2(old, staging / old.name)
        for lic in result.license_files:
            shutil.copyfile(lic, staging / lic.name)
        written = []
        for name, table in table_files(result).items():
            table_name = "runs" if name == "runs.parquet" else "op_samples"
            parquet_io.write_table(table, table_name, staging / name)
            written.append(dest / name)
        _swap_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def _swap_into_place(staging: Path, dest: Path) -> None:
    if not dest.exists():
        os.rename(staging, dest)
        return
    if _exchange(staging, dest):
        shutil.rmtree(staging, ignore_errors=True)   # now holds the old import
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    os.rmdir(old)
    os.rename(dest, old)
    os.rename(staging, dest)
    shutil.rmtree(old, ignore_errors=True)


def read_parquet_source(path: Path) -> pa.Table:
    """A source's Parquet file, or BadInput naming it (missing, truncated, not Parquet)."""
    if not path.exists():
        raise BadInput(path, "no such file")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise BadInput(path, f"truncated or not a Parquet file ({text[0] if text else type(exc).__name__})") from None


def parquet_num_rows(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).strip().splitlines()
        raise BadInput(path, f"truncated or not a Parquet file ({text[0] if text else type(exc).__name__})") from None
