"""Features: the SQL the fit runs and the Python the predictor runs compute the same numbers."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revati import vocab
from revati.errors import UnsupportedOp
from revati.replay import features

DTYPES = ["bf16", "fp16", "fp8", "fp32", "float16", "int8"]


def _sql_row(op: str, params: dict, dtype: str) -> dict:
    ff = features.family_features(op)
    cols = {p: pa.array([int(params[p])], pa.int64()) for p in ff.params}
    cols["dtype"] = pa.array([dtype])
    tbl = pa.table(cols)
    con = duckdb.connect()
    con.register("t", tbl)
    axes = ff.all_axes()
    sel = ", ".join([f"{features.flops_sql(op)} AS flops", f"{features.bytes_sql(op)} AS nbytes",
                     f"{features.base_work_sql(op)} AS work"]
                    + [f"{a.sql} AS ax_{a.name}" for a in axes.values()])
    return dict(zip([d[0] for d in con.execute(f"SELECT {sel} FROM t").description],
                    con.execute(f"SELECT {sel} FROM t").fetchone()))


positive = st.integers(min_value=1, max_value=1 << 20)


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(sorted(features.FAMILIES)), data=st.data(), dtype=st.sampled_from(DTYPES))
def test_sql_and_python_features_agree(op, data, dtype):
    ff = features.family_features(op)
    params = {p: data.draw(positive, label=p) for p in ff.params}
    got = _sql_row(op, params, dtype)
    assert got["flops"] == pytest.approx(vocab.flops(op, params), rel=1e-9)
    assert got["nbytes"] == pytest.approx(vocab.bytes_moved(op, params, dtype), rel=1e-9)
    assert got["work"] == pytest.approx(features.base_work(op, params), rel=1e-9)
    for name, ax in ff.all_axes().items():
        assert got[f"ax_{name}"] == pytest.approx(ax.value(params), rel=1e-12)


def test_every_vocabulary_family_has_features():
    assert set(features.FAMILIES) == set(vocab.FAMILIES)


def test_axis_value_and_sql_shape():
    ax = features.Axis("r", ("kv_len",), ("q_tokens",))
    assert ax.value({"kv_len": 4096, "q_tokens": 512}) == 8.0
    assert "/" in ax.sql and "kv_len" in ax.sql


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "x", "num": ()}, "at least one"),
    ({"name": "x", "num": ("m",), "margin": 0.5}, "margin"),
])
def test_axis_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        features.Axis(**kwargs)


def test_family_features_rejects_unknown_family():
    with pytest.raises(UnsupportedOp):
        features.family_features("conv2d")


def test_dtype_bytes_sql_matches_vocab():
    con = duckdb.connect()
    for name in [*vocab.DTYPE_BYTES, *vocab.DTYPE_ALIASES, "unknown_dtype"]:
        got = con.execute(f"SELECT {features.dtype_bytes_sql('d')} FROM (SELECT ? AS d)", [name]).fetchone()[0]
        assert got == vocab.dtype_bytes(name), name


def test_attention_flops_are_causal_pairs():
    params = {"batch_size": 2, "q_tokens": 4, "kv_len": 10, "num_heads": 3, "num_kv_heads": 1, "head_dim": 8}
    # 4 new tokens over 6 cached: query i sees 6 + i + 1 keys -> 7 + 8 + 9 + 10 = 34 pairs
    assert _sql_row("attn_prefill", params, "bf16")["flops"] == 4 * 2 * 3 * 8 * 34
    assert math.isclose(vocab.attention_pairs(4, 10), 34)


def test_same_kind_axis_switches_between_two_knots():
    ax = features.FAMILIES["attn_decode"].all_axes()["same_kv_heads"]
    mha = {"batch_size": 4, "q_tokens": 1, "kv_len": 64, "num_heads": 8, "num_kv_heads": 8, "head_dim": 64}
    gqa = dict(mha, num_kv_heads=2)
    assert ax.value(mha) == 1.0 and ax.value(gqa) == 2.0
    assert _sql_row("attn_decode", mha, "bf16")["ax_same_kv_heads"] == 1.0
    assert _sql_row("attn_decode", gqa, "bf16")["ax_same_kv_heads"] == 2.0
    with pytest.raises(ValueError, match="exactly two"):
        features.Axis("x", ("a",), kind="same")


@pytest.mark.parametrize("size, expected", [(8 * 1024 * 1024 - 2, 1.0), (8 * 1024 * 1024, 2.0), (1 << 30, 2.0)])
def test_below_kind_axis_marks_the_custom_all_reduce_switch(size, expected):
    ax = features.FAMILIES["all_reduce"].all_axes()["custom_ar_size"]
    params = {"message_bytes": size, "world_size": 4}
    assert ax.value(params) == expected
    assert _sql_row("all_reduce", params, "bf16")["ax_custom_ar_size"] == expected
    again = features.Axis.from_stored(ax.name, ax.num, ax.den, ax.margin, ax.stored_kind)
    assert again == ax and ax.is_regime


def test_collective_base_work_counts_algorithm_steps():
    assert features.base_work("all_reduce", {"message_bytes": 1 << 20, "world_size": 8}) == 7.0
    assert features.base_work("gemm", {"m": 2, "n": 3, "k": 4}) == 48.0
