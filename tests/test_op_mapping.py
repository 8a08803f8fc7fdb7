from __future__ import annotations

import pytest

from revati.replay.op_mapping import GenericOp, VocabOp, map_op, normalize_dtype, normalize_name


@pytest.mark.parametrize("raw, expected", [
    ("aten::mm", "mm"), ("aten.mm.default", "mm"), ("mm", "mm"),
    ("_C::rms_norm", "_C::rms_norm"), ("aten::add_.Tensor", "add_"),
])
def test_normalize_name(raw, expected):
    assert normalize_name(raw) == expected


def test_dtype_names_from_kineto_and_torch():
    assert normalize_dtype("c10::BFloat16") == "bf16"
    assert normalize_dtype("torch.float16") == "fp16"
    assert normalize_dtype("long int") == "int64"
    assert normalize_dtype("Scalar") is None


def test_gemm_family():
    (op,) = map_op("aten::mm", [(8, 4096), (4096, 11008)], ["c10::BFloat16"] * 2)
    assert op == VocabOp("gemm", (("k", 4096), ("m", 8), ("n", 11008)), "bf16")
    (op,) = map_op("aten::linear", [(4, 128, 4096), (12288, 4096), None], ["c10::Half", "c10::Half", None])
    assert op.params_dict == {"m": 512, "n": 12288, "k": 4096} and op.dtype == "fp16"
    (op,) = map_op("aten::addmm", [(11008,), (8, 4096), (4096, 11008)], ["float"] * 3)
    assert op.params_dict == {"m": 8, "n": 11008, "k": 4096} and op.dtype == "fp32"
    (op,) = map_op("aten::bmm", [(32, 7, 128), (32, 128, 9)], ["c10::BFloat16"] * 2)
    assert op.params_dict == {"m": 224, "n": 9, "k": 128}


def test_sdpa_prefill_and_decode():
    q, kv = (2, 32, 128, 128), (2, 8, 128, 128)
    (op,) = map_op("aten::scaled_dot_product_attention", [q, kv, kv], ["c10::BFloat16"] * 3)
    assert op.op == "attn_prefill"
    assert op.params_dict == {"batch_size": 2, "q_tokens": 128, "kv_len": 128, "num_heads": 32,
                              "num_kv_heads": 8, "head_dim": 128}
    (op,) = map_op("aten::_scaled_dot_product_flash_attention",
                   [(4, 32, 1, 128), (4, 32, 300, 128), (4, 32, 300, 128)], ["c10::Half"] * 3)
    assert op.op == "attn_decode" and op.params_dict["kv_len"] == 300


def test_views_launch_nothing_and_unknown_ops_are_generic():
    assert map_op("aten::view", [(4, 4)], ["float"]) == []
    assert map_op("aten::transpose", [(4, 4)], ["float"]) == []
    (op,) = map_op("aten::softmax", [(2, 1000)], ["float"], out_shapes=[(2, 1000)])
    assert isinstance(op, GenericOp) and op.bytes_moved == 2 * 1000 * 4 * 2


def test_elementwise_norm_embedding_and_vllm_custom_ops():
    (op,) = map_op("aten::add", [(16, 4096), (16, 4096)], ["c10::BFloat16"] * 2)
    assert op == VocabOp("elementwise", (("hidden", 4096), ("tokens", 16)), "bf16")
    (op,) = map_op("aten::embedding", [(32000, 4096), (3, 7)], ["c10::Half", "long int"])
    assert op.op == "embedding" and op.params_dict == {"tokens": 21, "hidden": 4096} and op.dtype == "fp16"
    (op,) = map_op("_C::rms_norm", [(16, 4096), (16, 4096), (4096,), None], ["c10::BFloat16"] * 3 + [None])
    assert op.op == "norm" and op.params_dict == {"tokens": 16, "hidden": 4096}
    (op,) = map_op("_C::rotary_embedding", [(16,), (16, 4096), (16, 1024), None, (4096, 128)],
                   ["long int", "c10::BFloat16", "c10::BFloat16", None, "c10::BFloat16"])
    assert op.op == "rope" and op.params_dict == {"tokens": 16, "hidden": 5120} and op.dtype == "bf16"
    (op,) = map_op("_C::silu_and_mul", [(16, 11008), (16, 22016)], ["c10::BFloat16"] * 2)
    assert op.op == "activation" and op.params_dict == {"tokens": 16, "hidden": 11008}


def test_collectives_take_world_size_from_attrs():
    (op,) = map_op("c10d::allreduce_", [(16, 4096)], ["c10::BFloat16"], attrs={"world_size": 4})
    assert op.op == "all_reduce" and op.params_dict == {"message_bytes": 16 * 4096 * 2, "world_size": 4}


def test_indexing_ops_cost_the_moved_rows_not_the_indexed_tensor():
    cache = (100_000, 32, 128)  # a big paged KV cache, 800 MB in bf16
    (op,) = map_op("aten::index_select", [cache, None, (64,)], ["c10::BFloat16", None, "long int"],
                   out_shapes=[(64, 32, 128)])
    assert op.bytes_moved == 2 * 64 * 32 * 128 * 2 + 64 * 8
    (op,) = map_op("aten::index_copy_", [cache, None, (16,), (16, 32, 128)],
                   ["c10::BFloat16", None, "long int", "c10::BFloat16"], out_shapes=[cache])
    assert op.bytes_moved == 2 * 16 * 32 * 128 * 2 + 16 * 8


def test_sglang_ops_map_to_the_same_kernels_as_vllms():
    bf16 = "c10::BFloat16"
    (op,) = map_op("sgl_kernel::rmsnorm", [(16, 4096), (16, 4096), (4096,), None, None], [bf16] * 3 + [None] * 2)
    assert op.op == "norm" and op.params_dict == {"tokens": 16, "hidden": 4096}
    (op,) = map_op("sgl_kernel::fused_add_rmsnorm", [(16, 4096), (16, 4096), (4096,), None, None], [bf16] * 3)
    assert op.op == "norm" and op.params_dict == {"tokens": 16, "hidden": 4096}
    # apply_rope_inplace(q [T, heads, rot], k [T, kv heads, rot], cos_sin_cache, positions)
    (op,) = map_op("sglang::apply_rope_inplace", [(16, 32, 128), (16, 8, 128), (4096, 128), (16,)],
                   [bf16, bf16, "float", "long int"])
    assert op.op == "rope" and op.params_dict == {"tokens": 16, "hidden": 5120}
    # _run_activation_inplace(op name, input [T, 2d], out [T, d])
    (op,) = map_op("sglang::_run_activation_inplace", [None, (16, 22016), (16, 11008)], [None, bf16, bf16])
    assert op.op == "activation" and op.params_dict == {"tokens": 16, "hidden": 11008}
    # store_cache(k, v, k_cache, v_cache, indices): the rows written, never the cache pool
    pool = (400_000, 8 * 128)
    (op,) = map_op("sglang::store_cache", [(16, 8 * 128), (16, 8 * 128), pool, pool, (16,)], [bf16] * 4 + ["long int"])
    assert op.bytes_moved == 2.0 * (2 * 16 * 8 * 128) * 2
    # attention priced from the scheduled batch
    attrs = {"query_lens": [1, 1, 7], "seq_lens": [100, 50, 7], "num_heads": 32, "num_kv_heads": 8, "head_dim": 128}
    ops = map_op("sglang::attention", [(9, 32, 128)], [bf16], attrs=attrs)
    assert [o.op for o in ops] == ["attn_decode", "attn_prefill"]
