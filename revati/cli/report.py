"""``revati report SWEEP_RESULTS.parquet -o DIR``: PNG plots and a self-contained HTML report.

\b
Example:
  revati report ~/.local/share/revati/traces/sweeps/demo/sweep_results.parquet -o report/
"""

from __future__ import annotations

import click


@click.command()
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Folder for the report.")
@click.option("--title", default=None, help="Report title.")
def report(results, output_dir, title) -> None:
    """Latency-vs-rate curves and a Pareto front from a sweep's results table.

    \b
    Examples:
      revati report out/sweep/sweep_results.parquet -o out/report
      revati report sweep_results.parquet -o docs/report --title "Llama-2-7B on H100 vs A100"
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException("revati report needs matplotlib: pip install 'revati[plot]'") from None
    from revati.report.html import write_report

    paths = write_report(results, output_dir, title=title)
    for path in paths.values():
        click.echo(str(path))
