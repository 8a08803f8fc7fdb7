"""``revati sweep SWEEP.yaml``: run every configuration of a grid, collect one results table.

\b
Examples:
  revati sweep sweep.yaml                   # in parallel here, one run per core
  revati sweep sweep.yaml --jobs 4 --retry-failed
  revati sweep sweep.yaml --ray             # a private local Ray instance
  revati sweep sweep.yaml --ray auto        # the Ray cluster this machine belongs to
  revati sweep sweep.yaml --dry-run         # list the runs and their commands
The sweep file format is documented in revati/sweep/config.py.
"""

from __future__ import annotations

import shlex

import click


@click.command()
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Runs at once (default: the sweep file's jobs, else the number of cores).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              help="Run each configuration as a Ray task; ADDRESS as for ray.init (default: a local instance).")
@click.option("--retry-failed", is_flag=True, help="Run again the runs that failed before.")
@click.option("--output-dir", default=None, type=click.Path(file_okay=False),
              help="Sweep folder (default: $REVATI_HOME/traces/sweeps/<name>).")
@click.option("--dry-run", is_flag=True, help="Print the runs and their commands; run nothing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars and no tables.")
def sweep(sweep_file, jobs, ray_address, retry_failed, output_dir, dry_run, quiet) -> None:
    """Run the Cartesian product of engine x workload parameters (x GPUs) in SWEEP_FILE.

    \b
    Examples:
      revati sweep docs/sample_report/sweep.yaml --dry-run
      revati sweep my_sweep.yaml --jobs 2 --output-dir out/sweep
      revati sweep my_sweep.yaml --ray auto --retry-failed
    """
    from dataclasses import replace

    from revati.errors import BadInput
    from revati.sweep.config import load_sweep
    from revati.sweep.flags import check_sweep
    from revati.sweep.plan import PORT_MARK, TemplateError, expand
    from revati.sweep.run import run_sweep

    cfg = load_sweep(sweep_file)
    if output_dir:
        cfg = replace(cfg, output_dir=output_dir)
    try:
        runs = expand(cfg)
    except TemplateError as exc:
        raise BadInput(sweep_file, str(exc)) from None
    check_sweep(cfg, where=sweep_file)
    if dry_run:
        for spec in runs:
            argv = spec.command(str(cfg.sweep_dir / "runs" / spec.run_id), port=PORT_MARK)  # chosen when it runs
            click.echo(f"{spec.run_id}  {shlex.join(argv)}")
        return
    outcome = run_sweep(cfg, jobs=jobs, ray_address=ray_address, retry_failed=retry_failed, quiet=quiet)
    if outcome.failed_ids:
        raise click.ClickException(f"{len(outcome.failed_ids)} run(s) failed; results so far in {outcome.results_path}")
