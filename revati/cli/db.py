"""``revati db``: the kernel database (DuckDB views over every trace and import).

Logic lives in ``revati.replay.kernel_db.db`` and ``revati.replay.kernel_db.importers``; this module parses options,
draws progress and tables with rich, and turns typed errors into one-line messages (through
the top-level group).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from revati.errors import BadInput


def _console(stderr: bool = False):
    from revati.console import console

    return console(stderr=stderr, highlight=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def db() -> None:
    """Kernel database: import measurements, query traces with SQL.

    The database is a DuckDB file under REVATI_HOME holding views (not copies) over every
    revati table: the traces shipped with revati plus $REVATI_HOME/traces (runs recorded with
    `revati trace`, measurements imported with `revati db import`). New files are seen by the
    next command without a rebuild.

    \b
    Examples:
      revati db info
      revati db kernels --gpu h100 --op gemm
      revati db query "SELECT op, count(*) FROM op_samples GROUP BY op"
    """


@db.command("import")
@click.argument("source", type=click.Choice(["vidur", "aiconfigurator"]))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--to", "dest", type=click.Path(path_type=Path), default=None,
              help="Output folder (replaced as a whole). Default: $REVATI_HOME/traces/imports/<source>.")
@click.option("--gpu", "gpus", multiple=True, metavar="GPU",
              help="Import only this GPU (repeatable), e.g. --gpu h100 --gpu a100.")
@click.option("--latest-only", is_flag=True,
              help="aiconfigurator: keep only the newest version of each table per GPU.")
@click.option("--software", default=None,
              help="vidur: the stack recorded in op_samples.software "
                   "(default 'sarathi-serve (vidur)'; e.g. 'sarathi-serve (vidur@7d475133)').")
@click.option("--note", default=None, help="Free text stored in runs.notes of every imported file "
                                           "(e.g. the source repo@commit).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no summary.")
def import_(source: str, paths: tuple[Path, ...], dest: Path | None, gpus: tuple[str, ...], latest_only: bool,
            software: str | None, note: str | None, quiet: bool) -> None:
    """Convert public GPU measurements into revati's op_samples table.

    SOURCE is `vidur` (microsoft/vidur profiling CSVs: compute/<gpu>/<org>/<model>/mlp.csv,
    network/<gpu>_<topology>/*.csv, attention/*.csv) or `aiconfigurator`
    (ai-dynamo/aiconfigurator tables: <system>/<family>/<framework>/<version>/*.parquet).
    PATHS are folders (searched) or single files. Every file is read and checked before
    anything is written; the output folder is then replaced in one step, so a bad file
    leaves what is stored unchanged.

    \b
    Examples:
      revati db import vidur /data/vidur --gpu h100 --gpu a100
      revati db import aiconfigurator /data/aiconfigurator --latest-only
      revati db import vidur /data/vidur/compute --to traces/imports/vidur
    """
    from revati import paths as rpaths
    from revati.replay.kernel_db.importers import aiconfigurator, common, vidur

    if source == "aiconfigurator" and software:
        raise BadInput("--software", "only for vidur (AIConfigurator tables name their own versions)")
    if source == "vidur" and latest_only:
        raise BadInput("--latest-only", "only for aiconfigurator")
    dest = dest if dest is not None else rpaths.user_traces_dir() / "imports" / source
    _check_import_destination(dest)
    with _progress(quiet, f"reading {source}") as progress:
        if source == "vidur":
            result = vidur.import_paths(paths, gpus=gpus or None, software=software or vidur.DEFAULT_SOFTWARE,
                                        note=note, progress=progress)
        else:
            result = aiconfigurator.import_paths(paths, gpus=gpus or None, latest_only=latest_only, note=note,
                                                 progress=progress)
    try:
        written = common.write_import(result, dest)
    except OSError as exc:   # what _check_import_destination could not foresee (a full disk, a race)
        raise BadInput(dest, f"cannot write the import ({exc.strerror or exc})") from None
    if not quiet:
        _print_import_summary(result, dest, written)


def _check_import_destination(dest: Path) -> None:
    """The folder --to names must be creatable: its nearest existing ancestor a writable folder."""
    dest = dest.absolute()
    if dest.exists():
        return   # replacing it is common.check_destination's call
    for parent in dest.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BadInput(dest, f"cannot create it: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise BadInput(dest, f"cannot create it: {parent} is not writable")
            return


class _progress:
    """A rich progress bar fed by the importers' (done, total, label) callback; silent if quiet."""

    def __init__(self, quiet: bool, title: str):
        self.quiet = quiet or not sys.stderr.isatty()
        self.title = title
        self._bar = None
        self._task = None

    def __enter__(self):
        if self.quiet:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[label]}"), console=_console(stderr=True), transient=True)
        self._bar.__enter__()
        self._task = self._bar.add_task(self.title, total=None, label="")
        return self._update

    def _update(self, done: int, total: int, label: str) -> None:
        self._bar.update(self._task, completed=done, total=total, label=label)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False


def _print_import_summary(result, dest: Path, written: list[Path]) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"{result.source}: {result.op_samples.num_rows} op_samples rows")
    table.add_column("gpu")
    table.add_column("op")
    table.add_column("rows", justify="right")
    for (gpu, op), n in sorted(result.counts().items()):
        table.add_row(gpu, op, str(n))
    console.print(table)
    skipped: dict[str, int] = {}
    for rep in result.reports:
        for reason, n in rep.skipped.items():
            if n:
                skipped[reason] = skipped.get(reason, 0) + n
    for reason, n in sorted(skipped.items()):
        console.print(f"skipped {n} rows: {reason}")
    reuse = sum(1 for rep in result.reports if rep.note.startswith("reuse:"))
    if reuse:
        console.print(f"recorded {reuse} reused tables (runs rows, no copies)")
    console.print(f"wrote {len(written)} tables and {len(result.license_files)} licence file(s) to {dest}")


def _open_db():
    from revati.replay.kernel_db.db import KernelDB

    return KernelDB.open()


def _print_table(table, title: str | None = None) -> None:
    import pyarrow as pa
    from rich.table import Table

    from revati.replay.kernel_db import db_output

    out = Table(title=title, show_lines=False)
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_decimal(field.type)
        out.add_column(field.name, justify="right" if numeric else "left", overflow="fold")
    for row in table.to_pylist():
        out.add_row(*(("[dim]NULL[/dim]" if v is None else _escape(db_output.cell_text(v))) for v in row.values()))
    console = _console()
    console.print(out)
    console.print(f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}", style="dim")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@db.command("query")
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="Output format; parquet needs -o.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result to this file (atomically) instead of stdout; with the table "
                   "format the file gets CSV (JSON if it ends in .json). Its folder must exist and "
                   "lie outside revati's stores (REVATI_HOME, the shipped traces and models).")
def query(sql: str, fmt: str, output: Path | None) -> None:
    """Run SQL over the kernel database.

    Every revati table is a view: op_samples (imported measurements), runs, kernels,
    launches, ops, op_kernels, memory_ops, collectives, syncs. Column names and units are those
    of revati/schema.py (times in ns). Queries only read: COPY, CREATE, INSERT, ATTACH, INSTALL,
    SET and the like are refused; the one way to write a result is -o FILE.

    \b
    Examples:
      revati db query "SELECT gpu, op, count(*) AS n FROM op_samples GROUP BY ALL ORDER BY n DESC"
      revati db query "SELECT m, n, k, duration_mean_ns FROM op_samples
                       WHERE gpu = 'h100_sxm' AND op = 'gemm' AND software = 'vllm 0.24.0'" --format csv
      revati db query "SELECT * FROM op_samples WHERE op = 'all_reduce'" --format parquet -o ar.parquet
    """
    from revati import parquet_io
    from revati.replay.kernel_db import db_output

    if fmt == "parquet" and output is None:
        raise click.UsageError("--format parquet writes binary data: give -o FILE")
    if output is not None:
        db_output.check_output_path(output)   # before the query: nothing runs for a result it cannot keep
    with _open_db() as kdb:
        result = kdb.query(sql)
    if output is not None:
        if fmt == "table":
            fmt = "json" if output.suffix.lower() == ".json" else "csv"
        data = db_output.encode(result, fmt)
        try:
            parquet_io.atomic_write_bytes(output, data)
        except OSError as exc:
            raise BadInput(output, f"cannot write it ({exc.strerror or exc})") from None
        return
    if fmt == "table":
        _print_table(result)
    else:
        click.echo(db_output.encode(result, fmt).decode(), nl=False)


@db.command("kernels")
@click.option("--gpu", default=None, help="GPU name or key, e.g. h100, a100, h100_sxm.")
@click.option("--op", default=None, help="Op family (gemm, attn_decode, all_reduce, ...); for traced kernels, "
                                         "a substring of the kernel name.")
@click.option("--source", default=None, help="vidur, aiconfigurator, or a trace backend (kineto, cupti, bpf).")
@click.option("--limit", default=20, show_default=True, type=int, help="How many rows to show.")
def kernels(gpu: str | None, op: str | None, source: str | None, limit: int) -> None:
    """Top ops and kernels by total time.

    Imported measurements (op_samples) are grouped by source, GPU, op family and kernel (or,
    for Vidur, the model sub-op); kernels of traced runs by name. total_ms sums the median
    (else mean) duration of every row; share_pct is the share of the filtered total.

    \b
    Examples:
      revati db kernels --gpu h100
      revati db kernels --gpu a100 --op gemm --source vidur --limit 5
    """
    with _open_db() as kdb:
        result = kdb.top_kernels(gpu=gpu, op=op, source=source, limit=limit)
        filters = ", ".join(f"{k}={v}" for k, v in (("gpu", gpu), ("op", op), ("source", source)) if v)
        if result.num_rows == 0:
            have = [r["gpu"] for r in kdb.query(
                "SELECT DISTINCT gpu FROM op_samples WHERE gpu IS NOT NULL ORDER BY gpu").to_pylist()]
            raise BadInput(filters or "db kernels", "no ops or kernels recorded for that; GPUs with data: "
                           f"{', '.join(have) or 'none'} (revati db info lists sources and runs)")
    _print_table(result, title=f"top ops/kernels by total time{f' ({filters})' if filters else ''}")


@db.command("info")
def info() -> None:
    """What the kernel database holds: runs, GPUs, sources, versions, row counts.

    \b
    Example:
      revati db info
    """
    from rich.table import Table

    with _open_db() as kdb:
        summary = kdb.info()
    console = _console()
    where = f"{summary.path}" + (" (in memory: the file is locked by another process)" if summary.in_memory else "")
    console.print(f"database: {where}")
    for root in summary.roots:
        console.print(f"traces:   {root}")
    counts = Table(title="tables")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    counts.add_column("files", justify="right")
    for name, n in summary.rows.items():
        counts.add_row(name, str(n), str(summary.files[name]))
    console.print(counts)
    runs = Table(title="runs by source")
    for col in ("source", "runs", "gpus"):
        runs.add_column(col, justify="right" if col != "source" else "left")
    for row in summary.runs_by_source:
        runs.add_row(str(row["source"]), str(row["runs"]), str(row["gpus"]))
    console.print(runs)
    gpu_table = Table(title="GPUs")
    for col in ("gpu", "runs", "samples", "kernels"):
        gpu_table.add_column(col, justify="right" if col != "gpu" else "left")
    for row in summary.gpus:
        gpu_table.add_row(str(row["gpu"]), str(row["runs"]), str(row["samples"]), str(row["kernels"]))
    console.print(gpu_table)
    sw = Table(title="software")
    for col in ("source", "software", "samples"):
        sw.add_column(col, justify="right" if col == "samples" else "left")
    for row in summary.software:
        sw.add_row(str(row["source"]), str(row["software"]), str(row["samples"]))
    console.print(sw)
    if summary.duplicate_runs:
        first = summary.duplicate_runs[0]
        console.print(f"warning: {len(summary.duplicate_runs)} run(s) appear in more than one file, so their rows "
                      f"count more than once (e.g. {first['run_id']} x{first['copies']}); remove one copy",
                      style="yellow")
