"""Timed ops from a real trace, in the common vocabulary: ``op_samples`` rows (source='trace').

Each unit of the traced op tree (replay/kernel_db/trace_ops.py) that maps to exactly one vocabulary op
and has device time becomes a sample; samples with the same (family, parameters, dtype) are
aggregated (count, min, median, mean, std, max of the summed kernel time per call). ``revati
trace`` writes them to ``RUN_DIR/op_samples.parquet`` when the run has device timing, where the
database's ``**/op_samples*.parquet`` view and ``revati models fit`` find them.

Example::

    from revati.replay.kernel_db.trace_samples import derive_op_samples
    table = derive_op_samples("traces/gemm-h100")    # pyarrow Table in the op_samples schema
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa

from revati import parquet_io, schema, vocab
from revati.errors import BadInput
from revati.replay.op_mapping import VocabOp
from revati.replay.kernel_db.trace_ops import load_trace_ops
from revati.run_folder import OP_SAMPLES_FILE, check_run_dir, read_run_table
from revati.tables import rows_to_table

_PARAM_COLUMNS = {f.name for f in schema.OP_SAMPLES} & {p for fam in vocab.FAMILIES.values() for p in fam.params}


def _run_row(run_dir: Path) -> dict:
    runs = read_run_table(run_dir, "runs").to_pylist()
    if not runs:
        raise BadInput(run_dir, "no runs.parquet: not a complete `revati trace` run folder")
    return runs[0]


def derive_op_samples(run_dir: str | Path) -> pa.Table:
    run_dir = check_run_dir(Path(run_dir))
    run = _run_row(run_dir)
    trace_ops = load_trace_ops(run_dir)
    if not trace_ops.device_timing:
        raise BadInput(run_dir, "the run has no device timing (no kernels recorded): no op_samples to derive")
    gpu = run.get("gpu") or (run.get("gpu_name") or "").strip().lower().replace(" ", "_") or None
    if gpu is None:
        raise BadInput(run_dir, "the run records no GPU name; op_samples need one")

    groups: dict[tuple, list] = defaultdict(list)
    for u in trace_ops.units:
        if u.measured_ns is None or u.kernels == 0 or len(u.mapped) != 1 or not isinstance(u.mapped[0], VocabOp):
            continue
        m = u.mapped[0]
        groups[(m.op, m.params, m.dtype)].append(u)

    rows = []
    for (op, params, dtype), units in sorted(groups.items()):
        durations = [u.measured_ns for u in units]
        kernel_names = Counter(u.kernel_names[0] for u in units if u.kernel_names)
        row = {
            "run_id": run["run_id"], "source": "trace", "gpu": gpu, "gpu_name": run.get("gpu_name"),
            "software": run.get("software"),
            "kernel_source": kernel_names.most_common(1)[0][0] if kernel_names else None,
            "op": op, "dtype": dtype, "samples": len(durations),
            "duration_min_ns": float(min(durations)), "duration_median_ns": float(statistics.median(durations)),
            "duration_mean_ns": float(statistics.fmean(durations)),
            "duration_std_ns": float(statistics.pstdev(durations)) if len(durations) > 1 else 0.0,
            "duration_max_ns": float(max(durations)),
            "origin_file": f"{run['run_id']}/ops", "origin_row": units[0].op_id,
        }
        for key, value in params:
            if key in _PARAM_COLUMNS:
                row[key] = value
        rows.append(row)
    return rows_to_table("op_samples", rows)


def write_op_samples(run_dir: str | Path) -> int:
    """Derive and write ``RUN_DIR/op_samples.parquet``; returns the number of rows (0: no file)."""
    table = derive_op_samples(run_dir)
    if table.num_rows:
        parquet_io.write_table(table, "op_samples", Path(run_dir) / OP_SAMPLES_FILE)
    return table.num_rows
