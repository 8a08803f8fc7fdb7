"""SGLang attention on the virtual GPU, timed from the batch SGLang scheduled.

As for vLLM (Note [vLLM attention timing], engines.attention_timing): every attention backend's
``forward(q, k, v, layer, forward_batch)`` is wrapped. The kernels it launches (Triton, FA3)
run as usual under the shim but are not priced by their arguments -- those hold the whole KV
cache pool -- and one attention op per layer is charged for the step's batch, read from the
ForwardBatch's host copies: per request, query length = tokens extended this step (1 in
decode), KV length = the sequence length (cached prefix included). The KV-cache store inside
``forward`` is priced as the op it is. Inside a CUDA-graph capture the layer is recorded, and
each replay of SGLang's decode graphs charges it for the batch replayed.
"""

from __future__ import annotations

from typing import Any

from revati.shim import runtime as _runtime
from revati.shim.engines.attention_timing import (
    Batch, LayerShape, attention_cost, batch_scope, charge_graph_attention, current_batch, kernels_priced_by_batch,
    record_graph_layer)
from revati.shim.patching import original, patch
from revati.shim.shim_call import ShimCall

ATTENTION_OP = "sglang::attention"   # the name its cost is looked up under (replay.op_mapping)


def _ints(values: Any) -> tuple[int, ...] | None:
    if values is None:
        return None
    if hasattr(values, "tolist"):
        values = values.tolist()
    return tuple(int(v) for v in values)


def batch_of(forward_batch: Any) -> Batch | None:
    """The batch a ForwardBatch describes, from its host-side lengths."""
    seq = _ints(getattr(forward_batch, "seq_lens_cpu", None))
    if not seq:
        return None
    mode = forward_batch.forward_mode
    if mode.is_decode():
        return Batch((1,) * len(seq), tuple(max(s, 1) for s in seq), "forward_batch")
    ext = _ints(getattr(forward_batch, "extend_seq_lens_cpu", None))
    if ext is None or len(ext) != len(seq):
        return None
    return Batch(tuple(max(e, 1) for e in ext), tuple(max(s, e, 1) for s, e in zip(seq, ext)), "forward_batch")


def layer_shape(layer: Any, q: Any) -> LayerShape:
    window = int(getattr(layer, "sliding_window_size", -1) or -1)
    return LayerShape(int(layer.tp_q_head_num), int(layer.tp_k_head_num), int(layer.qk_head_dim), q.dtype,
                      window + 1 if window > 0 else None)


# The last step's batch, with the objects it was read from (held, so their ids cannot be reused):
# every layer of a step asks for the same batch.
_STEP: list = [None, None, None, None]   # forward_batch, seq_lens_cpu, extend_seq_lens_cpu, Batch


def step_batch(forward_batch: Any) -> Batch | None:
    seq = getattr(forward_batch, "seq_lens_cpu", None)
    ext = getattr(forward_batch, "extend_seq_lens_cpu", None)
    if _STEP[0] is forward_batch and _STEP[1] is seq and _STEP[2] is ext:
        return _STEP[3]
    batch = batch_of(forward_batch)
    _STEP[:] = [forward_batch, seq, ext, batch]
    return batch


def _fallback_batch(q: Any, forward_batch: Any) -> Batch:
    tokens = max(int(q.shape[0]), 1)
    if forward_batch.forward_mode.is_decode():
        return Batch((1,) * tokens, (1,) * tokens, "tokens")
    return Batch((tokens,), (tokens,), "tokens")


def install(mod: Any) -> None:
    """On import of sglang.srt.layers.attention.base_attn_backend."""
    backend = mod.AttentionBackend
    real_forward = original(backend, "forward")

    def forward(self, q, k, v, layer, forward_batch, save_kv_cache=True, **kwargs):
        rt = _runtime.get()
        host_now = rt.clock.now()
        with kernels_priced_by_batch():
            out = real_forward(self, q, k, v, layer, forward_batch, save_kv_cache=save_kv_cache, **kwargs)
        if forward_batch.forward_mode.is_idle():
            return out
        with ShimCall(rt):   # revati's bookkeeping, not the program's host time
            shape = layer_shape(layer, q)
            cap = rt.gpus.capture
            if cap is not None:
                record_graph_layer(cap, shape)
                return out
            batch = current_batch() or step_batch(forward_batch) or _fallback_batch(q, forward_batch)
            ns, label, fallback = attention_cost(ATTENTION_OP, shape, batch)
            dev = q._dev if hasattr(q, "_dev") else rt.gpus.current_device()
            rt.gpus.launch(ns, label, host_now, dev, fallback=fallback)
        return out

    patch(backend, "forward", forward)


def install_graph_replay(mod: Any) -> None:
    """On import of sglang.srt.model_executor.runner.decode_cuda_graph_runner: a decode graph
    replay charges the attention of the layers it captured, for the batch replayed."""
    runner = mod.DecodeCudaGraphRunner
    real_execute = original(runner, "execute")

    def execute(self, forward_batch, *args, **kwargs):
        rt = _runtime.get()
        before = rt.gpus.graph_replays
        with ShimCall(rt):
            batch = batch_of(forward_batch)
        with batch_scope(batch):
            out = real_execute(self, forward_batch, *args, **kwargs)
            if rt.gpus.graph_replays > before and rt.gpus.last_replayed is not None:
                with ShimCall(rt):
                    charge_graph_attention(ATTENTION_OP, rt.gpus.last_replayed)
        return out

    patch(runner, "execute", execute)
