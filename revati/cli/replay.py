"""``revati replay RUN_DIR --gpu GPU``: predicted vs measured time of a traced run, per op family.

\b
Examples:
  revati replay ~/.local/share/revati/traces/20260101-120000-box-1a2b3c --gpu h100
  revati replay traces/hf-generate-h100 --json > replay.json
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("replay")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--gpu", default=None, help="GPU to predict for (default: the one the run was traced on)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON on stdout")
def replay(run_dir: Path, gpu: str | None, as_json: bool) -> None:
    """Re-time the op sequence recorded in RUN_DIR with the predictor and compare per op family.

    \b
    Examples:
      revati replay traces/my-run                 # on the GPU it was traced on
      revati replay traces/my-run --gpu a100 --json
    """
    from revati.replay.trace_replay.replay import replay_run

    report = replay_run(run_dir, gpu=gpu)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return
    _print(report)


def _ms(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def _print(report) -> None:
    from rich.table import Table

    from revati.console import console as make_console

    console = make_console(highlight=False)
    table = Table(title=f"replay of {report.run_id} on {report.gpu}", header_style="bold")
    for col, justify in (("family", "left"), ("ops", "right"), ("predicted ms", "right"),
                         ("measured ms", "right"), ("error", "right")):
        table.add_column(col, justify=justify)
    for fam in report.families:
        table.add_row(fam.family, str(fam.ops), _ms(fam.predicted_ns), _ms(fam.measured_ns), _pct(fam.error_pct))
    if report.measured_available and report.unattributed_measured_ns:
        table.add_row("(not linked to an op)", "", "-", _ms(report.unattributed_measured_ns), "")
    table.add_row("total", str(report.units), _ms(report.total_predicted_ns), _ms(report.total_measured_ns),
                  _pct(report.total_error_pct), style="bold")
    console.print(table)
    fallbacks = sum(report.roofline_fallbacks.values())
    console.print(f"{report.units} timed op(s) of {report.ops_in_trace} recorded; roofline fallbacks: {fallbacks}")
    for note in report.notes:
        console.print(f"note: {note}")
