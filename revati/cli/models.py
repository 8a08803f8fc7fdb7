"""`revati models`: fit per-op duration models, predict with them, report their held-out error.

Usage::

    revati models fit --gpu h100 --gpu a100          # writes $REVATI_HOME/models/<gpu>/
    revati models fit --all -o models/               # every GPU with data, into the embedded folder
    revati models predict --gpu h100 ops.csv         # ops.csv + predicted_ms, predicted_by
    revati models report --gpu h100                  # held-out error, worst shapes, cross-source

Example input for ``predict`` (one op per row; leave unused parameter columns empty)::

    op,m,n,k,batch_size,q_tokens,kv_len,num_heads,num_kv_heads,head_dim,dtype
    gemm,4096,4096,4096,,,,,,,bf16
    attn_decode,,,,64,1,2048,32,8,128,bf16
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from revati import gpus


@click.group("models")
def models() -> None:
    """Per-op duration models: fit from the kernel database, predict, report held-out error.

    \b
    Examples:
      revati models fit --gpu h100 --gpu a100     # into $REVATI_HOME/models/<gpu>
      revati models predict --gpu h100 ops.csv    # adds predicted_ms, predicted_by
      revati models report --gpu h100             # held-out error, worst shapes, cross-source
    """


@models.command("fit")
@click.option("--gpu", "gpu_names", multiple=True, help="GPU to fit (repeatable), e.g. h100, a100.")
@click.option("--all", "all_gpus", is_flag=True, help="Fit every GPU that has op_samples rows.")
@click.option("--family", "families", multiple=True, help="Only these op families (repeatable).")
@click.option("--traces", "trace_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Extra folder with op_samples Parquet (repeatable).")
@click.option("--no-embedded-traces", is_flag=True,
              help="Ignore the embedded traces/ ($REVATI_HOME/traces is always read, as by revati db).")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Parent folder for <gpu>/models.parquet [default: $REVATI_HOME/models].")
@click.option("--no-cross-source", is_flag=True, help="Skip the cross-source check.")
@click.option("--min-rows", default=20, show_default=True, help="Fewest rows a model is fitted on.")
@click.option("-q", "--quiet", is_flag=True, help="No progress, only the summary line per GPU.")
def fit_cmd(gpu_names, all_gpus, families, trace_dirs, no_embedded_traces, out_dir, no_cross_source,
            min_rows, quiet) -> None:
    """Fit models per op family and dtype, choosing each form by held-out error.

    \b
    Examples:
      revati models fit --gpu h100 --gpu a100
      revati models fit --all --traces traces/my-run -o models/
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from revati import paths
    from revati.replay.model_fit import fitting, model_store
    from revati.replay.kernel_db import samples

    console = Console(stderr=True, quiet=False)
    if not gpu_names and not all_gpus:
        raise click.UsageError("give --gpu NAME (repeatable) or --all")
    keys = [gpus.resolve_key(g) for g in gpu_names]
    con = samples.connect(trace_dirs, include_embedded=not no_embedded_traces)
    if all_gpus:
        for (name,) in con.execute("SELECT DISTINCT gpu FROM op_samples WHERE gpu IS NOT NULL ORDER BY 1").fetchall():
            try:
                k = gpus.resolve_key(name)
            except Exception:  # noqa: BLE001 -- rows of GPUs outside the spec table cannot be fitted
                continue
            if k not in keys:
                keys.append(k)
    if not keys:
        raise click.ClickException("no op_samples rows for any GPU in the spec table")
    out = out_dir if out_dir is not None else paths.user_models_dir()
    for key in keys:
        cfg = fitting.FitConfig(gpu=key, families=tuple(families), trace_dirs=tuple(trace_dirs),
                                include_embedded=not no_embedded_traces, min_rows=min_rows,
                                cross_source=not no_cross_source)
        with console.status(f"fitting {key}", spinner="dots") if not quiet else _nullcontext():
            result = fitting.fit_gpu(cfg, con=con, progress=None if quiet else lambda m: console.log(escape(m)))
        if not result.models:
            console.print(f"[yellow]{key}: no models fitted[/yellow] ({'; '.join(result.notes)})")
            continue
        folder = model_store.save(result, out)
        if not quiet:
            t = Table(title=f"{key}: fitted models")
            for c in ("family", "dtype", "form", "axes", "rows", "held-out MAPE %", "p90 %"):
                t.add_column(c)
            for m in result.models:
                h = m.heldout
                t.add_row(m.family, m.dtype, m.model.form, m.axis_set, str(m.rows),
                          f"{h.mape_pct:.1f}" if h else "-", f"{h.p90_ape_pct:.1f}" if h else "-")
            console.print(t)
            for note in result.notes:
                console.print(f"[yellow]note:[/yellow] {note}")
        click.echo(f"{key}: {len(result.models)} models -> {folder}")


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@models.command("predict")
@click.option("--gpu", required=True, help="Target GPU, e.g. h100.")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Write .csv or .parquet here instead of printing.")
@click.option("--format", "fmt", type=click.Choice(["csv", "table"]), default="csv", show_default=True,
              help="How to print to stdout.")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with <gpu>/models.parquet [default: $REVATI_HOME/models, then embedded].")
