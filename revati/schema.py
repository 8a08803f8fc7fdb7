"""The trace schema: every Parquet table revati writes or reads, in one place.

Writers (tracer backends, importers, replay), readers, the DuckDB views and the tests all import
this module; nothing else spells out a column. Conventions (DESIGN §2):

- every table has ``run_id``;
- timestamps are ``int64`` nanoseconds and end in ``_ns``; statistics of durations are
  ``float64`` nanoseconds (``duration_mean_ns``); sizes end in ``_bytes``;
- the schema version and the table name are stored in every file's key-value metadata
  (``revati.schema_version``, ``revati.table``), and :func:`validate` checks both.

Example::

    from revati import schema
    tbl = schema.empty("kernels")
    schema.validate(tbl, "kernels")            # raises SchemaError on a mismatch
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from revati.errors import SchemaError

SCHEMA_VERSION = 1

META_VERSION_KEY = b"revati.schema_version"
META_TABLE_KEY = b"revati.table"

_STR = pa.string()
_I8, _I16, _I32, _I64 = pa.int8(), pa.int16(), pa.int32(), pa.int64()
_F64 = pa.float64()
_BOOL = pa.bool_()


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


def _req(name: str, typ: pa.DataType) -> pa.Field:
    return pa.field(name, typ, nullable=False)


RUN_ID = _req("run_id", _STR)

# One row per traced run (or per imported source file).
RUNS = pa.schema([
    RUN_ID,
    _f("started_at_ns", _I64),
    _f("source", _STR),                 # kineto | cupti | bpf | vidur | aiconfigurator | ...
    _f("host", _STR),
    _f("cmdline", _STR),
    _f("backends", pa.list_(_STR)),
    _f("rank", _I32),
    _f("world_size", _I32),
    _f("gpu", _STR),                    # canonical key from revati.gpus (h100_sxm, a100_sxm_80gb, ...)
    _f("gpu_name", _STR),               # as the driver reports it
    _f("gpu_uuid", _STR),
    _f("cc_major", _I8),
    _f("cc_minor", _I8),
    _f("sm_count", _I32),
    _f("memory_total_bytes", _I64),
    _f("sm_clock_max_mhz", _I32),
    _f("mem_clock_max_mhz", _I32),
    _f("sm_clock_locked_mhz", _I32),
    _f("clocks_locked", _BOOL),
    _f("driver_version", _STR),
    _f("cuda_version", _STR),
    _f("cupti_version", _STR),
    _f("torch_version", _STR),
    _f("cudnn_version", _STR),
    _f("nccl_version", _STR),
    _f("triton_version", _STR),
    _f("python_version", _STR),
    _f("engine", _STR),                 # vllm | sglang | transformers | microbench | ...
    _f("engine_version", _STR),
    _f("attention_backend", _STR),
    _f("software", _STR),               # one free-form line summarising the stack
    _f("env", pa.map_(_STR, _STR)),
    _f("notes", _STR),
    _f("host_cpu_model", _STR),         # the traced box's host CPU (Note [Host-speed calibration])
    _f("host_score_s", _F64),           # its calibration score: revati.hostcpu.measure()
])

# Device executions (CUPTI kernel records).
KERNELS = pa.schema([
    RUN_ID,
    _f("pid", _I32),
    _f("device_id", _I16),
    _f("stream_id", _I64),
    _f("correlation_id", _I64),
    _f("graph_id", _I64),
    _f("graph_node_id", _I64),
    _req("name", _STR),
    _f("short_name", _STR),
    _req("start_ns", _I64),
    _req("end_ns", _I64),
    _req("duration_ns", _I64),
    _f("queued_ns", _I64),
    _f("grid_x", _I32), _f("grid_y", _I32), _f("grid_z", _I32),
    _f("block_x", _I32), _f("block_y", _I32), _f("block_z", _I32),
    _f("static_smem_bytes", _I32),
    _f("dynamic_smem_bytes", _I32),
    _f("regs_per_thread", _I16),
    _f("step", _I32),
    _f("source", _STR),
])

# Host API calls (cudaLaunchKernel, cudaMemcpyAsync, ...).
LAUNCHES = pa.schema([
    RUN_ID,
    _f("pid", _I32),
    _f("tid", _I64),
    _f("correlation_id", _I64),         # null for the bpf backend (no correlation id there)
    _req("api_name", _STR),
    _f("cbid", _I32),
    _req("start_ns", _I64),
    _f("end_ns", _I64),
    _f("stream_handle", pa.uint64()),
    _f("func_addr", pa.uint64()),
    _f("kernel_name", _STR),
    _f("grid_x", _I32), _f("grid_y", _I32), _f("grid_z", _I32),
    _f("block_x", _I32), _f("block_y", _I32), _f("block_z", _I32),
    _f("shared_mem_bytes", _I64),
    _f("return_code", _I32),
    _f("seq_in_thread", _I64),
    _f("step", _I32),
    _f("source", _STR),
])

# aten / custom ops and user annotations.
OPS = pa.schema([
    RUN_ID,
    _f("pid", _I32),
    _f("tid", _I64),
    _req("op_id", _I64),
    _f("parent_op_id", _I64),
    _f("depth", _I16),
    _req("name", _STR),
    _req("start_ns", _I64),
    _req("end_ns", _I64),
    _f("seq_nr", _I64),
    _f("input_dims", pa.list_(pa.list_(_I64))),
    _f("input_dtypes", pa.list_(_STR)),
    _f("input_strides", pa.list_(pa.list_(_I64))),
    _f("concrete_inputs", pa.list_(_STR)),
    _f("module_path", _STR),
    _f("step", _I32),
])

# op <-> kernel links, and how each link was made (correlation_id joins kernels or memory_ops).
OP_KERNELS = pa.schema([
    RUN_ID,
    _f("pid", _I32),
    _req("op_id", _I64),
    _req("correlation_id", _I64),
    _f("ordinal", _I32),
    _req("link_method", _STR),          # external_id | containment | graph_launch | graph_node
])

MEMORY_OPS = pa.schema([
    RUN_ID,
    _f("pid", _I32),
    _req("kind", _STR),                 # memcpy | memset | alloc | free
    _f("copy_kind", _STR),              # HtoD | DtoH | DtoD | ...
    _f("size_bytes", _I64),
    _f("address", pa.uint64()),
    _req("start_ns", _I64),
    _f("end_ns", _I64),
    _f("device_id", _I16),
    _f("stream_id", _I64),
    _f("correlation_id", _I64),
    _f("is_async", _BOOL),
])

COLLECTIVES = pa.schema([
    RUN_ID,
    _f("pid", _I32),
    _f("rank", _I32),
    _f("op_id", _I64),
    _f("correlation_id", _I64),
    _req("collective_name", _STR),
    _f("pg_name", _STR),
    _f("group_size", _I32),
    _f("dtype", _STR),
    _f("in_nelems", _I64),
    _f("out_nelems", _I64),
    _f("message_bytes", _I64),
    _f("seq", _I64),
    _f("kernel_name", _STR),
    _f("start_ns", _I64),
    _f("end_ns", _I64),
])

SYNCS = pa.schema([
    RUN_ID,
    _f("pid", _I32),
    _f("tid", _I64),
    _req("kind", _STR),                 # device | stream | event | stream_wait_event | d2h_copy
    _f("stream_id", _I64),
    _f("waited_stream_id", _I64),
    _f("event_id", _I64),
    _req("start_ns", _I64),
    _f("end_ns", _I64),
    _f("correlation_id", _I64),
])

# Timed ops in the common vocabulary (revati.vocab): imported public measurements and
# op timings derived from traces. The models are fitted on this table.
OP_SAMPLES = pa.schema([
    RUN_ID,
    _req("source", _STR),               # vidur | aiconfigurator | trace
    _req("gpu", _STR),                  # canonical key (revati.gpus)
    _f("gpu_name", _STR),
    _f("software", _STR),               # e.g. "vllm 0.24.0", "sarathi-serve (vidur@7d475133)"
    _f("kernel_source", _STR),          # e.g. vllm_flash_attn_fa3, NCCL, vLLM_custom_graph
    _req("op", _STR),                   # family: gemm | attn_prefill | attn_decode | all_reduce | ...
    _f("dtype", _STR),                  # bf16 | fp16 | fp8 | fp32 | ...
    _f("m", _I64), _f("n", _I64), _f("k", _I64),
    _f("batch_size", _I64),
    _f("q_tokens", _I64),               # new (query) tokens per sequence
    _f("kv_len", _I64),                 # keys attended per sequence, the new tokens included
    _f("num_heads", _I64),
    _f("num_kv_heads", _I64),
    _f("head_dim", _I64),
    _f("tokens", _I64),
    _f("hidden", _I64),
    _f("message_bytes", _I64),
    _f("world_size", _I64),
    _f("topology", _STR),               # nvlink_pairwise | dgx | pcie | ...
    _f("model", _STR),                  # the model whose shapes produced the row, when known
    _f("tp_size", _I64),
    _f("samples", _I64),
    _f("duration_min_ns", _F64),
    _f("duration_median_ns", _F64),
    _f("duration_mean_ns", _F64),
    _f("duration_std_ns", _F64),
    _f("duration_max_ns", _F64),
    _f("origin_file", _STR),
    _f("origin_row", _I64),
])

# Fitted per-op duration models (revati.replay.model_fit.fitting), one row per (gpu, family, dtype),
# stored under models/<gpu>/models.parquet. A model is an analytic base times a residual on a
# grid over log-transformed axes (revati.replay.model_fit.gridmodel); the axes are stored as parameter
# products so that a saved model does not depend on the code that defined them.
FITTED_MODELS = pa.schema([
    RUN_ID,                             # one id per `revati models fit`
    _req("gpu", _STR),
    _req("family", _STR),
    _req("dtype", _STR),                # the dtype the model was fitted on
    _f("serves_dtypes", pa.list_(_STR)),  # dtypes it answers for (bf16 also answers fp16)
    _req("form", _STR),                 # base+grid | base | grid
    _f("axis_set", _STR),
    _f("axis_names", pa.list_(_STR)),
    _f("axis_num", pa.list_(pa.list_(_STR))),
    _f("axis_den", pa.list_(pa.list_(_STR))),
    _f("axis_margin", pa.list_(_F64)),
    _f("axis_kind", pa.list_(_STR)),         # product | same (revati.replay.features.Axis)
    _f("knots", pa.list_(pa.list_(_F64))),   # log values per axis
    _f("residual", pa.list_(pa.float32())),  # log residual on the knots' grid, C order
    _f("base_params", pa.list_(_F64)),       # log c0_ns, log flop/ns, log byte/ns, exponent
    _f("range_lo", pa.list_(_F64)),          # log of the smallest fitted value per axis
    _f("range_hi", pa.list_(_F64)),
    _f("rows", _I64),
    _f("source", _STR),
    _f("software", _STR),
    _f("kernel_source", _STR),
    _f("topology", _STR),
    _f("train_mape_pct", _F64),
    _f("heldout_mape_pct", _F64),
    _f("heldout_median_ape_pct", _F64),
    _f("heldout_p90_ape_pct", _F64),
    _f("heldout_rows", _I64),
    _f("heldout_refused_rows", _I64),
    _f("holdout_folds", pa.list_(_STR)),
    _f("fitted_at_ns", _I64),
    _f("revati_version", _STR),
])

# How the fitted models did on data they were not fitted on: per candidate form, per hold-out
# fold, the worst held-out shapes, and the cross-source check (fit on one source, test on another).
MODEL_EVALS = pa.schema([
    RUN_ID,
    _req("gpu", _STR),
    _req("family", _STR),
    _f("dtype", _STR),
    _req("kind", _STR),                 # candidate | fold | worst | cross_source
    _f("name", _STR),                   # axis_set/form, fold name, rank, or "train -> test"
    _f("chosen", _BOOL),
    _f("rows", _I64),
    _f("refused_rows", _I64),           # rows outside the model's range (roofline fallback)
    _f("mape_pct", _F64),               # worst: that one shape's absolute percentage error
    _f("median_ape_pct", _F64),
    _f("p90_ape_pct", _F64),
    _f("shape_json", _STR),             # worst: the op's parameters
    _f("measured_ns", _F64),
    _f("predicted_ns", _F64),
    _f("train_slice", _STR),
    _f("test_slice", _STR),
])

# Request arrivals of a serving workload (recorded production traces, converted benchmarks).
# arrival_ns is relative to the trace's first request.
REQUEST_TRACE = pa.schema([
    RUN_ID,                             # the trace's name, e.g. azure_conv_2023
    _req("request_id", _I64),
    _req("arrival_ns", _I64),
    _req("input_tokens", _I64),
    _req("output_tokens", _I64),
    _f("source", _STR),                 # e.g. "Azure/AzurePublicDataset@b469a113 AzureLLMInferenceTrace_conv.csv"
])

# One row per run of a `revati sweep`: the run's configuration and its serving metrics, named and
# in the units of vllm bench serve (ms, req/s, tok/s; its `duration` is `duration_s` here). The
# whole configuration and every metric, percentiles without a column included, are also kept as
# JSON for DuckDB's json functions.
_SWEEP_METRIC_COLUMNS = [
    _f(name, _F64) for name in (
        [
            "request_rate", "duration_s", "request_throughput", "request_goodput", "output_throughput",
            "total_token_throughput", "virtual_duration_s", "wall_duration_s", "speedup",
        ]
        + [
            f"{stat}_{metric}_ms"
            for metric in ("ttft", "tpot", "itl", "e2el")
            for stat in ("mean", "median", "std", "p50", "p90", "p95", "p99")
        ]
    )
]
SWEEP_RESULTS = pa.schema([
    RUN_ID,
    _req("sweep_name", _STR),
    _req("status", _STR),               # ok | failed
    _f("config_key", _STR),             # the configuration without the request rate (one curve)
    _f("gpu", _STR),
    _f("num_gpus", _I64),
    _f("model", _STR),
    _f("config_json", _STR),            # every swept parameter of the run
    _f("attempts", _I32),
    _f("exit_code", _I32),
    _f("run_wall_s", _F64),             # wall time of the run's command
    _f("completed", _I64),
    _f("failed", _I64),
    _f("total_input_tokens", _I64),
    _f("total_output_tokens", _I64),
    _f("fallback_op_count", _I64),
    *_SWEEP_METRIC_COLUMNS,
    _f("metrics_json", _STR),           # the run's whole metrics.json
])

TABLES: dict[str, pa.Schema] = {
    "runs": RUNS,
    "kernels": KERNELS,
    "launches": LAUNCHES,
    "ops": OPS,
    "op_kernels": OP_KERNELS,
    "memory_ops": MEMORY_OPS,
    "collectives": COLLECTIVES,
    "syncs": SYNCS,
    "op_samples": OP_SAMPLES,
    "fitted_models": FITTED_MODELS,
    "model_evals": MODEL_EVALS,
    "request_trace": REQUEST_TRACE,
    "sweep_results": SWEEP_RESULTS,
}


@dataclass(frozen=True)
class FileIdentity:
    """What a Parquet file's metadata says it holds."""

    table: str
    schema_version: int


