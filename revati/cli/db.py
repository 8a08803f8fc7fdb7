"""``revati db``: the kernel database (DuckDB views over every trace and import).

Logic lives in ``revati.replay.db`` and ``revati.replay.importers``; this module parses options,
draws progress and tables with rich, and turns typed errors into one-line messages (through
the top-level group).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from revati.errors import BadInput


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


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
    from revati.replay.importers import aiconfigurator, common, vidur

    if source == "aiconfigurator" and software:
        raise BadInput("--software", "only for vidur (AIConfigurator tables name their own versions)")
    if source == "vidur" and latest_only:
        raise BadInput("--latest-only", "only for aiconfigurator")
    dest = dest if dest is not None else rpaths.user_traces_dir() / "imports" / source
    with _progress(quiet, f"reading {source}") as progress:
        if source == "vidur":
            result = vidur.import_paths(paths, gpus=gpus or None, software=software or vidur.DEFAULT_SOFTWARE,
                                        note=note, progress=progress)
        else:
            result = aiconfigurator.import_paths(paths, gpus=gpus or None, latest_only=latest_only, note=note,
                                                 progress=progress)
    written = common.write_import(result, dest)
    if not quiet:
        _print_import_summary(result, dest, written)


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
