"""Collect a sweep's runs into one ``sweep_results`` Parquet table.

The table is written atomically to ``<sweep_dir>/sweep_results.parquet``. By default the sweep
folder is ``$REVATI_HOME/traces/sweeps/<name>/``, under the user traces folder that
``revati db`` reads, so the table is visible to ``revati db query`` as ``sweep_results``
(the table name is stored in the file's metadata). DuckDB can also read it directly::

    SELECT gpu, request_rate, p99_ttft_ms, output_throughput
    FROM read_parquet('~/.local/share/revati/traces/sweeps/demo/sweep_results.parquet')
    WHERE status = 'ok' ORDER BY gpu, request_rate;

``config_json`` and ``metrics_json`` hold everything, for ``json_extract``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from revati import parquet_io, schema
from revati.errors import BadInput
from revati.metrics.result import METRICS_FILE, read_result
from revati.sweep.plan import RunSpec, num_gpus
from revati.sweep.runner import read_run_state, run_dir_of

RESULTS_FILE = "sweep_results.parquet"
_METRIC_COLUMNS = [f.name for f in schema.SWEEP_RESULTS if f.type == pa.float64()]
_INT_COLUMNS = ("completed", "failed", "total_input_tokens", "total_output_tokens", "fallback_op_count")


def _number(value) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if value == "inf":
        return float("inf")
    return None


def result_row(sweep_name: str, spec: RunSpec, run_dir: Path) -> dict:
    state = read_run_state(run_dir) or {}
    row: dict = {
        "run_id": spec.run_id,
        "sweep_name": sweep_name,
        "status": state.get("status", "not-run"),
        "config_key": spec.config_key,
        "gpu": spec.config.get("gpu"),
        "num_gpus": num_gpus(spec.config),
        "config_json": json.dumps(spec.config, sort_keys=True, default=str),
        "attempts": state.get("attempts"),
        "exit_code": state.get("exit_code"),
        "run_wall_s": state.get("wall_s"),
    }
    metrics = None
    if row["status"] == "ok" and (run_dir / METRICS_FILE).exists():
        try:
            metrics = read_result(run_dir / METRICS_FILE)
        except BadInput:
            row["status"] = "failed"
    if metrics is None:
        row["request_rate"] = spec.request_rate
        if row["status"] == "ok":
            row["status"] = "failed"
        return row
    row["model"] = metrics.get("model") or metrics.get("model_id")
    row["gpu"] = row["gpu"] or metrics.get("gpu")
    for col in _METRIC_COLUMNS:
        key = "duration" if col == "duration_s" else col
        if key in metrics:
            row[col] = _number(metrics[key])
    if row.get("request_rate") is None:
        row["request_rate"] = spec.request_rate
    for col in _INT_COLUMNS:
        v = metrics.get(col)
        row[col] = int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    row["metrics_json"] = json.dumps(metrics, sort_keys=True, default=str)
    return row


def collect(sweep_name: str, specs: list[RunSpec], sweep_dir: Path) -> pa.Table:
    rows = [result_row(sweep_name, s, run_dir_of(sweep_dir, s.run_id)) for s in specs]
    names = schema.SWEEP_RESULTS.names
    columns = {n: [r.get(n) for r in rows] for n in names}
    table = pa.table({n: pa.array(columns[n], type=schema.SWEEP_RESULTS.field(n).type) for n in names})
    return table


def write_results(sweep_name: str, specs: list[RunSpec], sweep_dir: Path) -> Path:
    table = collect(sweep_name, specs, sweep_dir)
    return parquet_io.write_table(table, "sweep_results", Path(sweep_dir) / RESULTS_FILE)
