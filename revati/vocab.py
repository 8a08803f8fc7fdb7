"""The common op vocabulary shared by the importers, the models and the shim.

Every timed op is one of these families with integer shape parameters and a dtype. The
importers write rows of ``op_samples`` in it, the models are fitted per family on it, and the
shim maps the framework's real ops (``aten::mm``, ``_C.rms_norm``, NCCL all-reduce, ...) onto
it before asking the predictor.

Analytic work per family (FLOPs and bytes moved) lives here too, because both the feature
computation of the models and the roofline fallback use it. Pure Python: no torch import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from revati.errors import UnsupportedOp

DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5,
    "fp64": 8.0, "int32": 4.0, "int64": 8.0, "bool": 1.0, "uint8": 1.0, "int16": 2.0,
}

# Names seen in sources and in torch, mapped to the vocabulary's dtype names.
DTYPE_ALIASES: dict[str, str] = {
    "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
    "bfloat16": "bf16", "torch.bfloat16": "bf16",
    "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
    "float8": "fp8", "fp8_e4m3": "fp8", "float8_e4m3fn": "fp8", "torch.float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8", "fp8_block": "fp8",
    "int8_wo": "int8", "int4_wo": "int4",
    "float64": "fp64", "double": "fp64", "torch.float64": "fp64",
    "int64": "int64", "long": "int64", "torch.int64": "int64",
    "int32": "int32", "int": "int32", "torch.int32": "int32",
    "bool": "bool", "torch.bool": "bool", "uint8": "uint8", "torch.uint8": "uint8",
}


def canonical_dtype(name: str) -> str:
    key = str(name).strip().lower()
    if key in DTYPE_BYTES:
        return key
    return DTYPE_ALIASES.get(key, key)


def dtype_bytes(name: str) -> float:
    return DTYPE_BYTES.get(canonical_dtype(name), 2.0)


@dataclass(frozen=True)
class OpFamily:
    name: str
    params: tuple[str, ...]
    kind: str  # compute | attention | collective | memory
    description: str


_ATTN = ("batch_size", "q_tokens", "kv_len", "num_heads", "num_kv_heads", "head_dim")
_TOKH = ("tokens", "hidden")
_COLL = ("message_bytes", "world_size")

FAMILIES: dict[str, OpFamily] = {f.name: f for f in [
    OpFamily("gemm", ("m", "n", "k"), "compute", "C[m,n] = A[m,k] @ B[k,n]"),
    OpFamily("attn_prefill", _ATTN, "attention",
             "causal attention of q_tokens new tokens per sequence over kv_len keys (new included)"),
    OpFamily("attn_decode", _ATTN, "attention", "one new token per sequence over kv_len keys"),
    OpFamily("all_reduce", _COLL, "collective", "message_bytes = size of the reduced tensor"),
    OpFamily("all_gather", _COLL, "collective", "message_bytes = size of the gathered output"),
    OpFamily("reduce_scatter", _COLL, "collective", "message_bytes = size of the full input"),
    OpFamily("all_to_all", _COLL, "collective",
             "message_bytes = size of each rank's send buffer (a 1/world_size slice goes to every rank)"),
    OpFamily("send_recv", _COLL, "collective", "point-to-point transfer of message_bytes"),
    OpFamily("norm", _TOKH, "memory", "RMSNorm/LayerNorm over [tokens, hidden] (fused residual add included)"),
    OpFamily("rope", _TOKH, "memory", "rotary embedding over [tokens, hidden] (hidden = (q heads + kv heads) * head_dim)"),
    OpFamily("activation", _TOKH, "memory", "gated activation (silu_and_mul): [tokens, 2*hidden] -> [tokens, hidden]"),
    OpFamily("elementwise", _TOKH, "memory", "binary elementwise over [tokens, hidden] (residual add)"),
    OpFamily("embedding", _TOKH, "memory", "row gather of [tokens] rows of width hidden"),
]}

COLLECTIVES = frozenset(n for n, f in FAMILIES.items() if f.kind == "collective")
ATTENTION = frozenset(n for n, f in FAMILIES.items() if f.kind == "attention")


def family(name: str) -> OpFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnsupportedOp(name, f"not in the op vocabulary ({', '.join(FAMILIES)})") from None


def _get(params: Mapping[str, float], op: str, key: str) -> float:
    value = params.get(key)
    if value is None:
        raise UnsupportedOp(op, f"missing parameter {key!r}")
    return float(value)


def attention_pairs(q_tokens: float, kv_len: float) -> float:
    """Query-key pairs per head and sequence under a causal mask.

    Query i (0-based among the q new tokens) sees the kv_len - q_tokens cached keys plus i + 1
    new ones, so the total is q*kv - q*(q-1)/2.
    """
    q = min(q_tokens, kv_len)
    return q * kv_len - q * (q - 1) / 2.0


def flops(op: str, params: Mapping[str, float]) -> float:
    """Floating-point operations of one op (multiply-add counts 2)."""
    fam = family(op)
    g = lambda key: _get(params, op, key)  # noqa: E731
    if op == "gemm":
        return 2.0 * g("m") * g("n") * g("k")
    if fam.kind == "attention":
        pairs = attention_pairs(g("q_tokens"), g("kv_len"))
        return 4.0 * g("batch_size") * g("num_heads") * g("head_dim") * pairs
    if fam.kind == "collective":
        return g("message_bytes") / 2.0 if op in ("all_reduce", "reduce_scatter") else 0.0
    per_elem = {"norm": 5.0, "rope": 4.0, "activation": 6.0, "elementwise": 1.0, "embedding": 0.0}[op]
    return per_elem * g("tokens") * g("hidden")


def bytes_moved(op: str, params: Mapping[str, float], dtype: str = "bf16") -> float:
    """Bytes read and written in device memory (for collectives: bytes sent per GPU)."""
    fam = family(op)
    g = lambda key: _get(params, op, key)  # noqa: E731
    b = dtype_bytes(dtype)
    if op == "gemm":
        m, n, k = g("m"), g("n"), g("k")
        return (m * k + k * n) * b + m * n * 2.0  # fp8 GEMMs still write 16-bit outputs
    if fam.kind == "attention":
        bs, q, kv = g("batch_size"), g("q_tokens"), g("kv_len")
        h, hkv, d = g("num_heads"), g("num_kv_heads"), g("head_dim")
        return bs * (2.0 * q * h * d + 2.0 * kv * hkv * d) * b
    if fam.kind == "collective":
        size, world = g("message_bytes"), max(g("world_size"), 1.0)
        if op == "all_reduce":
            return 2.0 * (world - 1.0) / world * size
        if op in ("all_gather", "reduce_scatter", "all_to_all"):
            return (world - 1.0) / world * size
        return size
    t, h = g("tokens"), g("hidden")
    factor = {"norm": 2.0, "rope": 2.0, "activation": 3.0, "elementwise": 3.0, "embedding": 2.0}[op]
    return factor * t * h * b