@click.option("--kernel-stack", default=None,
              help="Answer from this software stack's measurements first (e.g. vllm-0.24.0, vllm, torch-2.11, "
                   "sarathi-serve) [default: your own traces, then PyTorch's, then vLLM's].")
@click.option("--detail", is_flag=True, help="Also add predicted_stack: whose measurement or model answered.")
def predict_cmd(gpu, input_path, output, fmt, models_dir, kernel_stack, detail) -> None:
    """Predict each op of INPUT (csv or parquet) on a GPU; adds predicted_ms and predicted_by.

    predicted_by says which rung answered: measured (that exact shape was measured),
    interpolated (between two measured shapes), model (the fitted model, inside its range),
    regression (the model, extrapolated) or roofline (a counted fallback).

    INPUT has one op per row: column `op` (gemm, attn_prefill, attn_decode, all_reduce, norm,
    ... as `revati db kernels` names them), the family's parameter columns (m, n, k for gemm;
    batch_size, q_tokens, kv_len, num_heads, num_kv_heads, head_dim for attention; tokens,
    hidden for norm, rope, activation, elementwise, embedding; message_bytes, world_size for
    collectives) and optionally `dtype` (default bf16). Rows may mix families.

    \b
    Examples:
      printf 'op,m,n,k,dtype\\ngemm,16,4096,4096,bf16\\n' > ops.csv
      revati models predict --gpu h100 ops.csv
      revati models predict --gpu a100 ops.parquet -o predicted.parquet
      revati models predict --gpu h100 --kernel-stack vllm --detail ops.csv
    """
    from revati.replay.prediction import predict_table
    from revati.replay.prediction.predictor import load_predictor

    predictor = load_predictor(gpu, models_dir=models_dir, measured=None if models_dir is None else False,
                               kernel_stack=kernel_stack, engine="torch")
    table = predict_table.predict_file(predictor, input_path, detail)
    if output is not None:
        _write_output(table, output)
        click.echo(f"{table.num_rows} rows -> {output} ({predictor.stats.line()})", err=True)
        return
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        t = Table()
        for c in table.column_names:
            t.add_column(c)
        for row in table.to_pylist():
            t.add_row(*["" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in row.values()])
        Console(width=max(120, 12 * len(table.column_names))).print(t)
    else:
        import pyarrow.csv as pcsv

        sink = sys.stdout.buffer
        pcsv.write_csv(table, sink)
        sink.flush()
    click.echo(predictor.stats.line(), err=True)


def _write_output(table, path: Path) -> None:
    import io

    from revati.errors import BadInput
    from revati.parquet_io import atomic_write_bytes

    suffix = path.suffix.lower()
    buf = io.BytesIO()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, buf)
    elif suffix == ".csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, buf)
    else:
        raise BadInput(path, f"unsupported output type {suffix!r} (use .csv or .parquet)")
    atomic_write_bytes(path, buf.getvalue())


@models.command("report")
@click.option("--gpu", required=True, help="GPU whose models to report, e.g. h100.")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with <gpu>/models.parquet [default: $REVATI_HOME/models, then embedded].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--worst", default=3, show_default=True, help="Worst held-out shapes shown per model.")
@click.option("--ladder", is_flag=True,
              help="Instead: the prediction ladder per software stack -- within-stack hold-outs, cross-stack "
                   "error, the shipped models and the tuned roofline on each stack's measured shapes.")
@click.option("--stack", "stack_name", default=None,
              help="With --ladder: only stacks whose name starts with this (e.g. vllm, torch-2.11, sarathi-serve).")
def report_cmd(gpu, models_dir, as_json, worst, ladder, stack_name) -> None:
    """Held-out error per family (MAPE, median, p90), worst shapes, cross-source noise floor.

    \b
    Examples:
      revati models report --gpu h100
      revati models report --gpu a100 --json --worst 10
      revati models report --gpu h100 --ladder --stack vllm
    """
    if ladder:
        _ladder_report(gpu, as_json, stack_name)
        return
    if stack_name is not None:
        raise click.UsageError("--stack goes with --ladder")
    from revati.replay.model_fit import model_report

    data = model_report.collect(gpu, models_dir)
    if as_json:
        click.echo(model_report.to_json(data))
        return
    from rich.console import Console

    model_report.render(data, Console(width=200), worst=worst)


def _ladder_report(gpu: str, as_json: bool, stack_name: str | None) -> None:
    import json

    from revati.errors import BadInput
    from revati.replay.prediction import ladder_report
    from revati.replay import stacks

    rows = ladder_report.evaluate(gpu)
    if stack_name is not None:
        known = sorted({r["stack"] for r in rows})
        rows = [r for r in rows if stacks.matches(r["stack"], stack_name)]
        if not rows:
            raise BadInput("--stack", f"no stack measured on {gpu} starts with {stack_name!r}; known: {', '.join(known)}")
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for line in ladder_report.format_rows(rows):
        click.echo(line)
