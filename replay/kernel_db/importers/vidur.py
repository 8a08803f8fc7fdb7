"""Import Vidur's GPU profiling CSVs (microsoft/vidur ``data/profiling``) as op_samples rows.

Three kinds of files, found by their place in Vidur's layout:

- ``compute/<gpu>/<org>/<model>/mlp.csv``: per-layer operator times of one tensor-parallel shard;
- ``network/<gpu>_<topology>/{all_reduce,send_recv}.csv``: NCCL collectives;
- ``attention/<gpu>_*.csv``: FlashAttention prefill and decode.

Example::

    from revati.replay.kernel_db.importers import vidur
    result = vidur.import_paths(["/data/vidur"], gpus=["h100", "a100"])
    print(result.counts())        # {('h100_sxm', 'gemm'): ..., ...}

Units: every time column is in ms (checked: see ``common.check_units``) and becomes ns.

What Vidur ran (microsoft/vidur @ 7d475133 for compute/network, @ acb95f6c for attention):

- dtype **fp16** everywhere. ``vidur/profiling/mlp/mlp_wrapper.py`` moves the profiled block to
  ``torch.float16`` (``self.model.to(dtype=torch.float16)``) and ``ModelConfig.dtype`` returns
  ``torch.float16``; ``simulator/profiling/attention/attention_benchmark.py`` @ acb95f6c sets
  ``dtype = torch.float16`` for the query/KV tensors; ``collectives_impl.GraphedCollective``
  allocates ``float16`` buffers and ``collectives_wrapper`` records ``size = elements * 2``
  (bytes).
- The shapes follow sarathi-serve's tensor-parallel layers in ``mlp_impl.py``: the QKV
  projection is a ColumnParallelLinear of width (q heads + 2 kv heads) * head_dim, the MLP up
  projection is 2 * mlp_hidden wide when gated (SiluAndMul) and mlp_hidden otherwise (GELU),
  O and down projections are RowParallelLinear; each shard holds 1/tp of the split dimension.
- Attention (``attention_wrapper.py``): a sequence has ``kv_cache_size`` tokens already in the
  cache (``processed_len``) and ``prefill_chunk_size`` new tokens in prefill, 1 in decode
  (``total_len = new + kv_cache_size``). Hence q_tokens = new tokens and
  kv_len = kv_cache_size + q_tokens (keys attended, new ones included); ``batch_size`` is the
  number of sequences (always 1 for prefill).
- Each statistic is over Vidur's repeated runs of one configuration; the CSVs do not state the
  run count, so ``samples`` stays null.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from revati.errors import BadInput

from revati.replay.kernel_db.importers import common
from revati.replay.kernel_db.importers.csvfile import LINE_OFFSET, CsvFile, read_csv

SOURCE = "vidur"
DEFAULT_SOFTWARE = "sarathi-serve (vidur)"
DTYPE = "fp16"
STATS = ("min", "max", "mean", "median", "std")

# mlp.csv op -> vocabulary family
COMPUTE_OPS = {
    "emb": "embedding",
    "input_layernorm": "norm",
    "attn_pre_proj": "gemm",
    "attn_rope": "rope",
    "attn_post_proj": "gemm",
    "post_attention_layernorm": "norm",
    "mlp_up_proj": "gemm",
    "mlp_act": "activation",
    "mlp_down_proj": "gemm",
    "add": "elementwise",
}
COMPUTE_KEYS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp",
                "num_tokens", "num_tensor_parallel_workers")

NETWORK_OPS = {"all_reduce": "all_reduce", "send_recv": "send_recv", "all_gather": "all_gather",
               "reduce_scatter": "reduce_scatter", "broadcast": None}
NETWORK_KEYS = ("", "rank", "num_workers", "size", "collective", "devices_per_node",
                "max_devices_per_node")
NETWORK_REQUIRED = ("num_workers", "size", "collective", "devices_per_node")
NETWORK_FILES = ("all_reduce.csv", "send_recv.csv", "all_gather.csv", "reduce_scatter.csv")
# Vidur names this "pairwise_nvlink"; schema.py's topology vocabulary says "nvlink_pairwise".
TOPOLOGY_NAMES = {"pairwise_nvlink": "nvlink_pairwise"}

ATTENTION_OPS = ("attn_prefill", "attn_decode")
ATTENTION_OTHER_OPS = ("attn_input_reshape", "attn_output_reshape", "attn_kv_cache_save")
ATTENTION_KEYS = ("n_embd", "n_q_head", "n_kv_head", "block_size", "num_tensor_parallel_workers",
                  "max_model_len", "batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill",
                  "attention_backend", "profile_method")
ATTENTION_REQUIRED = ("n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
                      "prefill_chunk_size", "kv_cache_size", "is_prefill")


@dataclass(frozen=True)
class SourceFile:
    kind: str        # compute | network | attention
    path: Path
    origin: str      # path inside Vidur's layout, e.g. compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv
    gpu_folder: str  # the GPU as the source names it (h100, a100, a40)


def discover(paths: Sequence[str | Path]) -> list[SourceFile]:
    """Vidur profiling files under ``paths`` (folders are searched, files are classified)."""
    found: list[SourceFile] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BadInput(path, "no such file or folder")
        if path.is_file():
            found.append(_classify(path, strict=True))
            continue
        hits = [_classify(p, strict=False) for p in sorted(path.rglob("*.csv"))]
        hits = [h for h in hits if h is not None]
        if not hits:
            raise BadInput(path, "no Vidur profiling files here (compute/<gpu>/<org>/<model>/mlp.csv, "
                                 "network/<gpu>_<topology>/*.csv, attention/<gpu>_*.csv)")
        found.extend(hits)
    unique = {f.path.resolve(): f for f in found}
    return sorted(unique.values(), key=lambda f: f.origin)


def _classify(path: Path, strict: bool) -> SourceFile | None:
    parts = path.absolute().parts
    if path.name == "mlp.csv":
        if len(parts) < 5:
            raise BadInput(path, "expected compute/<gpu>/<org>/<model>/mlp.csv")
        gpu, org, model = parts[-4], parts[-3], parts[-2]
        return SourceFile("compute", path, f"compute/{gpu}/{org}/{model}/mlp.csv", gpu)
    if path.name in NETWORK_FILES:
        folder = parts[-2]
        return SourceFile("network", path, f"network/{folder}/{path.name}", folder.split("_", 1)[0])
    if len(parts) >= 2 and parts[-2] == "attention":
        return SourceFile("attention", path, f"attention/{path.name}", path.name.split("_", 1)[0])
    if strict:
        raise BadInput(path, "not a Vidur profiling file (expected mlp.csv, all_reduce.csv, send_recv.csv "
                             "or a CSV in an attention/ folder)")
    return None


def import_paths(paths: Sequence[str | Path], gpus: Iterable[str] | None = None,
                 software: str = DEFAULT_SOFTWARE, note: str | None = None,
                 progress: common.ProgressFn | None = None) -> common.ImportResult:
    """Read and check every Vidur file under ``paths``; keep only ``gpus`` if given."""
    files = discover(paths)
    if gpus:
        wanted = {common.resolve_gpu(g, "--gpu") for g in gpus}
        files = [f for f in files if common.resolve_gpu(f.gpu_folder, f.path) in wanted]
        if not files:
            raise BadInput(", ".join(map(str, paths)), f"no Vidur files for GPU(s) {', '.join(sorted(wanted))}")
    tables, runs, reports, licenses = [], [], [], set()
    readers = {"compute": _compute, "network": _network, "attention": _attention}
    for i, src in enumerate(files):
        if progress:
            progress(i, len(files), src.origin)
        table, report, run = readers[src.kind](src, software)
        run["notes"] = "; ".join(x for x in (f"imported from {src.origin}", note) if x)
        tables.append(table)
        reports.append(report)
        runs.append(run)
        lic = _find_license(src.path)
        if lic is not None:
            licenses.add(lic)
    if progress:
        progress(len(files), len(files), "done")
    return common.ImportResult(SOURCE, common.concat_samples(tables), common.runs_table(runs), reports,
                               sorted(licenses))


def _find_license(path: Path) -> Path | None:
    for parent in path.absolute().parents:
        lic = parent / "LICENSE"
        if lic.is_file():
            return lic
        if parent.name in ("compute", "network", "attention"):
            lic = parent.parent / "LICENSE"
            return lic if lic.is_file() else None
    return None


def _run_row(src: SourceFile, gpu: str, software: str, **extra) -> dict:
    return {"run_id": f"{SOURCE}:{src.origin}", "source": SOURCE, "gpu": gpu, "gpu_name": src.gpu_folder,
            "engine": "sarathi-serve", "software": software, **extra}


def _check_columns(csv: CsvFile, known: set[str], required: Iterable[str], what: str) -> None:
    dupes = sorted({h for h in csv.header if csv.header.count(h) > 1})
    if dupes:
        raise BadInput(csv.path, f"duplicate column(s) {', '.join(map(repr, dupes))}")
    unknown = [h for h in csv.header if h not in known]
    if unknown:
        raise BadInput(csv.path, f"unknown column(s) {', '.join(map(repr, unknown[:5]))} "
                                 f"(not a Vidur {what} file?)")
    missing = [r for r in required if r not in csv.header]
    if missing:
        raise BadInput(csv.path, f"missing column(s) {', '.join(map(repr, missing))} for a Vidur {what} file")


def _stats(csv: CsvFile, op: str) -> dict[str, np.ndarray]:
    return {s: csv.floats(f"time_stats.{op}.{s}") for s in STATS}


def _stat_columns(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {f"duration_{s}_ns": common.ms_to_ns(stats[s]) for s in STATS}


def _ops_present(csv: CsvFile, ops: Iterable[str]) -> list[str]:
    present = []
    for op in ops:
        cols = [f"time_stats.{op}.{s}" for s in STATS]
        have = [c for c in cols if c in csv.header]
        if have and len(have) != len(cols):
            missing = sorted(set(cols) - set(have))
            raise BadInput(csv.path, f"missing column(s) {', '.join(map(repr, missing))}")
        if have:
            present.append(op)
    return present


def _divisible(csv: CsvFile, num: np.ndarray, den: np.ndarray, what: str) -> None:
    bad = (den <= 0) | (num % np.where(den > 0, den, 1) != 0)
    if bad.any():
        j = int(bad.argmax())
        raise BadInput(csv.path, f"{csv.where(j)}: {what} ({num[j]} / {den[j]}) is not a whole number")


def _compute(src: SourceFile, software: str) -> tuple[pa.Table, common.FileReport, dict]:
    csv = read_csv(src.path)
    known = set(COMPUTE_KEYS) | {f"time_stats.{op}.{s}" for op in COMPUTE_OPS for s in STATS}
    _check_columns(csv, known, COMPUTE_KEYS, "mlp.csv")
    ops = _ops_present(csv, COMPUTE_OPS)
    if not ops:
        raise BadInput(src.path, "no time_stats.<op>.* columns")
    gpu = common.resolve_gpu(src.gpu_folder, src.path)
    heads, kv_heads = csv.ints("n_head"), csv.ints("n_kv_head")
    hidden, expanded = csv.ints("n_embd"), csv.ints("n_expanded_embd")
    tokens, tp = csv.ints("num_tokens"), csv.ints("num_tensor_parallel_workers")
    gated = csv.bools("use_gated_mlp")
    _divisible(csv, hidden, heads, "n_embd / n_head")
    _divisible(csv, heads, tp, "n_head / tp")
    _divisible(csv, kv_heads, tp, "n_kv_head / tp")
    _divisible(csv, expanded, tp, "n_expanded_embd / tp")
    head_dim = hidden // heads
    rows = np.arange(csv.num_rows)
    # (family, shape) per op; see the module docstring for where each shape comes from.
    shapes = {
        "attn_pre_proj": dict(m=tokens, k=hidden, n=(heads + 2 * kv_heads) * head_dim // tp),
        "attn_post_proj": dict(m=tokens, k=heads * head_dim // tp, n=hidden),
        "mlp_up_proj": dict(m=tokens, k=hidden, n=np.where(gated, 2 * expanded, expanded) // tp),
        "mlp_down_proj": dict(m=tokens, k=expanded // tp, n=hidden),
        "input_layernorm": dict(tokens=tokens, hidden=hidden),
        "post_attention_layernorm": dict(tokens=tokens, hidden=hidden),
        "attn_rope": dict(tokens=tokens, hidden=(heads + kv_heads) * head_dim // tp),
        "mlp_act": dict(tokens=tokens, hidden=expanded // tp),
        "add": dict(tokens=tokens, hidden=hidden),
        "emb": dict(tokens=tokens, hidden=hidden),
    }
    model = src.origin.split("/", 2)[2].rsplit("/", 1)[0]   # <org>/<model>
    tables = []
    for op in ops:
        stats = _stats(csv, op)
        common.check_stats_ms(stats, src.path, rows, op, LINE_OFFSET)
        family = COMPUTE_OPS[op]
        cols = _stat_columns(stats)
        common.check_peak(family, shapes[op], DTYPE, gpu, cols["duration_median_ns"], src.path, rows,
                          LINE_OFFSET)
        kernel = op if op != "mlp_act" else np.where(gated, "mlp_act(silu_and_mul)", "mlp_act(gelu)")
        tables.append(common.samples_table(csv.num_rows, {
            "run_id": f"{SOURCE}:{src.origin}", "source": SOURCE, "gpu": gpu, "gpu_name": src.gpu_folder,
            "software": software, "kernel_source": kernel if isinstance(kernel, str) else list(kernel),
            "op": family, "dtype": DTYPE, **shapes[op], "model": model, "tp_size": tp,
            **cols, "origin_file": src.origin, "origin_row": rows,
        }))
    table = common.concat_samples(tables)
    common.check_units(table, src.path)
    report = common.FileReport(src.origin, f"{SOURCE}:{src.origin}", csv.num_rows, table.num_rows)
    return table, report, _run_row(src, gpu, software)


def _network(src: SourceFile, software: str) -> tuple[pa.Table, common.FileReport, dict]:
    csv = read_csv(src.path)
    if "column00" in csv.header:   # some writers name pandas' unnamed index column
        csv.header[csv.header.index("column00")] = ""
    known = set(NETWORK_KEYS) | {f"time_stats.{op}.{s}" for op in NETWORK_OPS for s in STATS}
    _check_columns(csv, known, NETWORK_REQUIRED, "network")
    folder = src.origin.split("/")[1]
    if "_" not in folder:
        raise BadInput(src.path, f"cannot tell GPU and topology from the folder name {folder!r} "
                                 f"(expected <gpu>_<topology>, e.g. h100_dgx)")
    gpu = common.resolve_gpu(src.gpu_folder, src.path)
    topology = folder.split("_", 1)[1]
    topology = TOPOLOGY_NAMES.get(topology, topology)
    collective = np.array(csv.strings("collective"))
    workers, per_node = csv.ints("num_workers"), csv.ints("devices_per_node")
    size = csv.ints("size")
    if (size <= 0).any():
        j = int((size <= 0).argmax())
        raise BadInput(src.path, f"{csv.where(j)}: size {size[j]} is not a positive byte count")
    if (per_node <= 0).any():
        j = int((per_node <= 0).argmax())
        raise BadInput(src.path, f"{csv.where(j)}: devices_per_node {per_node[j]} is not positive")
    nodes = -(-workers // per_node)
    topo = np.where(nodes > 1, np.char.add(f"{topology}_", np.char.add(nodes.astype(str), "nodes")), topology)
    report = common.FileReport(src.origin, f"{SOURCE}:{src.origin}", csv.num_rows, 0)
    tables = []
    for name in sorted(set(collective)):
        if name not in NETWORK_OPS:
            j = int((collective == name).argmax())
            raise BadInput(src.path, f"{csv.where(j)}: unknown collective {name!r}")
        idx = np.flatnonzero(collective == name)
        if NETWORK_OPS[name] is None:
            report.skipped[f"{name}: not in the op vocabulary"] += len(idx)
            continue
        if f"time_stats.{name}.median" not in csv.header:
            raise BadInput(src.path, f"{csv.where(int(idx[0]))}: collective {name!r} has no "
                                     f"time_stats.{name}.* columns")
        stats = {s: v[idx] for s, v in _stats(csv, name).items()}
        common.check_stats_ms(stats, src.path, idx, name, LINE_OFFSET)
        tables.append(common.samples_table(len(idx), {
            "run_id": f"{SOURCE}:{src.origin}", "source": SOURCE, "gpu": gpu, "gpu_name": src.gpu_folder,
            "software": software, "kernel_source": "nccl", "op": NETWORK_OPS[name], "dtype": DTYPE,
            "message_bytes": size[idx], "world_size": workers[idx], "topology": list(topo[idx]),
            **_stat_columns(stats), "origin_file": src.origin, "origin_row": idx,
        }))
    table = common.concat_samples(tables)
    common.check_units(table, src.path)
    report.samples = table.num_rows
    return table, report, _run_row(src, gpu, software, engine="nccl", world_size=int(workers.max()))


def _attention(src: SourceFile, software: str) -> tuple[pa.Table, common.FileReport, dict]:
    csv = read_csv(src.path)
    known = set(ATTENTION_KEYS) | {f"time_stats.{op}.{s}" for op in ATTENTION_OPS + ATTENTION_OTHER_OPS
                                   for s in STATS}
    _check_columns(csv, known, ATTENTION_REQUIRED, "attention")
    gpu = common.resolve_gpu(src.gpu_folder, src.path)
    q_heads, kv_heads = csv.ints("n_q_head"), csv.ints("n_kv_head")
    hidden, tp = csv.ints("n_embd"), csv.ints("num_tensor_parallel_workers")
    _divisible(csv, hidden, q_heads, "n_embd / n_q_head")
    _divisible(csv, q_heads, tp, "n_q_head / tp")
    _divisible(csv, kv_heads, tp, "n_kv_head / tp")
    batch, chunk, cached = csv.ints("batch_size"), csv.ints("prefill_chunk_size"), csv.ints("kv_cache_size")
    is_prefill = csv.bools("is_prefill")
    backend = (np.array([b.split(".")[-1].lower() for b in csv.strings("attention_backend")])
               if "attention_backend" in csv.header else np.full(csv.num_rows, "flash_attention"))
    report = common.FileReport(src.origin, f"{SOURCE}:{src.origin}", csv.num_rows, 0)
    tables = []
    for op, mask in (("attn_prefill", is_prefill), ("attn_decode", ~is_prefill)):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        if f"time_stats.{op}.median" not in csv.header:
            raise BadInput(src.path, f"{csv.where(int(idx[0]))}: {op} row without time_stats.{op}.* columns")
        q_tokens = chunk[idx] if op == "attn_prefill" else np.ones(len(idx), dtype=np.int64)
        if (q_tokens <= 0).any():
            j = int(idx[(q_tokens <= 0).argmax()])
            raise BadInput(src.path, f"{csv.where(j)}: prefill row with prefill_chunk_size {chunk[j]}")
        shape = dict(batch_size=batch[idx], q_tokens=q_tokens, kv_len=cached[idx] + q_tokens,
                     num_heads=q_heads[idx] // tp[idx], num_kv_heads=kv_heads[idx] // tp[idx],
                     head_dim=hidden[idx] // q_heads[idx])
        stats = {s: v[idx] for s, v in _stats(csv, op).items()}
        common.check_stats_ms(stats, src.path, idx, op, LINE_OFFSET)
        cols = _stat_columns(stats)
        common.check_peak(op, shape, DTYPE, gpu, cols["duration_median_ns"], src.path, idx, LINE_OFFSET)
        tables.append(common.samples_table(len(idx), {
            "run_id": f"{SOURCE}:{src.origin}", "source": SOURCE, "gpu": gpu, "gpu_name": src.gpu_folder,
            "software": software, "kernel_source": list(backend[idx]), "op": op, "dtype": DTYPE,
            **shape, "tp_size": tp[idx], **cols, "origin_file": src.origin, "origin_row": idx,
        }))
    if not tables:
        raise BadInput(src.path, "no prefill or decode rows")
    table = common.concat_samples(tables)
    common.check_units(table, src.path)
    report.samples = table.num_rows
    backends = sorted(set(backend.tolist()))
    return table, report, _run_row(src, gpu, software, attention_backend=",".join(backends),
                                   world_size=int(tp.max()))
