"""Synthetic op_samples with a known answer, for the model tests.

Durations follow the base law of revati.replay.model_fit.gridmodel exactly (kernel floor plus a smooth
max of compute and memory time) times a known per-shape factor and optional noise, so a fit
must recover the law and predict unseen shapes from it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa

from revati import parquet_io, schema, vocab

# (log c0_ns, log flop/ns, log byte/ns, s): 4 us floor, 600 TFLOP/s, 2.5 TB/s, exponent 3.
LAW = (math.log(4000.0), math.log(600e3), math.log(2500.0), 3.0)


def law_ns(op: str, params: dict, dtype: str = "bf16", law=LAW) -> float:
    c0, lp, lw, s = law
    f = vocab.flops(op, params)
    b = vocab.bytes_moved(op, params, dtype)
    return math.exp(c0) + ((f / math.exp(lp)) ** s + (b / math.exp(lw)) ** s) ** (1 / s)


def rows_for(op: str, grid: dict, dtype: str = "bf16", noise: float = 0.0, seed: int = 0,
             factor=None, **extra) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = list(grid)
    out = []
    for values in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, values))
        t = law_ns(op, params, dtype)
        if factor is not None:
            t *= factor(params)
        if noise:
            t *= math.exp(rng.normal(0.0, noise))
        out.append({"run_id": "synthetic", "source": extra.get("source", "aiconfigurator"),
                    "gpu": extra.get("gpu", "h100_sxm"), "software": extra.get("software", "synthetic 1.0"),
                    "kernel_source": extra.get("kernel_source", "synthetic"), "op": op, "dtype": dtype,
                    "model": extra.get("model"), "duration_median_ns": t, "samples": 1,
                    **{k: int(v) for k, v in params.items()}})
    return out


def write(rows: list[dict], path) -> None:
    table = pa.Table.from_pylist(rows)
    parquet_io.write_table(schema.validate(table, "op_samples"), "op_samples", path)


GEMM_GRID = {"m": [1, 4, 16, 64, 256, 1024, 4096], "n": [256, 512, 1024, 2048, 4096, 8192],
             "k": [256, 512, 1024, 2048, 4096, 8192]}
AR_GRID = {"message_bytes": [2 ** i for i in range(10, 29, 2)], "world_size": [2, 4, 8]}
DECODE_GRID = {"batch_size": [1, 4, 16, 64], "q_tokens": [1], "kv_len": [128, 512, 2048, 8192],
               "num_heads": [8, 16, 32], "num_kv_heads": [2, 8], "head_dim": [128]}
