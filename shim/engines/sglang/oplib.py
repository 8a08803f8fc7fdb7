"""sgl-kernel's compiled op library, for a CPU build of torch: schemas and shape rules, no kernels.

# Note [sgl-kernel ops on a CPU build]
# SGLang's CUDA code path imports ``sgl_kernel`` (the ``sglang-kernel`` wheel) unguarded; the
# wheel's Python package calls its kernels as ``torch.ops.sgl_kernel.*``, registered by the
# compiled ``common_ops`` (and, for FA3, ``sgl_kernel.flash_ops``). Those ``.so`` files link
# libtorch_cuda and the CUDA runtime, so on torch's CPU build they cannot load:
# ``sgl_kernel.load_utils`` then falls back to a plain ``import common_ops``, which this finder
# answers with a module that defines the ops with the wheel's schemas (sglang-kernel 0.4.10,
# read from its binaries; docs/sglang.md) and Meta kernels (engines.op_library). The wheel's
# Python wrappers run unchanged on top. The CPU ops SGLang probes for (``convert_weight_packed``,
# ``*_cpu``) are deliberately absent: their presence switches SGLang to its CPU code path.
# With a CUDA build of torch the real libraries load and this finder only adds Meta kernels.
"""

from __future__ import annotations

from typing import Callable

import torch

from revati.shim.engines import op_library

SUPPORTED_KERNEL_VERSION = "0.4.10"

# sglang-kernel 0.4.10's common_ops, the ops a dense model (and its sampler, grammar masks and
# KV-cache transfers) reaches; the MoE/quantised-GEMM entries are kept so those layers import.
_COMMON_OPS = [
    "rmsnorm(Tensor! output, Tensor input, Tensor weight, float eps, bool enable_pdl) -> ()",
    "fused_add_rmsnorm(Tensor! input, Tensor! residual, Tensor weight, float eps, bool enable_pdl) -> ()",
    "gemma_rmsnorm(Tensor! output, Tensor input, Tensor weight, float eps, bool enable_pdl) -> ()",
    "gemma_fused_add_rmsnorm(Tensor! input, Tensor! residual, Tensor weight, float eps, bool enable_pdl) -> ()",
    "silu_and_mul(Tensor! out, Tensor input) -> ()",
    "gelu_tanh_and_mul(Tensor! out, Tensor input) -> ()",
    "gelu_and_mul(Tensor! out, Tensor input) -> ()",
    "rotary_embedding(Tensor positions, Tensor! query, Tensor!? key, int head_size, Tensor cos_sin_cache, "
    "bool is_neox) -> ()",
    "merge_state_v2(Tensor v_a, Tensor s_a, Tensor v_b, Tensor s_b, Tensor! v_merged, Tensor! s_merged) -> ()",
    "copy_to_gpu_no_ce(Tensor input, Tensor! output) -> ()",
    "weak_ref_tensor(Tensor tensor) -> Tensor",
    "top_k_renorm_probs(Tensor probs, Tensor! renorm_probs, Tensor? maybe_top_k_arr, int top_k_val) -> ()",
    "top_p_renorm_probs(Tensor probs, Tensor! renorm_probs, Tensor? maybe_top_p_arr, float top_p_val) -> ()",
    "apply_token_bitmask_inplace_cuda(Tensor logits, Tensor bitmask, Tensor? indices=None) -> ()",
    "int8_scaled_mm(Tensor mat_a, Tensor mat_b, Tensor scales_a, Tensor scales_b, ScalarType out_dtype, "
    "Tensor? bias) -> Tensor",
    "fp8_scaled_mm(Tensor mat_a, Tensor mat_b, Tensor scales_a, Tensor scales_b, ScalarType out_dtype, "
    "Tensor? bias) -> Tensor",
    "sgl_per_token_group_quant_8bit(Tensor input, Tensor! output_q, Tensor! output_s, int group_size, "
    "float eps, float fp8_min, float fp8_max, bool scale_ue8m0) -> ()",
    "sgl_per_token_quant_fp8(Tensor input, Tensor! output_q, Tensor! output_s) -> ()",
    "moe_align_block_size(Tensor topk_ids, int num_experts, int block_size, Tensor! sorted_token_ids, "
    "Tensor! experts_ids, Tensor! num_tokens_post_pad, Tensor! cumsum_buffer, bool pad_sorted_token_ids, "
    "bool ignore_invalid_expert) -> ()",
    "topk_softmax(Tensor! topk_weights, Tensor! topk_indices, Tensor gating_output, bool renormalize, "
    "float moe_softcapping, Tensor? correction_bias) -> ()",
    "moe_sum_reduce(Tensor input, Tensor output, float routed_scaling_factor) -> ()",
    "moe_sum(Tensor input, Tensor! output) -> ()",
    "transfer_kv_per_layer(Tensor src_k, Tensor dst_k, Tensor src_v, Tensor dst_v, Tensor src_indices, "
    "Tensor dst_indices, int item_size, int block_quota, int num_warps_per_block) -> ()",
    "transfer_kv_all_layer(Tensor src_k_layers, Tensor dst_k_layers, Tensor src_v_layers, "
    "Tensor dst_v_layers, Tensor src_indices, Tensor dst_indices, int item_size, int num_layers, "
    "int block_quota, int num_warps_per_block) -> ()",
]
# sglang-kernel 0.4.10's flash_ops (FlashAttention 3).
_FLASH_OPS = [
    # as in the binary, except that ``out`` is not declared as aliased by the first result (the
    # stand-in allocates its results: SGLang reads them, never the aliasing)
    "fwd(Tensor q, Tensor k, Tensor v, Tensor? k_new, Tensor? v_new, Tensor? q_v, Tensor? out, "
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? cu_seqlens_k_new, Tensor? seqused_q, "
    "Tensor? seqused_k, int? max_seqlen_q, int? max_seqlen_k, Tensor? page_table, Tensor? kv_batch_idx, "
    "Tensor? leftpad_k, Tensor? rotary_cos, Tensor? rotary_sin, Tensor? seqlens_rotary, Tensor? q_descale, "
    "Tensor? k_descale, Tensor? v_descale, float? softmax_scale, bool is_causal, int window_size_left, "
    "int window_size_right, int attention_chunk, float softcap, bool is_rotary_interleaved, "
    "Tensor? scheduler_metadata, int num_splits, bool? pack_gqa, int sm_margin, Tensor? sinks, "
    "Tensor? sparse_mask_fine, bool only_qv) -> (Tensor, Tensor, Tensor, Tensor)",
    "get_scheduler_metadata(int batch_size, int max_seqlen_q, int max_seqlen_k, int num_heads, "
    "int num_heads_k, int headdim, int headdim_v, ScalarType qkv_dtype, Tensor seqused_k, "
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? cu_seqlens_k_new, Tensor? seqused_q, "
    "Tensor? leftpad_k, int? page_size, int max_seqlen_k_new=0, bool is_causal=False, "
    "int window_size_left=-1, int window_size_right=-1, int attention_chunk=0, bool has_softcap=False, "
    "int num_splits=0, bool? pack_gqa=None, int sm_margin=0) -> Tensor",
]

