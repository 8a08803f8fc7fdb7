"""``revati trace``: run a command with the tracer in every Python process; write a run folder.

\b
Usage:
  revati trace [--backend kineto|cupti|bpf] [-o RUN_DIR] [--warmup-steps N] [--quiet] -- CMD...

\b
Examples:
  revati trace -- python bench.py                        # kineto, into $REVATI_HOME/traces/<run_id>
  revati trace -o traces/gemm-h100 --warmup-steps 3 -- python gemm.py
  sudo revati trace --backend kineto,bpf -- python serve.py   # plus launch-side uprobes
  revati trace --backend bpf --print-probes              # show the generated BPF program

The command's exit status is passed through. See revati/run_folder.py for the folder layout.
"""

from __future__ import annotations

import sys

import click

from revati.tracer.config import BACKENDS, DEFAULT_BACKEND, HELP, TraceConfig


def _split_backends(values: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or (DEFAULT_BACKEND,):
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return tuple(out)


@click.command("trace", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--backend", "-b", "backends", multiple=True, metavar="NAME[,NAME]",
              help=f"{HELP['backends']}. One of {', '.join(BACKENDS)}; default {DEFAULT_BACKEND}.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), default=None, help=HELP["out_dir"])
@click.option("--run-id", default=None, help="id stored in every row (default: time-host-random)")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=0, show_default=True, help=HELP["warmup_steps"])
@click.option("--quiet", "-q", is_flag=True, help=HELP["quiet"])
@click.option("--keep-raw", is_flag=True, help=HELP["keep_raw"])
@click.option("--bpf-lib", "bpf_libs", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="a CUDA runtime/driver library to probe besides those found automatically (bpf)")
@click.option("--print-probes", is_flag=True, help="print the generated BPF program and the attach plan, then exit")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def trace(backends, out_dir, run_id, warmup_steps, quiet, keep_raw, bpf_libs, print_probes, command):
    """Run CMD with the tracer injected and record its kernels, ops and API calls.

    Put the command after `--`. Without a GPU only host-side ops are recorded, and the run
    says so. The command's exit status becomes revati's.

    \b
    Examples:
      revati trace -o traces/my-run --warmup-steps 1 -- python bench.py
      revati trace --backend kineto,bpf -o traces/bpf-run -- python -m vllm.entrypoints.cli.main bench latency
    """
    from rich.console import Console

    from revati.tracer import run as tracer_run

    err = Console(stderr=True, highlight=False)
    names = _split_backends(backends)
    command = list(command)
    if print_probes:
        _print_probes(names, command, bpf_libs)
        return
    run_id = run_id or tracer_run.new_run_id()
    try:
        config = TraceConfig(run_id=run_id, out_dir=str(tracer_run.resolve_run_dir(out_dir, run_id)),
                             backends=names, warmup_steps=warmup_steps, quiet=quiet, keep_raw=keep_raw,
                             bpf_libs=tuple(bpf_libs))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--backend" if "backend" in str(exc) else None) from None

    log = (lambda m: None) if quiet else (lambda m: err.print(f"[dim]revati trace:[/] {m}"))
    result = tracer_run.run_trace(config, command, log=log)

    if not result.device_timing:
        # always said, --quiet or not: a trace without device timing cannot fit duration models
        click.echo(f"revati trace: {tracer_run.NO_DEVICE_TIMING}; host-side ops only ({result.run_dir})", err=True)
    if not quiet:
        _summary(err, result)
    if result.exit_code != 0:
        click.echo(f"revati trace: the command exited with status {result.exit_code} "
                   "(tables of what ran are written)", err=True)
    sys.exit(result.exit_code if result.exit_code >= 0 else 128 - result.exit_code)


def _summary(console, result) -> None:
    from rich.table import Table

    console.print(f"run {result.run_id}")
    table = Table(show_header=True, header_style="bold")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in result.rows.items():
        table.add_row(name, str(count))
    if result.op_samples:
        table.add_row("op_samples", str(result.op_samples))
    console.print(table)
    console.print(f"folder: {result.run_dir}  ({result.processes} traced process(es), {result.duration_s:.1f} s)")
    for lib in result.bpf_libraries:
        console.print(f"bpf probes: {lib}")
    for note in result.notes:
        console.print(f"note: {note}")


def _print_probes(names: tuple[str, ...], command: list[str], bpf_libs) -> None:
    import os

    from revati.tracer import bpf_backend, bpf_probes, cuda_libs

    if "bpf" not in names:
        raise click.UsageError("--print-probes shows the bpf backend's program: add --backend bpf")
    click.echo(bpf_probes.program())
    click.echo("// Attach plan (uprobe + uretprobe per API; symbols a library lacks are skipped):")
    for kind in bpf_probes.LIBRARY_PREFIXES:
        apis = ", ".join(a.name for a in bpf_probes.apis_for_library(kind))
        click.echo(f"//   {kind} libraries ({'/'.join(bpf_probes.LIBRARY_PREFIXES[kind])}*): {apis}")
    libs = cuda_libs.candidate_libraries(command, dict(os.environ), bpf_libs) if command or bpf_libs else []
    if libs:
        click.echo("// Libraries found for this command before it starts:")
        for lib in libs:
            click.echo(f"//   {lib}")
    elif command:
        click.echo("// No CUDA library found before start; libraries the command maps later are probed then.")
    missing = bpf_backend.missing_requirements()
    if missing:
        click.echo("// Missing to run it here: " + "; ".join(missing))
