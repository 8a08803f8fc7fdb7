"""Analytic features of an op's shape, spelled once and evaluated both in SQL and in Python.

The models are fitted from ``op_samples`` with DuckDB queries and evaluated at emulation time
in plain Python; both must compute the same numbers. So every feature here is *data*, not
code: a grid axis is a product of parameters over a product of parameters (``batch_size *
num_kv_heads``, ``kv_len / q_tokens``), and FLOPs and bytes moved are SQL expressions that
mirror :mod:`revati.vocab` (a test checks the two agree on random shapes).

Per family, :data:`FAMILIES` lists the candidate sets of grid axes (the fit picks one by
held-out error) and how to hold data out honestly (:mod:`revati.replay.model_fit.holdout`).

Example::

    from revati.replay import features
    ff = features.FAMILIES["attn_decode"]
    ax = ff.axis_sets["bkv_ratio"][0]          # batch_size * num_kv_heads
    ax.sql                                     # 'CAST(batch_size AS DOUBLE) * CAST(num_kv_heads AS DOUBLE)'
    ax.value({"batch_size": 8, "num_kv_heads": 4})   # 32.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from revati import vocab
from revati.errors import UnsupportedOp


AXIS_KINDS = ("product", "same", "below")
REGIME_KINDS = ("same", "below")


@dataclass(frozen=True)
class Axis:
    """One grid axis, used as log(value).

    kind ``product``: prod(num) / prod(den) of the family's parameters.
    kind ``same``: 1 when the two parameters in ``num`` are equal, else 2 -- a switch between
    two kernel paths (attention with as many KV heads as query heads runs another code path
    than grouped-query attention); queries always land on one of the two knots, so the grid
    never blends the two regimes.
    kind ``below``: 1 when prod(num) < ``threshold``, else 2 -- a documented switch point of the
    software (vLLM's custom all-reduce serves messages below 8 MiB, NCCL the rest).

    ``margin`` is how far (as a factor) a query may lie beyond the fitted range on this axis
    before the model refuses to answer: within it the residual grid is held at its edge and
    only the analytic base extrapolates.
    """

    name: str
    num: tuple[str, ...]
    den: tuple[str, ...] = ()
    margin: float = 2.0
    kind: str = "product"
    threshold: float = 0.0

    def __post_init__(self):
        if not self.num:
            raise ValueError(f"axis {self.name!r} needs at least one parameter")
        if self.margin < 1.0:
            raise ValueError(f"axis {self.name!r}: margin must be >= 1, got {self.margin}")
        if self.kind not in AXIS_KINDS:
            raise ValueError(f"axis {self.name!r}: unknown kind {self.kind!r}; known: {AXIS_KINDS}")
        if self.kind == "same" and (len(self.num) != 2 or self.den):
            raise ValueError(f"axis {self.name!r}: kind 'same' compares exactly two parameters")
        if self.kind == "below" and (self.threshold <= 0 or self.den):
            raise ValueError(f"axis {self.name!r}: kind 'below' needs a positive threshold and no den")

    @property
    def is_regime(self) -> bool:
        """A switch between code paths: the fit never fills one regime from the other."""
        return self.kind in REGIME_KINDS

    @property
    def stored_kind(self) -> str:
        return f"below:{self.threshold!r}" if self.kind == "below" else self.kind

    @classmethod
    def from_stored(cls, name: str, num, den, margin: float, stored_kind: str) -> "Axis":
        kind, _, thr = (stored_kind or "product").partition(":")
        return cls(name, tuple(num), tuple(den), float(margin), kind, float(thr) if thr else 0.0)

    @property
    def params(self) -> tuple[str, ...]:
        return self.num + self.den

    @property
    def sql(self) -> str:
        if self.kind == "same":
            return f"(CASE WHEN {self.num[0]} = {self.num[1]} THEN 1.0 ELSE 2.0 END)"
        num = " * ".join(f"CAST({p} AS DOUBLE)" for p in self.num)
        if self.kind == "below":
            return f"(CASE WHEN {num} < {self.threshold!r} THEN 1.0 ELSE 2.0 END)"
        if not self.den:
            return num
        den = " * ".join(f"CAST({p} AS DOUBLE)" for p in self.den)
        return f"({num}) / ({den})"

    def value(self, params: Mapping[str, float]) -> float:
        if self.kind == "same":
            return 1.0 if float(params[self.num[0]]) == float(params[self.num[1]]) else 2.0
        v = 1.0
        for p in self.num:
            v *= float(params[p])
        for p in self.den:
            v /= float(params[p])
        if self.kind == "below":
            return 1.0 if v < self.threshold else 2.0
        return v


@dataclass(frozen=True)
class FamilyFeatures:
    family: str
    axis_sets: Mapping[str, tuple[Axis, ...]]
    line_params: tuple[str, ...]           # hold out every few distinct values of each
    group_params: tuple[str, ...] = ()     # hold out whole configurations (e.g. head layouts)
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        if not self.axis_sets:
            raise ValueError(f"{self.family}: no axis sets")
        object.__setattr__(self, "params", vocab.family(self.family).params)
        for name, axes in self.axis_sets.items():
            for ax in axes:
                unknown = set(ax.params) - set(self.params)
                if unknown:
                    raise ValueError(f"{self.family}/{name}: axis {ax.name} uses unknown {sorted(unknown)}")

    def all_axes(self) -> dict[str, Axis]:
        out: dict[str, Axis] = {}
        for axes in self.axis_sets.values():
            for ax in axes:
                out.setdefault(ax.name, ax)
        return out


def _ax(name: str, *num: str, den: tuple[str, ...] = (), margin: float = 2.0, kind: str = "product",
        threshold: float = 0.0) -> Axis:
    return Axis(name, tuple(num), den, margin, kind, threshold)


def _single(*names: str) -> tuple[Axis, ...]:
    return tuple(_ax(n, n) for n in names)


_B, _Q, _KV = _ax("batch_size", "batch_size"), _ax("q_tokens", "q_tokens"), _ax("kv_len", "kv_len")
_H, _HKV, _D = _ax("num_heads", "num_heads"), _ax("num_kv_heads", "num_kv_heads"), _ax("head_dim", "head_dim")
_RATIO = _ax("gqa_ratio", "num_heads", den=("num_kv_heads",))
_BKV = _ax("batch_x_kv_heads", "batch_size", "num_kv_heads")
_BH = _ax("batch_x_heads", "batch_size", "num_heads")
# Prefill measurements often have kv_len == q_tokens only (no cached prefix). The base's FLOPs
# (causal query-key pairs) carry the scaling with a longer context, so this axis may be
# extrapolated further than the others; the cross-source check measures how well that works.
_MHA = _ax("same_kv_heads", "num_heads", "num_kv_heads", kind="same", margin=1.0)
# vLLM's custom all-reduce (its default inside CUDA graphs on NVLink) takes messages below
# 8 MiB (CustomAllreduce max_size); larger ones go to NCCL, a step of several x in time.
_CUSTOM_AR = _ax("custom_ar_size", "message_bytes", kind="below", threshold=8.0 * 1024 * 1024, margin=1.0)
_CTX = _ax("context_ratio", "kv_len", den=("q_tokens",), margin=64.0)
# Decode with more than one query token per sequence (speculative decoding) is not measured.
_QDEC = _ax("q_tokens", "q_tokens", margin=1.0)

FAMILIES: dict[str, FamilyFeatures] = {f.family: f for f in [
    FamilyFeatures("gemm", {"mnk": _single("m", "n", "k")}, line_params=("m", "n", "k")),
    FamilyFeatures(
        "attn_prefill",
        {
            "per_head": (_B, _Q, _CTX, _H, _HKV, _D),
            "bkv_ratio": (_BKV, _Q, _CTX, _RATIO, _D),
            "bkv_ratio_mha": (_BKV, _Q, _CTX, _RATIO, _MHA, _D),
            "bh_ratio_mha": (_BH, _Q, _CTX, _RATIO, _MHA, _D),
        },
        line_params=("batch_size", "q_tokens"),
        group_params=("num_heads", "num_kv_heads", "head_dim"),
    ),
    FamilyFeatures(
        "attn_decode",
        {
            "per_head": (_B, _KV, _QDEC, _H, _HKV, _D),
            "bkv_ratio_mha": (_BKV, _KV, _QDEC, _RATIO, _MHA, _D),
            "b_kv_ratio": (_B, _KV, _QDEC, _HKV, _RATIO, _D),
            "b_kv_ratio_mha": (_B, _KV, _QDEC, _HKV, _RATIO, _MHA, _D),
        },
        line_params=("batch_size", "kv_len"),
        group_params=("num_heads", "num_kv_heads", "head_dim"),
    ),
    FamilyFeatures("all_reduce", {"size_world": _single("message_bytes", "world_size"),
                                  "size_world_custom": (*_single("message_bytes", "world_size"), _CUSTOM_AR)},
                   line_params=("message_bytes", "world_size")),
    *[FamilyFeatures(op, {"size_world": _single("message_bytes", "world_size")},
                     line_params=("message_bytes", "world_size"))
      for op in ("all_gather", "reduce_scatter", "all_to_all", "send_recv")],
    *[FamilyFeatures(op, {"tokens_hidden": _single("tokens", "hidden")}, line_params=("tokens", "hidden"))
      for op in ("norm", "rope", "activation", "elementwise", "embedding")],
]}


def family_features(op: str) -> FamilyFeatures:
    vocab.family(op)  # UnsupportedOp for names outside the vocabulary
    try:
        return FAMILIES[op]
    except KeyError:
        raise UnsupportedOp(op, "no feature definition for this family") from None


# ---- FLOPs and bytes moved in SQL (mirrors revati.vocab.flops / bytes_moved) ----

def dtype_bytes_sql(column: str = "dtype") -> str:
    """SQL CASE giving bytes per element of a dtype column (as revati.vocab.dtype_bytes)."""
    names = dict(vocab.DTYPE_BYTES)
    for alias, canon in vocab.DTYPE_ALIASES.items():
        names.setdefault(alias, vocab.DTYPE_BYTES.get(canon, 2.0))
    whens = " ".join(f"WHEN '{n}' THEN {b!r}" for n, b in sorted(names.items()))
    return f"(CASE lower(trim({column})) {whens} ELSE 2.0 END)"


def _d(p: str) -> str:
    return f"CAST({p} AS DOUBLE)"


def flops_sql(op: str) -> str:
    fam = vocab.family(op)
    if op == "gemm":
        return f"2.0 * {_d('m')} * {_d('n')} * {_d('k')}"
    if fam.kind == "attention":
        q = f"least({_d('q_tokens')}, {_d('kv_len')})"
        pairs = f"({q} * {_d('kv_len')} - {q} * ({q} - 1.0) / 2.0)"
        return f"4.0 * {_d('batch_size')} * {_d('num_heads')} * {_d('head_dim')} * {pairs}"
    if fam.kind == "collective":
        return f"{_d('message_bytes')} / 2.0" if op in ("all_reduce", "reduce_scatter") else "0.0"
    per_elem = {"norm": 5.0, "rope": 4.0, "activation": 6.0, "elementwise": 1.0, "embedding": 0.0}[op]
    return f"{per_elem!r} * {_d('tokens')} * {_d('hidden')}"


def bytes_sql(op: str) -> str:
    fam = vocab.family(op)
    b = dtype_bytes_sql()
    if op == "gemm":
        return f"({_d('m')} * {_d('k')} + {_d('k')} * {_d('n')}) * {b} + {_d('m')} * {_d('n')} * 2.0"
    if fam.kind == "attention":
        return (f"{_d('batch_size')} * (2.0 * {_d('q_tokens')} * {_d('num_heads')} * {_d('head_dim')}"
                f" + 2.0 * {_d('kv_len')} * {_d('num_kv_heads')} * {_d('head_dim')}) * {b}")
    if fam.kind == "collective":
        world = f"greatest({_d('world_size')}, 1.0)"
        size = _d("message_bytes")
        if op == "all_reduce":
            return f"2.0 * ({world} - 1.0) / {world} * {size}"
        if op in ("all_gather", "reduce_scatter", "all_to_all"):
            return f"({world} - 1.0) / {world} * {size}"
        return size
    factor = {"norm": 2.0, "rope": 2.0, "activation": 3.0, "elementwise": 3.0, "embedding": 2.0}[op]
    return f"{factor!r} * {_d('tokens')} * {_d('hidden')} * {b}"


# ---- the base's compute-like term ----
# For compute and memory ops it is the FLOPs. A collective's cost is latency per algorithm step
# plus bytes over the links; ring and tree algorithms take a number of steps growing with the
# group, so the term is world_size - 1 (in steps), which lets the base carry the latency from
# 2 to 8 GPUs instead of leaving it to interpolation.

def base_work_sql(op: str) -> str:
    if vocab.family(op).kind == "collective":
        return f"greatest({_d('world_size')} - 1.0, 0.0)"
    return flops_sql(op)


def base_work(op: str, params: Mapping[str, float]) -> float:
    if vocab.family(op).kind == "collective":
        return max(float(params["world_size"]) - 1.0, 0.0)
    return vocab.flops(op, params)


def positive_params_sql(op: str) -> str:
    """SQL predicate: every parameter of the family is present and positive."""
    return " AND ".join(f"{p} IS NOT NULL AND {p} > 0" for p in vocab.family(op).params)
