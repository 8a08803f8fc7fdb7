from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from revati import parquet_io, schema
from revati.errors import BadInput, SchemaError

# Pinned column -> type map of one table: a change here is a schema change and needs a version bump.
KERNELS_PINNED = {
    "run_id": "string", "pid": "int32", "device_id": "int16", "stream_id": "int64",
    "correlation_id": "int64", "graph_id": "int64", "graph_node_id": "int64", "name": "string",
    "short_name": "string", "start_ns": "int64", "end_ns": "int64", "duration_ns": "int64",
    "queued_ns": "int64", "grid_x": "int32", "grid_y": "int32", "grid_z": "int32",
    "block_x": "int32", "block_y": "int32", "block_z": "int32", "static_smem_bytes": "int32",
    "dynamic_smem_bytes": "int32", "regs_per_thread": "int16", "step": "int32", "source": "string",
}


def test_kernels_schema_is_pinned():
    got = {f.name: str(f.type) for f in schema.KERNELS}
    assert got == KERNELS_PINNED


def test_every_table_has_run_id_and_units_in_time_columns():
    for name, sch in schema.TABLES.items():
        assert sch.field("run_id").type == pa.string(), name
        for f in sch:
            if f.name in ("start", "end", "duration") or f.name.endswith(("_start", "_end", "_duration")):
                pytest.fail(f"{name}.{f.name} has no unit suffix")


def _kernels(n=3):
    return pa.table({
        "run_id": ["r"] * n, "name": [f"k{i}" for i in range(n)],
        "start_ns": list(range(n)), "end_ns": [i + 10 for i in range(n)], "duration_ns": [10] * n,
    })


def test_validate_fills_nullable_and_casts():
    t = schema.validate(_kernels(), "kernels")
    assert t.schema.names == schema.KERNELS.names
    assert t.column("pid").null_count == 3
    assert t.schema.metadata[schema.META_TABLE_KEY] == b"kernels"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.append_column("bogus", pa.array([1, 2, 3])), "unknown column"),
        (lambda t: t.drop(["name"]), "missing required column 'name'"),
        (lambda t: t.set_column(1, "name", pa.array(["a", None, "c"])), "null"),
        (lambda t: t.set_column(2, "start_ns", pa.array(["x", "y", "z"])), "start_ns"),
    ],
)
def test_validate_rejects(mutate, message):
    with pytest.raises(SchemaError, match=message):
        schema.validate(mutate(_kernels()), "kernels")


def test_roundtrip_and_metadata(tmp_path):
    path = parquet_io.write_table(_kernels(), "kernels", tmp_path / "kernels.parquet")
    ident = parquet_io.identify_file(path)
    assert ident.table == "kernels" and ident.schema_version == schema.SCHEMA_VERSION
    back = parquet_io.read_table(path, "kernels")
    assert back.num_rows == 3 and back.column("name").to_pylist() == ["k0", "k1", "k2"]


def test_read_rejects_foreign_and_wrong_table(tmp_path):
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"a": [1]}), foreign)
    with pytest.raises(SchemaError, match="not a revati table"):
        parquet_io.read_table(foreign)
    path = parquet_io.write_table(_kernels(), "kernels", tmp_path / "k.parquet")
    with pytest.raises(SchemaError, match="expected 'ops'"):
        parquet_io.read_table(path, "ops")


def test_read_rejects_truncated_and_missing(tmp_path):
    path = parquet_io.write_table(_kernels(), "kernels", tmp_path / "k.parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="Parquet"):
        parquet_io.read_table(path)
    with pytest.raises(BadInput, match="no such file"):
        parquet_io.read_table(tmp_path / "absent.parquet")


def test_interrupted_write_leaves_old_file(tmp_path, monkeypatch):
    path = parquet_io.write_table(_kernels(2), "kernels", tmp_path / "k.parquet")
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(parquet_io.pq, "write_table", boom)
    with pytest.raises(KeyboardInterrupt):
        parquet_io.write_table(_kernels(5), "kernels", path)
    assert path.read_bytes() == before
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_bad_table_name():
    with pytest.raises(SchemaError, match="unknown table"):
        schema.table_schema("nope")
