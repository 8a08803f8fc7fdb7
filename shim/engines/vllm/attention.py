"""vLLM attention on the virtual GPU, timed from the batch vLLM actually scheduled.

# Note [vLLM attention timing]
# vLLM's model code calls attention as one opaque custom op per layer,
# ``vllm::unified_attention_with_output(query, key, value, output, layer_name)``, which looks
# up the layer's metadata in the forward context and runs the backend's kernels
# (FlashAttention varlen, FlashInfer, ...). Its cost depends on every sequence's query and KV
# length -- values, not shapes -- so the shape-keyed op cache cannot price it. Instead:
#   - ``Worker.execute_model`` is wrapped to note the step's batch from the SchedulerOutput:
#     per request, query length = tokens scheduled this step, KV length = tokens already
#     computed + scheduled (cached prefix included). This is what the attention kernel sees,
#     on either model runner and with any attention backend;
#   - the op is handled whole (never decomposed, no backend kernel runs): its output already
#     exists, and one kernel is charged to the current stream, priced by
#     revati.replay.op_mapping's engine-attention rule (decode rows as one attn_decode,
#     prefill rows as attn_prefill) from the layer's heads/head size and the batch;
#   - outside execute_model (the profiling and warm-up dummy runs) the batch comes from the
#     layer's attention metadata: its small tensors carry real values, else max lengths;
#   - inside a CUDA-graph capture nothing is charged; the layers seen are recorded with the
#     graph, and each replay charges them for the batch being replayed (a real graph reads
#     the sequence lengths from device memory, so its attention time follows the batch).
"""

from __future__ import annotations

from typing import Any

import torch

from revati.errors import UnsupportedEngine
from revati.shim import runtime as _runtime
from revati.shim.engines.attention_timing import (
    Batch, LayerShape, attention_cost, batch_scope, charge_graph_attention, current_batch, record_graph_layer)
from revati.shim.patching import patch

ATTENTION_OPS = ("unified_attention_with_output",)
ATTENTION_OP = "vllm::unified_attention_with_output"   # the name its cost is looked up under


# The SchedulerOutput fields the batch is read from: a vLLM release that renames one must fail
# here, by name, not time every step's attention as an empty batch.
SCHEDULER_FIELDS = ("num_scheduled_tokens", "scheduled_new_reqs", "scheduled_cached_reqs")


def _field(so: Any, name: str) -> Any:
    try:
        return getattr(so, name)
    except AttributeError:
        raise UnsupportedEngine("vllm", _vllm_version(), f"its SchedulerOutput has no {name!r} "
                                f"(revati reads {', '.join(SCHEDULER_FIELDS)})") from None


def _vllm_version() -> str:
    import sys

    return getattr(sys.modules.get("vllm"), "__version__", "?")


def batch_from_scheduler_output(so: Any) -> Batch | None:
    scheduled: dict = _field(so, "num_scheduled_tokens")
    if not scheduled:      # an empty step (vLLM sends those too)
        return None
    computed: dict[str, int] = {}
    for req in _field(so, "scheduled_new_reqs"):
        computed[req.req_id] = int(req.num_computed_tokens)
    cached = _field(so, "scheduled_cached_reqs")
    if cached is not None:
        for rid, n in zip(cached.req_ids, cached.num_computed_tokens):
            computed[rid] = int(n)
    q = tuple(int(v) for v in scheduled.values())
    kv = tuple(computed.get(rid, 0) + int(n) for rid, n in scheduled.items())
    return Batch(q, kv, "scheduler")


def _values(t: Any) -> list[int] | None:
    from revati.shim.vtensor import is_virtual, value_of

    if t is None:
        return None
    if is_virtual(t):
        v = value_of(t)
        return None if v is None else [int(x) for x in v.reshape(-1).tolist()]
    if isinstance(t, torch.Tensor) and t.device.type == "cpu":
        return [int(x) for x in t.reshape(-1).tolist()]
    return None


