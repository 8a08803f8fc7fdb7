"""Import NVIDIA AIConfigurator's kernel tables (ai-dynamo/aiconfigurator ``systems/data``).

Layout: ``<system>/<family>/<framework>/<version>/<table>.parquet``, e.g.
``h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet``. Tables imported:

=====================================  =====================================================
``gemm/*/gemm_perf``                   gemm(m, n, k); dtype from ``gemm_dtype``
``attention/*/context_attention_perf``  attn_prefill: q_tokens = isl, kv_len = isl + step
``attention/*/generation_attention_perf``  attn_decode: q_tokens = 1, kv_len from ``step``
``comm/nccl/*/nccl_perf``              all_reduce, all_gather, reduce_scatter, all_to_all
``comm/vllm/*/custom_allreduce_perf``  all_reduce (vLLM's custom kernel, eager and graph)
=====================================  =====================================================

MoE and MLA tables have no family in the op vocabulary yet and are reported as skipped.
A ``reuse.yaml`` says that a version reuses another version's table: it becomes a ``runs`` row
naming the donor, and no rows are copied.

Example::

    from revati.replay.kernel_db.importers import aiconfigurator
    result = aiconfigurator.import_paths(["/data/aiconfigurator"], gpus=["h100"], latest_only=True)

Facts taken from the collector sources (ai-dynamo/aiconfigurator @ 095f58a5):

- ``latency`` is in ms and is an *average*: ``collector/helper.py`` ``benchmark_with_power``
  divides one CUDA-event span by the number of runs; ``collector/network/collect_nccl.py``
  takes nccl-tests' average time (us) and multiplies by 1e-3. It lands in
  ``duration_mean_ns``; min/median/std are not reported.
- ``message_size`` counts **elements** of ``nccl_dtype``/``allreduce_dtype``:
  ``collect_nccl.py`` logs ``size // bytes_per_element`` where ``size`` is nccl-tests' byte
  size (the gathered output for all_gather, the full input for reduce_scatter), which is
  what the vocabulary's ``message_bytes`` means.
- Attention (``collector/vllm/collect_attn.py``): context rows are run with
  ``seq_lens = query_lens = [isl] * batch_size`` and log ``step = 0``: a prefill of ``isl``
  new tokens with no cached prefix. Generation rows are run with ``query_lens = [1]`` and log
  ``isl = 1, step = input_len``; until the collector change of 2026-07-04 ("align vllm dense
  attention runtime path", first used for the vLLM 0.24.0 data) ``seq_lens = [input_len]``,
  i.e. ``step`` counted the new token (kv_len = step); since then ``seq_lens = [input_len + 1]``
  and ``step`` is the history before the new token (kv_len = step + 1). See
  :func:`decode_kv_len`.
- ``num_heads``/``num_key_value_heads`` are per GPU (the collector builds one attention layer
  of that many heads). ``dtype`` of attention rows is the KV-cache dtype (queries are bf16).
- The ``version`` column of ``nccl_perf`` is the NCCL the collector actually loaded; it can
  differ from the folder's catalogue version (h100_sxm/comm/nccl/2.27.3 holds 2.29.2 runs).
  ``software`` uses the column; the folder stays in ``origin_file``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import yaml

from revati import vocab
from revati.errors import BadInput

from revati.replay.kernel_db.importers import common

SOURCE = "aiconfigurator"

# power / power_limit: the GPU's power draw while measuring (aiconfigurator-core 0.12's tables); not
# a shape or a time, so not imported
_COMMON_OPTIONAL = ("framework", "version", "device", "op_name", "kernel_source", "power", "power_limit")


@dataclass(frozen=True)
class TableSpec:
    family: str                       # folder family (gemm, attention, comm)
    required: tuple[str, ...]
    optional: tuple[str, ...] = _COMMON_OPTIONAL


TABLES = {
    "gemm_perf": TableSpec("gemm", ("gemm_dtype", "m", "n", "k", "latency")),
    "context_attention_perf": TableSpec(
        "attention", ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype",
                      "step", "latency"),
        _COMMON_OPTIONAL + ("beam_width", "attn_dtype", "window_size")),
    "generation_attention_perf": TableSpec(
        "attention", ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "kv_cache_dtype",
                      "step", "latency"),
        _COMMON_OPTIONAL + ("beam_width", "attn_dtype", "window_size")),
    "nccl_perf": TableSpec("comm", ("op_name", "nccl_dtype", "num_gpus", "message_size", "latency")),
    "custom_allreduce_perf": TableSpec("comm", ("allreduce_dtype", "num_gpus", "message_size", "latency"),
                                       _COMMON_OPTIONAL + ("backend",)),
}
# Tables of families the op vocabulary does not have yet: reported, not imported.
NO_FAMILY = {"moe_perf": "MoE", "context_mla_perf": "MLA", "generation_mla_perf": "MLA",
             "mla_context_module_perf": "MLA", "mla_generation_module_perf": "MLA"}

NCCL_OPS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "reduce_scatter": "reduce_scatter",
            "alltoall": "all_to_all"}
# The *_sxm systems are 8-GPU NVSwitch nodes (systems/<system>.yaml: num_gpus_per_node: 8), the
# same kind of box Vidur calls "dgx".
SXM_TOPOLOGY = "dgx"
# Generation rows from this collector version on record step = history before the new token.
DECODE_STEP_EXCLUDES_NEW_TOKEN_FROM = (0, 24, 0)
# Source dtype names that say no more than the canonical name; others are kept in kernel_source.
_PLAIN_DTYPES = {"bfloat16", "float16", "half", "float32", "float", "int8", "fp8", "bf16", "fp16"}


@dataclass(frozen=True)
class SourceFile:
    path: Path
    system: str
    family: str
    framework: str
    version: str
    table: str

    @property
    def origin(self) -> str:
        return f"{self.system}/{self.family}/{self.framework}/{self.version}/{self.path.name}"

    @property
    def run_id(self) -> str:
        return f"{SOURCE}:{self.system}/{self.family}/{self.framework}/{self.version}/{self.table}"


def version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\-+]", version))


def decode_kv_len(step: np.ndarray, isl: np.ndarray, version: str) -> np.ndarray:
    """Keys attended per sequence by a generation row (see the module docstring)."""
    try:
        newer = version_key(version) >= DECODE_STEP_EXCLUDES_NEW_TOKEN_FROM
    except TypeError:   # a version we cannot order: assume the current collector
        newer = True
    return step + isl if newer else step


def _layout(path: Path) -> SourceFile:
    parts = path.absolute().parts
    if len(parts) < 6:
        raise BadInput(path, "expected <system>/<family>/<framework>/<version>/<table>.parquet")
    system, family, framework, version = parts[-5:-1]
    return SourceFile(path, system, family, framework, version, path.name.split(".")[0])


def discover(paths: Sequence[str | Path]) -> tuple[list[SourceFile], list[SourceFile], list[Path]]:
    """(table files, reuse.yaml files, LICENSE files) under ``paths``."""
    tables: dict[Path, SourceFile] = {}
    reuses: dict[Path, SourceFile] = {}
    licenses: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BadInput(path, "no such file or folder")
        if path.is_file():
            src = _layout(path)
            if path.name == "reuse.yaml":
                reuses[path.absolute()] = src
            elif path.suffix == ".parquet" and (src.table in TABLES or src.table in NO_FAMILY):
                tables[path.absolute()] = src
            else:
                raise BadInput(path, f"not an AIConfigurator table (known: {', '.join(sorted(TABLES))})")
        else:
            for p in sorted(path.rglob("*.parquet")):
                tables[p.absolute()] = _layout(p)
            for p in sorted(path.rglob("reuse.yaml")):
                reuses[p.absolute()] = _layout(p)
            if not tables and not reuses:
                raise BadInput(path, "no AIConfigurator tables here "
                                     "(<system>/<family>/<framework>/<version>/<table>.parquet)")
        for parent in path.absolute().parents if path.is_file() else [path.absolute(), *path.absolute().parents]:
            if (parent / "LICENSE").is_file():
                licenses.add(parent / "LICENSE")
                break
    return (sorted(tables.values(), key=lambda s: s.origin), sorted(reuses.values(), key=lambda s: s.origin),
            sorted(licenses))


def _system_gpu(src: SourceFile) -> str:
    return common.resolve_gpu(src.system, src.path)


def import_paths(paths: Sequence[str | Path], gpus: Iterable[str] | None = None, latest_only: bool = False,
                 note: str | None = None, progress: common.ProgressFn | None = None) -> common.ImportResult:
    """Read and check every AIConfigurator table under ``paths``.

    ``latest_only`` keeps, per (system, family, framework, table), only the newest version that
    has data of its own (and the reuse records that point at it).
    """
    files, reuses, licenses = discover(paths)
    if gpus:
        wanted = {common.resolve_gpu(g, "--gpu") for g in gpus}
        files = [f for f in files if _system_gpu(f) in wanted]
        reuses = [r for r in reuses if _system_gpu(r) in wanted]
        if not files and not reuses:
            raise BadInput(", ".join(map(str, paths)), f"no AIConfigurator tables for GPU(s) {', '.join(sorted(wanted))}")
    reuse_rows = [row for r in reuses for row in _reuse_entries(r)]
    # A folder can hold a table of its own *and* a reuse.yaml naming a donor for it (seen in
    # aiconfigurator-core 0.12.0, b200 vLLM 0.22.0 attention): the measured table wins.
    own_tables = {f.run_id for f in files}
    reuse_rows = [r for r in reuse_rows if r["run_id"] not in own_tables]
    if latest_only:
        newest: dict[tuple, SourceFile] = {}
        for f in files:
            key = (f.system, f.family, f.framework, f.table)
            if key not in newest or version_key(f.version) > version_key(newest[key].version):
                newest[key] = f
        files = sorted(newest.values(), key=lambda s: s.origin)
        kept = {(f.system, f.family, f.framework, f.table, f.version) for f in files}
        reuse_rows = [r for r in reuse_rows if r["_donor"] in kept]
    samples, runs, reports = [], [], []
    for i, src in enumerate(files):
        if progress:
            progress(i, len(files), src.origin)
        if src.table in NO_FAMILY:
            rows = common.parquet_num_rows(src.path)
            report = common.FileReport(src.origin, src.run_id, rows, 0)
            report.skipped[f"{NO_FAMILY[src.table]} has no family in the op vocabulary yet"] = rows
            reports.append(report)
            continue
        if src.table not in TABLES:
            report = common.FileReport(src.origin, src.run_id, 0, 0, note="unknown table, not read")
            reports.append(report)
            continue
        table, report, run = _import_table(src)
        run["notes"] = "; ".join(x for x in (f"imported from {src.origin}", note) if x)
        samples.append(table)
        reports.append(report)
        runs.append(run)
    for row in reuse_rows:
        row.pop("_donor")
        if note:
            row["notes"] += f"; {note}"
        runs.append(row)
        reports.append(common.FileReport(row["_origin"], row["run_id"], 0, 0, note=row["notes"]))
    for row in runs:
        row.pop("_origin", None)
    if progress:
        progress(len(files), len(files), "done")
    return common.ImportResult(SOURCE, common.concat_samples(samples), common.runs_table(runs), reports, licenses)


def _reuse_entries(src: SourceFile) -> list[dict]:
    try:
        doc = yaml.safe_load(src.path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInput(src.path, f"not a readable YAML file ({str(exc).splitlines()[0]})") from None
    entries = doc.get("reuse") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise BadInput(src.path, "no 'reuse:' list (expected entries with table and from_version)")
    gpu = _system_gpu(src)
    rows = []
    for j, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("table") or not entry.get("from_version"):
            raise BadInput(src.path, f"reuse entry {j}: needs 'table' and 'from_version'")
        table, donor = str(entry["table"]), str(entry["from_version"])
        if table not in TABLES:
            continue   # a table this importer does not read (MoE, MLA): nothing to point at
        donor_id = f"{SOURCE}:{src.system}/{src.family}/{src.framework}/{donor}/{table}"
        rows.append({
            "run_id": f"{SOURCE}:{src.system}/{src.family}/{src.framework}/{src.version}/{table}",
            "source": SOURCE, "gpu": gpu, "gpu_name": src.system, "engine": src.framework,
            "engine_version": src.version, "software": f"{src.framework} {src.version}",
            "notes": f"reuse: {table} of {src.framework} {src.version} is the table of {src.framework} {donor} "
                     f"(run {donor_id}); no rows of its own ({src.origin})",
            "_donor": (src.system, src.family, src.framework, table, donor),
            "_origin": src.origin,
        })
    return rows


def _column(src: SourceFile, table: pa.Table, name: str, kind: str) -> np.ndarray:
    col = table.column(name)
    typ = col.type
    if kind == "str":
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_dictionary(typ)):
            raise BadInput(src.path, f"column {name!r} has type {typ}, expected text")
        values = col.cast(pa.string()).to_pylist()
        if any(v is None for v in values):
            raise BadInput(src.path, f"row {values.index(None)}: column {name!r} is null")
        return np.array(values, dtype=object)
    if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
        raise BadInput(src.path, f"column {name!r} has type {typ}, expected a number")
    values = col.to_numpy(zero_copy_only=False).astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise BadInput(src.path, f"row {int(bad.argmax())}: column {name!r} is missing or not a number")
    if kind == "int":
        frac = values != np.round(values)
        if frac.any():
            raise BadInput(src.path, f"row {int(frac.argmax())}: column {name!r} = {values[frac.argmax()]!r} "
                                     f"is not an integer")
        return values.astype(np.int64)
    return values


def _one_gpu(src: SourceFile, table: pa.Table) -> tuple[str, str]:
    """(canonical key, reported name) from the ``device`` column, checked against the folder."""
    folder_gpu = _system_gpu(src)
    if "device" not in table.column_names:
        return folder_gpu, src.system
    names = sorted(set(_column(src, table, "device", "str").tolist()))
    if len(names) != 1:
        raise BadInput(src.path, f"rows from several GPUs: {', '.join(names)}")
    gpu = common.resolve_gpu(names[0], src.path)
    if gpu != folder_gpu:
        raise BadInput(src.path, f"device {names[0]!r} ({gpu}) does not match the folder {src.system!r} "
                                 f"({folder_gpu})")
    return gpu, names[0]


def _software(src: SourceFile, table: pa.Table) -> np.ndarray | str:
    if "version" in table.column_names:
        versions = _column(src, table, "version", "str")
        return np.char.add(f"{src.framework} ", versions.astype(str))
    return f"{src.framework} {src.version}"


@dataclass
class _Rows:
    """One table converted: op_samples columns (per-row arrays or one value) and rows to keep."""

    columns: dict
    dtype: np.ndarray
    kernel: np.ndarray
    keep: np.ndarray
    run_extra: dict


def _import_table(src: SourceFile) -> tuple[pa.Table, common.FileReport, dict]:
    spec = TABLES[src.table]
    if src.family != spec.family:
        raise BadInput(src.path, f"{src.table} found under family folder {src.family!r}, expected {spec.family!r}")
    table = common.read_parquet_source(src.path)
    names = table.column_names
    unknown = [c for c in names if c not in spec.required and c not in spec.optional]
    if unknown:
        raise BadInput(src.path, f"unknown column(s) {', '.join(map(repr, unknown[:5]))} for {src.table}")
    missing = [c for c in spec.required if c not in names]
    if missing:
        raise BadInput(src.path, f"missing column(s) {', '.join(map(repr, missing))} for {src.table}")
    if table.num_rows == 0:
        raise BadInput(src.path, "no rows")
    gpu, gpu_name = _one_gpu(src, table)
    latency = _column(src, table, "latency", "float")
    rows = np.arange(table.num_rows)
    common.check_stats_ms({"mean": latency}, src.path, rows, "latency")
    duration = common.ms_to_ns(latency)
    kernel = (_column(src, table, "kernel_source", "str") if "kernel_source" in names
              else np.full(table.num_rows, src.framework, dtype=object))
    report = common.FileReport(src.origin, src.run_id, table.num_rows, 0)
    if src.table == "gemm_perf":
        conv = _gemm_rows(src, table, kernel, report)
    elif src.family == "attention":
        conv = _attention_rows(src, table, kernel, report)
    else:
        conv = _comm_rows(src, table, kernel)
    op = conv.columns["op"]
    if isinstance(op, str) and (op == "gemm" or op in vocab.ATTENTION):
        for d in sorted(set(conv.dtype[conv.keep].tolist())):
            sel = np.flatnonzero(conv.keep & (conv.dtype == d))
            shape = {k: v[sel] for k, v in conv.columns.items() if isinstance(v, np.ndarray)}
            common.check_peak(op, shape, d, gpu, duration[sel], src.path, rows[sel])
    idx = np.flatnonzero(conv.keep)
    columns = {"run_id": src.run_id, "source": SOURCE, "gpu": gpu, "gpu_name": gpu_name,
               "software": _software(src, table), "origin_file": src.origin, **conv.columns,
               "dtype": conv.dtype, "kernel_source": conv.kernel, "duration_mean_ns": duration, "origin_row": rows}
    picked = {}
    for name, value in columns.items():
        if isinstance(value, np.ndarray):
            value = value[idx]
            value = value.tolist() if value.dtype.kind in "OU" else value
        picked[name] = value
    out = common.samples_table(len(idx), picked)
    common.check_units(out, src.path)
    report.samples = out.num_rows
    software = sorted(set(out.column("software").to_pylist())) or [f"{src.framework} {src.version}"]
    run = {"run_id": src.run_id, "source": SOURCE, "gpu": gpu, "gpu_name": gpu_name, "engine": src.framework,
           "engine_version": src.version, "software": ", ".join(software), "_origin": src.origin,
           **conv.run_extra}
    return out, report, run


def _canonical(values: np.ndarray) -> np.ndarray:
    return np.array([vocab.canonical_dtype(v) for v in values], dtype=object)


def _gemm_rows(src: SourceFile, table: pa.Table, kernel: np.ndarray, report: common.FileReport) -> _Rows:
    raw = _column(src, table, "gemm_dtype", "str")
    # fp8_block is fp8 in the vocabulary; the kernel name keeps the scaling scheme apart.
    kernel = np.array([k if r.lower() in _PLAIN_DTYPES else f"{k} [{r}]" for k, r in zip(kernel, raw)], dtype=object)
    columns = {"op": "gemm", "m": _column(src, table, "m", "int"), "n": _column(src, table, "n", "int"),
               "k": _column(src, table, "k", "int")}
    dtypes = _canonical(raw)
    # 4-bit float formats (nvfp4, mxfp4) and weight-only schemes are not in the vocabulary yet:
    # left out and counted, not stored under a dtype whose peak would misjudge them
    keep = np.array([d in vocab.DTYPE_BYTES for d in dtypes], dtype=bool)
    for d in sorted(set(dtypes[~keep])):
        report.skipped[f"gemm dtype {d} (not in the vocabulary)"] += int((dtypes == d).sum())
    return _Rows(columns, dtypes, kernel, keep, {})


def _attention_rows(src: SourceFile, table: pa.Table, kernel: np.ndarray, report: common.FileReport) -> _Rows:
    names = table.column_names
    keep = np.ones(table.num_rows, dtype=bool)
    if "beam_width" in names:
        beam = _column(src, table, "beam_width", "int")
        if (beam != 1).any():
            report.skipped["beam_width != 1 (beam search)"] += int((beam != 1).sum())
        keep &= beam == 1
    if "window_size" in names:
        # op_samples has no sliding-window column: a windowed row would pose as full attention.
        window = _column(src, table, "window_size", "int")
        if ((window > 0) & keep).any():
            report.skipped["sliding window (window_size > 0)"] += int(((window > 0) & keep).sum())
        keep &= window <= 0
    isl, step = _column(src, table, "isl", "int"), _column(src, table, "step", "int")
    if src.table == "context_attention_perf":
        op, kv_len = "attn_prefill", isl + step
    else:
        op, kv_len = "attn_decode", decode_kv_len(step, isl, src.version)
    columns = {"op": op, "batch_size": _column(src, table, "batch_size", "int"), "q_tokens": isl,
               "kv_len": kv_len, "num_heads": _column(src, table, "num_heads", "int"),
               "num_kv_heads": _column(src, table, "num_key_value_heads", "int"),
               "head_dim": _column(src, table, "head_dim", "int")}
    dtype = _canonical(_column(src, table, "kv_cache_dtype", "str"))
    return _Rows(columns, dtype, kernel, keep, {"attention_backend": ",".join(sorted(set(kernel[keep].tolist())))})


def _comm_rows(src: SourceFile, table: pa.Table, kernel: np.ndarray) -> _Rows:
    dtype_col = "nccl_dtype" if src.table == "nccl_perf" else "allreduce_dtype"
    dtype = _canonical(_column(src, table, dtype_col, "str"))
    unsized = sorted(d for d in set(dtype.tolist()) if d not in vocab.DTYPE_BYTES)
    if unsized:
        raise BadInput(src.path, f"{dtype_col} {unsized[0]!r}: unknown element size, cannot turn "
                                 f"message_size (elements) into bytes")
    elements = _column(src, table, "message_size", "int")
    elem_bytes = np.array([vocab.DTYPE_BYTES[d] for d in dtype])
    op_names = (_column(src, table, "op_name", "str") if "op_name" in table.column_names
                else np.full(table.num_rows, "all_reduce", dtype=object))
    allowed = NCCL_OPS if src.table == "nccl_perf" else {"all_reduce": "all_reduce"}
    bad = op_names[~np.isin(op_names, list(allowed))]
    if len(bad):
        j = int(np.flatnonzero(op_names == bad[0])[0])
        raise BadInput(src.path, f"row {j}: unknown collective {bad[0]!r} for {src.table}")
    world = _column(src, table, "num_gpus", "int")
    columns = {"op": np.array([allowed[n] for n in op_names], dtype=object),
               "message_bytes": np.round(elements * elem_bytes).astype(np.int64), "world_size": world,
               "topology": SXM_TOPOLOGY if src.system.endswith("_sxm") else None}
    return _Rows(columns, dtype, kernel, np.ones(table.num_rows, dtype=bool), {"world_size": int(world.max())})
