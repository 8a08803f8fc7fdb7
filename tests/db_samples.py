"""Small source files in the Vidur and AIConfigurator layouts, written into tmp_path by tests.

Times follow a plausible H100 shape (GEMMs at ~600 TFLOP/s plus 5 us) so the importers' unit
checks accept them; tests then break one thing at a time.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

VIDUR_OPS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
             "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
STATS = ("min", "max", "mean", "median", "std")
KEYS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp",
        "num_tokens", "num_tensor_parallel_workers")
# Llama-2-7B shapes
MODEL = dict(n_head=32, n_kv_head=32, n_embd=4096, n_expanded_embd=11008, vocab_size=32000,
             use_gated_mlp=True)


def _gemm_ms(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k / 600e12 * 1e3 + 0.005


def vidur_op_ms(op: str, tokens: int, tp: int) -> float:
    h, e, f = MODEL["n_head"], MODEL["n_embd"], MODEL["n_expanded_embd"]
    d = e // h
    shapes = {"attn_pre_proj": (tokens, 3 * h * d // tp, e), "attn_post_proj": (tokens, e, h * d // tp),
              "mlp_up_proj": (tokens, 2 * f // tp, e), "mlp_down_proj": (tokens, e, f // tp)}
    if op in shapes:
        return _gemm_ms(*shapes[op])
    return 0.004 + tokens * 1e-5


def write_vidur_mlp(root: Path, rows=((4096, 1), (1024, 2), (16, 1)), gpu: str = "h100",
                    unit_scale: float = 1.0) -> Path:
    """compute/<gpu>/meta-llama/Llama-2-7b-hf/mlp.csv under root; times in ms x unit_scale."""
    path = root / "compute" / gpu / "meta-llama" / "Llama-2-7b-hf" / "mlp.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [f"time_stats.{op}.{s}" for op in VIDUR_OPS for s in STATS] + list(KEYS)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for tokens, tp in rows:
            cells = []
            for op in VIDUR_OPS:
                t = vidur_op_ms(op, tokens, tp) * unit_scale
                cells += [t * 0.95, t * 1.05, t, t, t * 0.01]
            cells += [MODEL[k] for k in KEYS[:6]] + [tokens, tp]
            w.writerow(cells)
    return path


def write_vidur_network(root: Path, folder: str = "h100_dgx", collective: str = "all_reduce") -> Path:
    path = root / "network" / folder / f"{collective}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [""] + [f"time_stats.{collective}.{s}" for s in STATS] + [
        "rank", "num_workers", "size", "collective", "devices_per_node", "max_devices_per_node"]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, (size, workers, per_node) in enumerate([(2048, 2, 2), (1 << 20, 4, 4), (1 << 26, 16, 8)]):
            t = 0.01 + size / 100e9 * 1e3
            w.writerow([i, t * 0.9, t * 1.1, t, t, t * 0.05, 0, workers, size, collective, per_node, 8])
    return path


def write_aic_gemm(root: Path, system: str = "h100_sxm", version: str = "0.24.0",
                   latency_scale: float = 1.0) -> Path:
    path = root / system / "gemm" / "vllm" / version / "gemm_perf.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    shapes = [(1, 4096, 4096), (128, 4096, 4096), (4096, 4096, 4096), (8192, 14336, 4096)]
    rows = [(m, n, k, d) for (m, n, k) in shapes for d in ("bfloat16", "fp8")]
    device = {"h100_sxm": "NVIDIA H100 80GB HBM3", "a100_sxm": "NVIDIA A100-SXM4-80GB"}[system]
    pq.write_table(pa.table({
        "framework": ["VLLM"] * len(rows), "version": [version] * len(rows), "device": [device] * len(rows),
        "op_name": ["gemm"] * len(rows), "kernel_source": ["torch.nn.functional.linear"] * len(rows),
        "gemm_dtype": [r[3] for r in rows], "m": [r[0] for r in rows], "n": [r[1] for r in rows],
        "k": [r[2] for r in rows],
        "latency": [_gemm_ms(m, n, k) * latency_scale for m, n, k, _ in rows],
    }), path)
    return path


def write_aic_nccl(root: Path, system: str = "h100_sxm", version: str = "2.29.2") -> Path:
    path = root / system / "comm" / "nccl" / version / "nccl_perf.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(op, dt, g, size) for op in ("all_reduce", "alltoall") for dt in ("half", "int8")
            for g in (2, 8) for size in (256, 1 << 20)]
    pq.write_table(pa.table({
        "framework": ["TRTLLM"] * len(rows), "version": [version] * len(rows),
        "device": ["NVIDIA H100 80GB HBM3"] * len(rows), "op_name": [r[0] for r in rows],
        "kernel_source": ["NCCL"] * len(rows), "nccl_dtype": [r[1] for r in rows],
        "num_gpus": [r[2] for r in rows], "message_size": [r[3] for r in rows],
        "latency": [0.005 + r[3] / 200e9 * 1e3 for r in rows],
    }), path)
    return path