def batch_from_metadata(md: Any, num_tokens: int) -> Batch:
    """The batch a dummy run's attention metadata describes (values where known, else maxima)."""
    qsl = _values(getattr(md, "query_start_loc", None))
    seq = _values(getattr(md, "seq_lens", None))
    if qsl is not None and seq is not None and len(qsl) == len(seq) + 1:
        q = tuple(max(b - a, 0) for a, b in zip(qsl[:-1], qsl[1:]))
        return Batch(q, tuple(max(s, 1) for s in seq), "metadata")
    qsl_t = getattr(md, "query_start_loc", None)
    num_reqs = max(int(qsl_t.shape[0]) - 1, 1) if isinstance(qsl_t, torch.Tensor) else 1
    max_q = int(getattr(md, "max_query_len", 0) or max(num_tokens // num_reqs, 1))
    max_kv = int(getattr(md, "max_seq_len", 0) or max_q)
    per_req = max(min(max_q, num_tokens // num_reqs), 1)
    return Batch((per_req,) * num_reqs, (max(max_kv, per_req),) * num_reqs, "metadata-max")


def _layer_shape(layer: Any, query: torch.Tensor) -> LayerShape:
    impl = getattr(layer, "impl", None)
    window = getattr(impl, "sliding_window", None)
    if isinstance(window, (tuple, list)):
        window = int(window[0]) + 1 if window and window[0] is not None and window[0] >= 0 else None
    elif window is not None:
        window = int(window) if int(window) > 0 else None
    return LayerShape(int(layer.num_heads), int(layer.num_kv_heads), int(layer.head_size),
                      query.dtype, window)


def _resolve(layer_name: Any) -> str:
    if isinstance(layer_name, str):
        return layer_name
    from vllm.utils.torch_utils import _resolve_layer_name

    return _resolve_layer_name(layer_name)


def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def handle_attention(func, args, kwargs):
    """VTensor handler for vllm::unified_attention_with_output (Note [vLLM attention timing])."""
    from vllm.forward_context import get_forward_context

    rt = _runtime.get()
    host_now = rt.clock.now()
    query = _arg(args, kwargs, 0, "query")
    name = _resolve(_arg(args, kwargs, 4, "layer_name"))
    ctx = get_forward_context()
    layer = ctx.no_compile_layers[name]
    shape = _layer_shape(layer, query)
    cap = rt.gpus.capture
    if cap is not None:
        record_graph_layer(cap, shape)
        return None
    batch = current_batch()
    num_tokens = int(query.shape[0])
    if batch is None or batch.num_tokens > num_tokens:
        md = ctx.attn_metadata
        if isinstance(md, list):
            md = md[0]
        if isinstance(md, dict):
            md = md.get(name)
        batch = batch_from_metadata(md, num_tokens)
    ns, label, fallback = attention_cost(ATTENTION_OP, shape, batch)
    dev = query._dev if hasattr(query, "_dev") else rt.gpus.current_device()
    rt.gpus.launch(ns, label, host_now, dev, fallback=fallback)
    rt.clock.charge(rt.config.launch_overhead_ns)
    return None


# -- installation (import hooks) ------------------------------------------------------------------

def install_attention_op(mod: Any) -> None:
    """On import of vllm.model_executor.layers.attention.attention: handle the attention op."""
    from revati.shim.special_ops import register_special

    for name in ATTENTION_OPS:
        packet = getattr(torch.ops.vllm, name, None)
        if packet is not None:
            register_special(packet.default, handle_attention)


def track_batches(mod: Any) -> None:
    """On import of vllm.v1.worker.gpu_worker: note each step's scheduled batch."""
    worker_cls = mod.Worker
    real = worker_cls.execute_model
    if getattr(real, "__revati__", False):
        return

    def execute_model(self, scheduler_output, *args, **kwargs):
        with batch_scope(batch_from_scheduler_output(scheduler_output)):
            return real(self, scheduler_output, *args, **kwargs)

    execute_model.__revati__ = True
    execute_model.__wrapped__ = real
    execute_model.__name__ = real.__name__
    execute_model.__qualname__ = real.__qualname__
    patch(worker_cls, "execute_model", execute_model)


def patch_graph_wrapper(mod: Any) -> None:
    """On import of vllm.compilation.cuda_graph: charge in-graph attention at each replay."""
    cls = mod.CUDAGraphWrapper
    real = cls.__call__
    if getattr(real, "__revati__", False):
        return

    def call(self, *args, **kwargs):
        rt = _runtime.get()
        before = rt.gpus.graph_replays
        out = real(self, *args, **kwargs)
        if rt.gpus.graph_replays > before:
            ctx = mod.get_forward_context()
            entry = self.concrete_cudagraph_entries.get(ctx.batch_descriptor)
            graph = getattr(entry, "cudagraph", None)
            cap = getattr(graph, "capture", None)
            if cap is not None:
                charge_graph_attention(ATTENTION_OP, cap)
        return out

    call.__revati__ = True
    call.__wrapped__ = real
    cls.__call__ = call
