"""Map the framework's real ops onto the common op vocabulary (revati/vocab.py).

Used by the shim (live tensors) and by trace replay (Kineto op records): both describe an op
by its name, its inputs' shapes and dtypes, and a few scalar attributes. ``map_op`` answers
what GPU work the op stands for:

- ``[]``: no kernel (views, metadata, allocation-only ops);
- ``[VocabOp(...)]``: a kernel the models know (gemm, attention, norm, ...);
- ``[GenericOp(...)]``: some other kernel, known only by the bytes it touches (roofline).

Example::

    map_op("aten::mm", [(8, 4096), (4096, 11008)], ["c10::BFloat16"] * 2)
    -> [VocabOp(op='gemm', params=(('k', 4096), ('m', 8), ('n', 11008)), dtype='bf16')]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from revati import vocab

Shape = tuple[int, ...]


@dataclass(frozen=True)
class VocabOp:
    op: str
    params: tuple[tuple[str, int], ...]
    dtype: str

    @property
    def params_dict(self) -> dict[str, int]:
        return dict(self.params)


@dataclass(frozen=True)
class GenericOp:
    bytes_moved: float
    flops: float
    dtype: str
    label: str


MappedOp = VocabOp | GenericOp

# Kineto writes C++ type names; torch writes torch.<dtype>; the vocabulary has short names.
_DTYPE_NAMES = {
    "c10::bfloat16": "bf16", "c10::half": "fp16", "float": "fp32", "double": "fp64",
    "long int": "int64", "long": "int64", "int": "int32", "bool": "bool", "unsigned char": "uint8",
    "signed char": "int8", "short int": "int16", "c10::float8_e4m3fn": "fp8", "c10::float8_e5m2": "fp8",
}


def normalize_dtype(name: str | None) -> str | None:
    if name is None or name == "":
        return None
    key = str(name).strip().lower()
    if key in _DTYPE_NAMES:
        return _DTYPE_NAMES[key]
    canon = vocab.canonical_dtype(key)
    return canon if canon in vocab.DTYPE_BYTES else None


def normalize_name(name: str) -> str:
    """'aten::mm', 'aten.mm.default', 'mm' -> 'mm'; keeps custom namespaces ('_C::rms_norm')."""
    name = str(name)
    if "::" in name:
        ns, rest = name.split("::", 1)
        base = rest.split(".", 1)[0]
        return base if ns == "aten" else f"{ns}::{base}"
    parts = name.split(".")
    if len(parts) >= 2 and parts[0] == "aten":
        return parts[1]
    if len(parts) >= 2 and parts[0] not in ("aten",):
        # torch.ops-style 'ns.op.overload'
        return f"{parts[0]}::{parts[1]}" if len(parts) >= 2 else parts[0]
    return parts[0]


# Ops that launch no kernel: views, metadata and allocation-only ops.
NO_KERNEL = frozenset("""
view _unsafe_view reshape expand expand_as permute transpose t numpy_T slice select unsqueeze squeeze
as_strided alias detach detach_ split split_with_sizes chunk unbind narrow unfold view_as
empty empty_like empty_strided new_empty new_empty_strided set_ resize_ lift_fresh lift
_reshape_alias flatten unflatten movedim diagonal real imag view_as_real view_as_complex
_local_scalar_dense item is_nonzero is_same_size size stride sym_size sym_stride
record_stream _has_compatible_shallow_copy_type contiguous clone_meta
""".split())

ELEMENTWISE = frozenset("""
add add_ sub sub_ mul mul_ div div_ neg neg_ pow pow_ rsqrt rsqrt_ sqrt exp exp_ log log_
tanh tanh_ sigmoid sigmoid_ silu silu_ gelu gelu_ relu relu_ abs abs_ clamp clamp_ clamp_min
clamp_max where masked_fill masked_fill_ fill_ zero_ copy_ _to_copy to clone eq ne lt le gt ge
logical_and logical_not logical_or bitwise_and bitwise_or bitwise_not minimum maximum reciprocal
cos sin floor ceil round sign trunc fmod remainder addcmul addcdiv lerp square ones_like zeros_like
full_like rand_like randn_like full ones zeros arange cumsum cumprod triu tril
""".split())

REDUCTION_OR_GATHER = frozenset("""
softmax _softmax log_softmax _log_softmax _safe_softmax mean sum max min amax amin argmax argmin
topk sort argsort gather scatter scatter_ scatter_add_ index index_select index_put_ index_copy_
cat stack multinomial exponential_ uniform_ normal_ bernoulli_ nonzero masked_select
any all var std logsumexp embedding_dense_backward repeat repeat_interleave flip roll pad
constant_pad_nd
""".split())


def _numel(shape: Sequence[int] | None) -> int:
    if shape is None:
        return 0
    return int(math.prod(shape)) if len(shape) else 1


def _rows_cols(shape: Shape) -> tuple[int, int]:
    if not shape:
        return 1, 1
    return max(_numel(shape[:-1]), 1), int(shape[-1])


def _first_dtype(dtypes: Sequence[str | None]) -> str:
    for d in dtypes:
        nd = normalize_dtype(d)
        if nd and nd not in ("int64", "int32", "bool", "uint8", "int16"):
            return nd
    for d in dtypes:
        nd = normalize_dtype(d)
        if nd:
            return nd
    return "bf16"


def _vocab(op: str, dtype: str, **params: int) -> list[MappedOp]:
    return [VocabOp(op, tuple(sorted((k, int(v)) for k, v in params.items())), dtype)]


def _generic(label: str, shapes: Sequence[Shape | None], dtypes: Sequence[str | None],
             out_shapes: Sequence[Shape | None] = (), flops: float = 0.0) -> list[MappedOp]:
    total = 0.0
    for shape, dt in zip(shapes, dtypes):
        if shape is not None:
            total += _numel(shape) * vocab.dtype_bytes(normalize_dtype(dt) or "bf16")
    dtype = _first_dtype(dtypes)
    for shape in out_shapes:
        if shape is not None:
            total += _numel(shape) * vocab.dtype_bytes(dtype)
    return [GenericOp(total, flops, dtype, label)]


def _tensor_shapes(shapes: Sequence[Shape | None]) -> list[Shape]:
    return [tuple(s) for s in shapes if s is not None]


def map_op(name: str, shapes: Sequence[Shape | None], dtypes: Sequence[str | None],
           attrs: Mapping[str, Any] | None = None,
           out_shapes: Sequence[Shape | None] = ()) -> list[MappedOp]:
    """What GPU work one op stands for (see the module docstring).

    ``shapes``/``dtypes`` are per positional input (None where the input is not a tensor);
    ``attrs`` carries what shapes cannot tell: ``is_causal``, collective ``world_size``,
    attention ``seq_lens`` / ``query_lens`` for engine attention ops, ...
    """
    attrs = attrs or {}
    base = normalize_name(name)
    shapes = [tuple(s) if s is not None else None for s in shapes]
    dtypes = list(dtypes) + [None] * (len(shapes) - len(dtypes))
    dtype = _first_dtype(dtypes)
    ts = _tensor_shapes(shapes)

    if base in NO_KERNEL:
        return []
    if base in ("mm", "addmm", "linear", "bmm", "baddbmm", "matmul", "addmv", "mv", "_scaled_mm"):
        return _map_gemm(base, shapes, dtype)
    if base in ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                "_flash_attention_forward", "_efficient_attention_forward"):
        return _map_sdpa(ts, dtype, attrs)
    if base in _INDEXED and base != "embedding":
        return _map_indexed(base, shapes, dtypes, out_shapes)
    if base in ("embedding",) and len(ts) >= 2:
        return _vocab("embedding", dtype, tokens=_numel(ts[1]), hidden=ts[0][-1])
    if base == "_C::vocab_parallel_embedding" and ts:  # (out [tokens, hidden], ids, weight shard, ...)
        rows, cols = _rows_cols(ts[0])
        return _vocab("embedding", dtype, tokens=rows, hidden=cols)
    if base in ("rms_norm", "_fused_rms_norm", "layer_norm", "native_layer_norm", "group_norm",
                "_C::rms_norm", "_C::fused_add_rms_norm") or base in SGL_NORMS:
        x = _norm_input(base, ts)
        if x is not None:
            rows, cols = _rows_cols(x)
            return _vocab("norm", dtype, tokens=rows, hidden=cols)
    if base in ("_C::rotary_embedding", "sgl_kernel::rotary_embedding") and len(ts) >= 3:
        tokens = _numel(ts[0])
        width = (_numel(ts[1]) + _numel(ts[2])) // max(tokens, 1)
        return _vocab("rope", dtype, tokens=tokens, hidden=width)
    if base in ("sglang::apply_rope_inplace", "sglang::rotary_embedding_with_key") and len(ts) >= 2:
        q, k = (ts[0], ts[1]) if base == "sglang::apply_rope_inplace" else (ts[1], ts[2] if len(ts) > 2 else ts[1])
        tokens = q[0] if q else 1
        width = (_numel(q) + _numel(k)) // max(tokens, 1)
        return _vocab("rope", dtype, tokens=tokens, hidden=width)
    if base in ("_C::silu_and_mul", "_C::gelu_and_mul", "_C::gelu_tanh_and_mul", "sgl_kernel::silu_and_mul",
                "sgl_kernel::gelu_and_mul", "sgl_kernel::gelu_tanh_and_mul") and ts:
        rows, cols = _rows_cols(ts[0])  # ts[0] is the output [tokens, d]
        return _vocab("activation", dtype, tokens=rows, hidden=cols)
    if base == "sglang::_run_activation_inplace" and len(ts) >= 2:   # (op name, input, out)
        rows, cols = _rows_cols(ts[1])
        return _vocab("activation", dtype, tokens=rows, hidden=cols)
    if base in ENGINE_ATTENTION and attrs.get("query_lens") is not None:
        return _map_engine_attention(dtype, attrs)
    if base in KV_CACHE_WRITES and len(ts) >= 2:
        # key and value rows read, then written into their cache slots (the cache is not swept)
        moved = (_numel(ts[0]) + _numel(ts[1])) * vocab.dtype_bytes(dtype)
        return [GenericOp(2.0 * moved, 0.0, dtype, base)]
    if base in vocab.COLLECTIVES or base.startswith("c10d::") or base in (
            "all_reduce", "allreduce_", "_allgather_base_", "allgather_", "reduce_scatter_", "_reduce_scatter_base_"):
        return _map_collective(base, ts, dtypes, attrs)
    if base in ELEMENTWISE:
        shape = _largest(ts + _tensor_shapes(out_shapes))
        if shape is None:
            return _generic(base, shapes, dtypes, out_shapes)
        rows, cols = _rows_cols(shape)
        return _vocab("elementwise", dtype, tokens=rows, hidden=cols)
    return _generic(base, shapes, dtypes, out_shapes)


# Engine attention ops priced from the scheduled batch (attrs: query_lens, seq_lens per request,
# num_heads, num_kv_heads, head_dim); without those attrs they fall back to the generic rule.
ENGINE_ATTENTION = frozenset({"vllm::unified_attention_with_output", "vllm::unified_attention", "sglang::attention"})
# Ops that write new keys/values into a paged KV cache: inputs 0 and 1 are the new rows.
KV_CACHE_WRITES = frozenset({"_C_cache_ops::reshape_and_cache", "_C_cache_ops::reshape_and_cache_flash",
                             "vllm::unified_kv_cache_update", "sglang::store_cache"})


def _map_engine_attention(dtype: str, attrs: Mapping[str, Any]) -> list[MappedOp]:
    """Decode rows (one new token) as one attn_decode; prefill rows grouped by (q, kv) lengths."""
    q_lens = [int(q) for q in attrs["query_lens"]]
    kv_lens = [int(k) for k in attrs["seq_lens"]]
    heads = {"num_heads": int(attrs["num_heads"]), "num_kv_heads": int(attrs["num_kv_heads"]),
             "head_dim": int(attrs["head_dim"])}
    out: list[MappedOp] = []
    decode_kv = [k for q, k in zip(q_lens, kv_lens) if q == 1]
    if decode_kv:
        mean_kv = max(int(round(sum(decode_kv) / len(decode_kv))), 1)
        out += _vocab("attn_decode", dtype, batch_size=len(decode_kv), q_tokens=1, kv_len=mean_kv, **heads)
    groups: dict[tuple[int, int], int] = {}
    for q, k in zip(q_lens, kv_lens):
        if q > 1:
            groups[(q, max(k, q))] = groups.get((q, max(k, q)), 0) + 1
    for (q, k), n in sorted(groups.items()):
        out += _vocab("attn_prefill", dtype, batch_size=n, q_tokens=q, kv_len=k, **heads)
    return out


# Indexing ops touch only the rows they gather or scatter, never the whole indexed tensor (a
# paged KV cache can be most of the GPU's memory): bytes = the moved data read and written,
# plus the index. Values say which tensor holds the moved data: "out" or an input position.
_INDEXED: dict[str, Any] = {
    "index_select": "out", "index": "out", "gather": "out", "take": "out", "take_along_dim": "out",
    "_unsafe_index": "out", "embedding": "out",
    "index_copy_": 3, "index_copy": 3, "index_put_": 2, "index_put": 2, "_index_put_impl_": 2,
    "_unsafe_index_put": 2, "scatter_": 3, "scatter": 3, "scatter_add_": 3, "scatter_add": 3,
    "scatter_reduce_": 3, "index_add_": 3, "index_add": 3, "index_fill_": None, "masked_scatter_": 2,
    "slice_scatter": 1, "select_scatter": 1, "diagonal_scatter": 1,
}


def _map_indexed(base: str, shapes: list[Shape | None], dtypes: list[str | None],
                 out_shapes: Sequence[Shape | None]) -> list[MappedOp]:
    which = _INDEXED[base]
    dtype = _first_dtype(dtypes)
    index_bytes = sum(_numel(s) * vocab.dtype_bytes(normalize_dtype(d) or "int64")
                      for s, d in zip(shapes, dtypes)
                      if s is not None and normalize_dtype(d) in ("int64", "int32", "bool"))
    if which == "out":
        moved = sum(_numel(s) for s in out_shapes if s is not None)
    elif which is None:
        moved = index_bytes / 8.0 * (_numel(shapes[0]) / max(_numel(shapes[0][:1]), 1) if shapes and shapes[0] else 1)
    else:
        src = shapes[which] if which < len(shapes) else None
        moved = _numel(src) if src is not None else 0
    return [GenericOp(2.0 * moved * vocab.dtype_bytes(dtype) + index_bytes, 0.0, dtype, base)]


def _largest(shapes: Sequence[Shape]) -> Shape | None:
    return max(shapes, key=_numel) if shapes else None


# SGLang's norms (sgl-kernel): rmsnorm(out, input, weight, ...), fused_add_rmsnorm(input, residual, ...)
SGL_NORMS = frozenset({"sgl_kernel::rmsnorm", "sgl_kernel::fused_add_rmsnorm", "sgl_kernel::gemma_rmsnorm",
                       "sgl_kernel::gemma_fused_add_rmsnorm"})


def _norm_input(base: str, ts: list[Shape]) -> Shape | None:
    if not ts:
        return None
    if base in ("_C::rms_norm", "sgl_kernel::rmsnorm", "sgl_kernel::gemma_rmsnorm"):  # (out, input, weight, eps)
        return ts[1] if len(ts) > 1 else ts[0]
    return ts[0]


def _map_gemm(base: str, shapes: list[Shape | None], dtype: str) -> list[MappedOp]:
    ts = _tensor_shapes(shapes)
    if base == "linear" and len(ts) >= 2:
        m, k = _rows_cols(ts[0])
        return _vocab("gemm", dtype, m=m, n=ts[1][0], k=k)
    if base in ("addmm", "baddbmm", "addmv") and len(ts) >= 3:
        ts = ts[1:]
    if base in ("mv",) and len(ts) >= 2:
        return _vocab("gemm", dtype, m=ts[0][0], n=1, k=ts[0][-1])
    if base == "addmv" and len(ts) >= 2:
        return _vocab("gemm", dtype, m=ts[0][0], n=1, k=ts[0][-1])
    if len(ts) < 2:
        return _generic(base, shapes, [dtype] * len(shapes))
    a, b = ts[0], ts[1]
    if len(a) == 2 and len(b) == 2:
        return _vocab("gemm", dtype, m=a[0], n=b[1], k=a[1])
    # batched: fold the batch into m (same FLOPs; the kernel is one batched GEMM)
    batch = _numel(a[:-2]) if len(a) > 2 else 1
    m = a[-2] if len(a) >= 2 else 1
    k = a[-1]
    n = b[-1] if len(b) >= 2 else 1
    return _vocab("gemm", dtype, m=batch * m, n=n, k=k)


def _map_sdpa(ts: list[Shape], dtype: str, attrs: Mapping[str, Any]) -> list[MappedOp]:
    if len(ts) < 3 or len(ts[0]) != 4:
        return _generic("sdpa", ts, [dtype] * len(ts))
    q, k = ts[0], ts[1]
    batch, heads, q_len, head_dim = q
    kv_heads, kv_len = k[1], k[2]
    family = "attn_decode" if q_len == 1 else "attn_prefill"
    return _vocab(family, dtype, batch_size=batch, q_tokens=q_len, kv_len=kv_len,
                  num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim)


def _map_collective(base: str, ts: list[Shape], dtypes: Sequence[str | None],
                    attrs: Mapping[str, Any]) -> list[MappedOp]:
    world = int(attrs.get("world_size", 1))
    dtype = _first_dtype(dtypes)
    if "message_bytes" in attrs:
        size = int(attrs["message_bytes"])
    else:
        size = int(sum(_numel(s) for s in ts[:1]) * vocab.dtype_bytes(dtype))
    if "gather" in base:
        family = "all_gather"
    elif "scatter" in base:
        family = "reduce_scatter"
    elif "send" in base or "recv" in base:
        family = "send_recv"
    else:
        family = "all_reduce"
    return _vocab(family, dtype, message_bytes=size, world_size=world)
