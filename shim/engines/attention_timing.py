"""Attention timed from the batch the engine scheduled, for any engine (Note [vLLM attention timing]).

An attention kernel's cost depends on every sequence's query and KV length -- values, not the
shapes the op cache keys on -- and its arguments include the whole paged KV cache, so pricing it
by its tensors would charge a read of the cache pool per layer. Engine adapters instead note the
step's batch (``batch_scope``), charge each layer's attention with ``attention_cost`` (priced by
revati.replay.op_mapping's engine-attention rule), and, inside a CUDA-graph capture, record the
layer (``record_graph_layer``) so each replay charges it for the batch replayed
(``charge_graph_attention``): a real graph reads the sequence lengths from device memory.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from revati.errors import UnsupportedOp
from revati.shim import runtime as _runtime
from revati.shim.timing import OpCost

_TLS = threading.local()
_COST_CACHE: dict[tuple, OpCost] = {}
_GRAPH_LAYERS: dict[int, tuple[Any, list["LayerShape"]]] = {}   # id(capture) -> (capture, layers)


@dataclass(frozen=True)
class LayerShape:
    num_heads: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype
    sliding_window: int | None


@dataclass(frozen=True)
class Batch:
    """Per request: tokens computed by this step (query) and keys attended to (KV, new included)."""

    query_lens: tuple[int, ...]
    kv_lens: tuple[int, ...]
    source: str

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)


def current_batch() -> Batch | None:
    return getattr(_TLS, "batch", None)


@contextmanager
def _thread_setting(name: str, value: Any) -> Iterator[None]:
    prev = getattr(_TLS, name, None)
    setattr(_TLS, name, value)
    try:
        yield
    finally:
        setattr(_TLS, name, prev)


def batch_scope(batch: Batch | None):
    """The batch this thread's attention is priced for, until the block ends."""
    return _thread_setting("batch", batch)


def kernels_priced_by_batch():
    """Inside: the engine's attention kernels are launched but their time is the batch's
    (``attention_cost``, charged by the adapter), not their arguments' bytes (triton_launch)."""
    return _thread_setting("priced_by_batch", True)


def priced_by_batch() -> bool:
    return bool(getattr(_TLS, "priced_by_batch", False))


def record_graph_layer(capture: Any, shape: LayerShape) -> None:
    _GRAPH_LAYERS.setdefault(id(capture), (capture, []))[1].append(shape)


def attention_cost(op_name: str, shape: LayerShape, batch: Batch) -> OpCost:
    """What one layer's attention over ``batch`` costs (cached per step shape)."""
    key = (op_name, shape, batch.query_lens, batch.kv_lens)
    hit = _COST_CACHE.get(key)
    if hit is not None:
        return hit
    rt = _runtime.get()
    kv = batch.kv_lens
    if shape.sliding_window:
        kv = tuple(min(k, q + shape.sliding_window) for q, k in zip(batch.query_lens, kv))
    attrs = {"query_lens": list(batch.query_lens), "seq_lens": list(kv), "num_heads": shape.num_heads,
             "num_kv_heads": shape.num_kv_heads, "head_dim": shape.head_dim}
    n = batch.num_tokens
    q_shape = (n, shape.num_heads, shape.head_dim)
    kv_shape = (n, shape.num_kv_heads, shape.head_dim)
    with rt.busy():   # a first lookup may load kernel tables (no stall meanwhile)
        cost = rt.coster.cost(op_name, [q_shape, kv_shape, kv_shape, q_shape],
                              [shape.dtype] * 4, [], attrs)
    if cost is None:   # op_mapping's engine-attention rule must price it: never charge 0 silently
        raise UnsupportedOp(op_name, f"no timing rule for {attrs}")
    if len(_COST_CACHE) > 65536:
        _COST_CACHE.clear()
    _COST_CACHE[key] = cost
    return cost


def charge_graph_attention(op_name: str, capture: Any) -> None:
    """After a replay of ``capture``: the attention it contains, for the batch being replayed."""
    rec = _GRAPH_LAYERS.get(id(capture))
    if rec is None or rec[0] is not capture or not rec[1]:
        return
    batch = current_batch()
    if batch is None:
        return
    rt = _runtime.get()
    costs = [attention_cost(op_name, shape, batch) for shape in rec[1]]
    rt.gpus.launch(sum(c.duration_ns for c in costs), f"attention in graph ({len(rec[1])} layers)", rt.clock.now())
    rt.gpus.fallback_launches += sum(c.fallback for c in costs)