# module name -> namespaces it registers
EXTENSIONS: dict[str, dict[str, list[str]]] = {
    "common_ops": {"sgl_kernel": _COMMON_OPS},
    "sgl_kernel.flash_ops": {"sgl_kernel": _FLASH_OPS},
}


def _new_like(t: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    return t.new_empty(tuple(shape), dtype=dtype or t.dtype)


def _scaled_mm_meta(mat_a, mat_b, scales_a, scales_b, out_dtype, bias=None):
    return _new_like(mat_a, (mat_a.shape[0], mat_b.shape[1]), out_dtype)


def _fa3_fwd_meta(q, k, v, k_new, v_new, q_v, out, cu_seqlens_q, *args, **kwargs):
    o = _new_like(q, (*q.shape[:-1], v.shape[-1]))
    heads = q.shape[-2]
    # softmax_lse is [heads, total_q] for varlen calls (SGLang always passes cu_seqlens_q); the
    # last two outputs are split-KV accumulators SGLang never reads.
    lse_shape = (heads, q.shape[0]) if cu_seqlens_q is not None else (q.shape[0], heads, q.shape[1])
    lse = _new_like(q, lse_shape, torch.float32)
    return o, lse, _new_like(q, (0,), torch.float32), _new_like(q, (0,), torch.float32)


def _scheduler_metadata_meta(batch_size, max_seqlen_q, max_seqlen_k, num_heads, num_heads_k, headdim,
                             headdim_v, qkv_dtype, seqused_k, *args, **kwargs):
    # An int32 work list for FA3's persistent tile scheduler, only ever passed back into ``fwd``.
    return seqused_k.new_empty((int(batch_size) + 1,), dtype=torch.int32)


_META_RULES: dict[str, Callable] = {
    "sgl_kernel::int8_scaled_mm": _scaled_mm_meta,
    "sgl_kernel::fp8_scaled_mm": _scaled_mm_meta,
    "sgl_kernel::fwd": _fa3_fwd_meta,
    "sgl_kernel::get_scheduler_metadata": _scheduler_metadata_meta,
}


def _fa3_fwd(func, args, kwargs):
    # FA3 is attention: its time is the scheduled batch's, charged per layer by the backend
    # wrapper (engines.sglang.attention); its arguments hold the whole paged KV cache. So the op
    # is handled whole: its results are allocated and nothing is priced here.
    bound = dict(zip(("q", "k", "v", "k_new", "v_new", "q_v", "out", "cu_seqlens_q"), args))
    bound.update(kwargs)
    return _fa3_fwd_meta(bound["q"], bound["k"], bound["v"], None, None, None, None, bound.get("cu_seqlens_q"))


def _weak_ref(func, args, kwargs):
    # A tensor sharing the input's memory without keeping it alive.
    from revati.shim.vtensor import weak_view

    return weak_view(args[0])


TABLES = op_library.OpTables(meta_rules=_META_RULES, special_handlers={"sgl_kernel::weak_ref_tensor": _weak_ref,
                                                                        "sgl_kernel::fwd": _fa3_fwd})


class _Finder(op_library.ExtensionFinder):
    def real_loads(self, spec) -> bool:
        # The wheel's flash_ops.abi3.so is found on disk but links libtorch_cuda: with torch's CPU
        # build (torch.version.cuda as the build set it, before the adapter presents a CUDA one)
        # the stand-in is used.
        from revati.shim.engines.sglang import platform

        return platform.torch_built_with_cuda()


_FINDER = _Finder(EXTENSIONS, TABLES,
                  stand_in_doc="revati stand-in for an sgl-kernel CUDA library (see revati.shim.engines.sglang.oplib)")


def install_finder() -> None:
    op_library.install_finder(_FINDER)