def table_schema(table: str) -> pa.Schema:
    try:
        return TABLES[table]
    except KeyError:
        raise SchemaError(table, f"unknown table {table!r}; known: {', '.join(TABLES)}") from None


def with_metadata(table_name: str, schema: pa.Schema | None = None) -> pa.Schema:
    """The table's schema carrying revati's version and table name in its metadata."""
    schema = schema if schema is not None else table_schema(table_name)
    meta = dict(schema.metadata or {})
    meta[META_VERSION_KEY] = str(SCHEMA_VERSION).encode()
    meta[META_TABLE_KEY] = table_name.encode()
    return schema.with_metadata(meta)


def empty(table_name: str) -> pa.Table:
    return with_metadata(table_name).empty_table()


def identify(metadata: dict[bytes, bytes] | None, where: object) -> FileIdentity:
    """Read the table name and version from Parquet key-value metadata."""
    metadata = metadata or {}
    if META_TABLE_KEY not in metadata or META_VERSION_KEY not in metadata:
        raise SchemaError(where, "not a revati table (no revati.table / revati.schema_version metadata)")
    try:
        version = int(metadata[META_VERSION_KEY])
    except ValueError:
        raise SchemaError(where, f"bad schema version {metadata[META_VERSION_KEY]!r}") from None
    return FileIdentity(metadata[META_TABLE_KEY].decode(), version)


def validate(table: pa.Table, table_name: str, where: object = None) -> pa.Table:
    """Check ``table`` against the schema of ``table_name``; return it cast to the exact types.

    Missing nullable columns are added as nulls (older writers); unknown columns, missing
    required columns, nulls in required columns and types that cannot be cast safely are
    errors that name the column.
    """
    where = where if where is not None else table_name
    expected = table_schema(table_name)
    names = set(table.column_names)
    unknown = sorted(names - set(expected.names))
    if unknown:
        raise SchemaError(where, f"unknown column(s) {', '.join(unknown)} for table {table_name!r}")
    columns = []
    for field in expected:
        if field.name not in names:
            if not field.nullable:
                raise SchemaError(where, f"missing required column {field.name!r}")
            columns.append(pa.nulls(table.num_rows, type=field.type))
            continue
        col = table.column(field.name)
        if not col.type.equals(field.type):
            try:
                col = col.cast(field.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    where, f"column {field.name!r} has type {col.type}, expected {field.type} ({exc})"
                ) from None
        if not field.nullable and col.null_count:
            raise SchemaError(where, f"required column {field.name!r} has {col.null_count} null(s)")
        columns.append(col)
    return pa.Table.from_arrays(columns, schema=with_metadata(table_name))
