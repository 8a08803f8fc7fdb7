"""The Vidur and AIConfigurator importers against the real source files (skipped without them)
and against small files in the sources' layouts (always run)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from revati import parquet_io, paths
from revati.errors import BadInput
from revati.replay.kernel_db.importers import aiconfigurator, common, vidur

import db_samples

DATA = Path(os.environ.get("REVATI_SHARED_DATA", "/work/shared/data"))
needs_data = pytest.mark.skipif(not (DATA / "vidur").is_dir() or not (DATA / "aiconfigurator").is_dir(),
                                reason=f"public measurements not present at {DATA} (set REVATI_SHARED_DATA)")


def _csv_row(path: Path, row: int) -> dict[str, str]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))[row]


def _rows(table, **where):
    con = duckdb.connect()
    con.register("t", table)
    cond = " AND ".join(f"{k} = ?" for k in where) or "TRUE"
    return con.execute(f"SELECT * FROM t WHERE {cond} ORDER BY origin_row, op", list(where.values())).fetchall(), \
        [d[0] for d in con.description]


def _as_dicts(table, **where):
    rows, names = _rows(table, **where)
    return [dict(zip(names, r)) for r in rows]


# -- real Vidur data ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vidur_h100_7b():
    return vidur.import_paths([DATA / "vidur/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"])


@needs_data
def test_vidur_compute_row_counts_and_spot_values(vidur_h100_7b):
    src = DATA / "vidur/compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    with open(src) as fh:
        n_rows = sum(1 for _ in fh) - 1
    t = vidur_h100_7b.op_samples
    assert t.num_rows == n_rows * 10          # ten ops per row
    row0 = _csv_row(src, 0)
    assert (row0["num_tokens"], row0["num_tensor_parallel_workers"]) == ("4096", "1")
    by_kernel = {r["kernel_source"]: r for r in _as_dicts(t, origin_row=0)}
    qkv = by_kernel["attn_pre_proj"]
    assert (qkv["op"], qkv["m"], qkv["k"], qkv["n"]) == ("gemm", 4096, 4096, 12288)   # (32 + 2*32) * 128
    assert qkv["duration_median_ns"] == pytest.approx(float(row0["time_stats.attn_pre_proj.median"]) * 1e6)
    assert qkv["duration_median_ns"] == pytest.approx(584_000.0)
    for stat in ("min", "max", "mean", "std"):
        assert qkv[f"duration_{stat}_ns"] == pytest.approx(float(row0[f"time_stats.attn_pre_proj.{stat}"]) * 1e6)
    up, down = by_kernel["mlp_up_proj"], by_kernel["mlp_down_proj"]
    assert (up["k"], up["n"]) == (4096, 2 * 11008) and (down["k"], down["n"]) == (11008, 4096)
    assert by_kernel["attn_rope"]["hidden"] == (32 + 32) * 128
    assert by_kernel["mlp_act(silu_and_mul)"]["hidden"] == 11008
    assert {r["dtype"] for r in by_kernel.values()} == {"fp16"}
    assert {r["gpu"] for r in by_kernel.values()} == {"h100_sxm"}
    assert qkv["model"] == "meta-llama/Llama-2-7b-hf" and qkv["tp_size"] == 1
    assert qkv["origin_file"] == "compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"


@needs_data
def test_vidur_tensor_parallel_shapes_divide_the_split_dimension():
    src = DATA / "vidur/compute/h100/meta-llama/Llama-2-70b-hf/mlp.csv"
    t = vidur.import_paths([src]).op_samples
    tp8 = [r for r in _as_dicts(t, tp_size=8, op="gemm") if r["m"] == 4096]
    shapes = {r["kernel_source"]: (r["k"], r["n"]) for r in tp8}
    assert shapes["attn_pre_proj"] == (8192, (64 + 2 * 8) * 128 // 8)
    assert shapes["attn_post_proj"] == (64 * 128 // 8, 8192)
    assert shapes["mlp_up_proj"] == (8192, 2 * 28672 // 8)
    assert shapes["mlp_down_proj"] == (28672 // 8, 8192)


@needs_data
def test_vidur_gemm_time_scales_with_flops():
    """With the derived shapes, large GEMMs run at one steady fraction of peak on every TP degree
    and projection; a wrong split (e.g. forgetting /tp) would shift a group by the TP factor."""
    t = vidur.import_paths([DATA / "vidur/compute/h100"]).op_samples
    con = duckdb.connect()
    con.register("t", t)
    rates = con.execute("""
        SELECT kernel_source, tp_size, median(2.0 * m * n * k / duration_median_ns) / 1e3 AS tflops
        FROM t WHERE op = 'gemm' AND m >= 2048 GROUP BY ALL""").fetchall()
    values = np.array([r[2] for r in rates])
    assert len(rates) == 16
    assert values.max() / values.min() < 1.4
    assert 450 < values.min() and values.max() < 989   # H100 fp16 dense peak 989 TFLOP/s


@needs_data
def test_vidur_network_sizes_topology_and_nodes():
    res = vidur.import_paths([DATA / "vidur/network/h100_dgx", DATA / "vidur/network/a100_dgx/all_reduce.csv",
                              DATA / "vidur/network/h100_pairwise_nvlink/send_recv.csv"])
    t = res.op_samples
    src = DATA / "vidur/network/h100_dgx/all_reduce.csv"
    row0 = _csv_row(src, 0)
    r = _as_dicts(t, origin_file="network/h100_dgx/all_reduce.csv", origin_row=0)[0]
    assert (r["op"], r["message_bytes"], r["world_size"], r["topology"]) == (
        "all_reduce", int(row0["size"]), int(row0["num_workers"]), "dgx")
    assert r["duration_median_ns"] == pytest.approx(float(row0["time_stats.all_reduce.median"]) * 1e6)
    a100 = _as_dicts(t, origin_file="network/a100_dgx/all_reduce.csv")
    assert {x["topology"] for x in a100 if x["world_size"] == 16} == {"dgx_2nodes"}
    # 8 workers were run on one node (8 per node) and on two nodes (4 per node)
    assert {x["topology"] for x in a100 if x["world_size"] == 8} == {"dgx", "dgx_2nodes"}
    assert {x["topology"] for x in _as_dicts(t, origin_file="network/h100_pairwise_nvlink/send_recv.csv")} \
        >= {"nvlink_pairwise"}
    with open(src) as fh:
        assert len(a100) > 0 and sum(1 for x in _as_dicts(t, origin_file="network/h100_dgx/all_reduce.csv")) \
            == sum(1 for _ in fh) - 1


@needs_data
def test_vidur_attention_maps_chunk_and_cache_to_q_tokens_and_kv_len():
    src = DATA / "vidur/attention/a100_flash_tp2_n8192_q64_kv8.csv"
    t = vidur.import_paths([src]).op_samples
    with open(src, newline="") as fh:
        rows = list(csv.DictReader(fh))
    prefill = [i for i, r in enumerate(rows) if r["is_prefill"] == "True"]
    decode = [i for i, r in enumerate(rows) if r["is_prefill"] == "False"]
    counts = dict(duckdb.sql("SELECT op, count(*) FROM t GROUP BY op").fetchall())
    assert counts == {"attn_prefill": len(prefill), "attn_decode": len(decode)}
    d = _as_dicts(t, origin_row=decode[0])[0]
    src_d = rows[decode[0]]
    assert (d["op"], d["batch_size"], d["q_tokens"], d["kv_len"]) == (
        "attn_decode", int(src_d["batch_size"]), 1, int(src_d["kv_cache_size"]) + 1)
    assert (d["num_heads"], d["num_kv_heads"], d["head_dim"], d["tp_size"]) == (32, 4, 128, 2)
    assert d["duration_median_ns"] == pytest.approx(float(src_d["time_stats.attn_decode.median"]) * 1e6)
    i = next(j for j in prefill if int(rows[j]["kv_cache_size"]) > 0)
    p = _as_dicts(t, origin_row=i)[0]
    assert (p["q_tokens"], p["kv_len"]) == (int(rows[i]["prefill_chunk_size"]),
                                            int(rows[i]["prefill_chunk_size"]) + int(rows[i]["kv_cache_size"]))
    assert p["duration_median_ns"] == pytest.approx(float(rows[i]["time_stats.attn_prefill.median"]) * 1e6)


# -- real AIConfigurator data ------------------------------------------------------------------

@pytest.fixture(scope="module")
def aic_h100():
    return aiconfigurator.import_paths([DATA / "aiconfigurator/h100_sxm"])


@needs_data
def test_aic_gemm_rows_and_dtypes(aic_h100):
    src = DATA / "aiconfigurator/h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet"
    raw = pq.read_table(src).to_pylist()
    t = aic_h100.op_samples
    got = _as_dicts(t, origin_file="h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet")
    assert len(got) == len(raw)
    for i in (0, len(raw) // 2, len(raw) - 1):
        r, s = got[i], raw[i]
        assert r["origin_row"] == i and (r["m"], r["n"], r["k"]) == (s["m"], s["n"], s["k"])
        assert r["duration_mean_ns"] == pytest.approx(s["latency"] * 1e6)
        assert r["duration_median_ns"] is None
        assert r["software"] == "vllm 0.24.0" and r["gpu"] == "h100_sxm" and r["gpu_name"] == s["device"]
    dtypes = {(r["dtype"], r["kernel_source"].endswith("[fp8_block]")) for r in got}
    assert dtypes == {("bf16", False), ("fp8", False), ("fp8", True)}


@needs_data
def test_aic_nccl_message_size_is_elements(aic_h100):
    src = DATA / "aiconfigurator/h100_sxm/comm/nccl/2.29.2/nccl_perf.parquet"
    raw = pq.read_table(src).to_pylist()
    got = _as_dicts(aic_h100.op_samples, origin_file="h100_sxm/comm/nccl/2.29.2/nccl_perf.parquet")
    assert len(got) == len(raw)
    half = next(i for i, s in enumerate(raw) if s["nccl_dtype"] == "half")
    int8 = next(i for i, s in enumerate(raw) if s["nccl_dtype"] == "int8")
    assert got[half]["message_bytes"] == 2 * raw[half]["message_size"] and got[half]["dtype"] == "fp16"
    assert got[int8]["message_bytes"] == raw[int8]["message_size"] and got[int8]["dtype"] == "int8"
    assert got[half]["world_size"] == raw[half]["num_gpus"] and got[half]["topology"] == "dgx"
    ops = {r["op"] for r in got}
    assert ops == {"all_reduce", "all_gather", "reduce_scatter", "all_to_all"}
    custom = _as_dicts(aic_h100.op_samples, origin_file="h100_sxm/comm/vllm/0.24.0/custom_allreduce_perf.parquet")
    raw_c = pq.read_table(DATA / "aiconfigurator/h100_sxm/comm/vllm/0.24.0/custom_allreduce_perf.parquet").to_pylist()
    assert custom[0]["message_bytes"] == 2 * raw_c[0]["message_size"]      # bfloat16 elements
    assert custom[0]["kernel_source"] == raw_c[0]["kernel_source"]


@needs_data
def test_aic_attention_isl_and_step(aic_h100):
    t = aic_h100.op_samples
    for version, offset in (("0.24.0", 1), ("0.19.0", 0)):
        name = f"h100_sxm/attention/vllm/{version}/generation_attention_perf.parquet"
        raw = pq.read_table(DATA / "aiconfigurator" / name).to_pylist()
        got = _as_dicts(t, origin_file=name)
        assert len(got) == sum(1 for s in raw if s["window_size"] == 0)
        r = got[0]
        s = raw[r["origin_row"]]
        assert (r["op"], r["q_tokens"], r["kv_len"]) == ("attn_decode", 1, s["step"] + offset)
        assert (r["num_heads"], r["num_kv_heads"], r["head_dim"], r["batch_size"]) == (
            s["num_heads"], s["num_key_value_heads"], s["head_dim"], s["batch_size"])
    name = "h100_sxm/attention/vllm/0.24.0/context_attention_perf.parquet"
    raw = pq.read_table(DATA / "aiconfigurator" / name).to_pylist()
    r = _as_dicts(t, origin_file=name)[5]
    s = raw[r["origin_row"]]
    assert (r["op"], r["q_tokens"], r["kv_len"], r["dtype"]) == (
        "attn_prefill", s["isl"], s["isl"], "fp8" if s["kv_cache_dtype"] == "fp8" else "bf16")
    report = next(x for x in aic_h100.reports if x.origin_file == name)
    assert report.skipped["sliding window (window_size > 0)"] == sum(1 for s in raw if s["window_size"] > 0)


@needs_data
def test_aic_reuse_is_recorded_not_copied(aic_h100):
    runs = aic_h100.runs.to_pylist()
    reuse = {r["run_id"]: r for r in runs if r["notes"].startswith("reuse:")}
    gemm = "aiconfigurator:h100_sxm/gemm/vllm/0.22.0/gemm_perf"
    assert gemm in reuse and "vllm 0.24.0" in reuse[gemm]["notes"]
    assert gemm not in set(aic_h100.op_samples.column("run_id").to_pylist())
    latest = aiconfigurator.import_paths([DATA / "aiconfigurator/h100_sxm"], latest_only=True)
    assert set(latest.op_samples.column("software").unique().to_pylist()) >= {"vllm 0.24.0", "nccl 2.29.2"}
    assert "vllm 0.19.0" not in set(latest.op_samples.column("software").to_pylist())


@needs_data
def test_shipped_imports_match_a_fresh_import():
    """traces/imports is what traces/imports/rebuild.sh produces from the current importers."""
    shipped = paths.embedded_traces_dir() / "imports"
    fresh = {
        "vidur": vidur.import_paths([DATA / "vidur/compute", DATA / "vidur/network"]),
        "vidur-attention": vidur.import_paths([DATA / "vidur/attention"]),
        "aiconfigurator": aiconfigurator.import_paths([DATA / "aiconfigurator"], gpus=["h100", "a100"]),
    }
    for folder, result in fresh.items():
        tables = [parquet_io.read_table(p, "op_samples") for p in sorted((shipped / folder).glob("op_samples-*.parquet"))]
        con = duckdb.connect()
        for i, tb in enumerate(tables):
            con.register(f"s{i}", tb)
        union = " UNION ALL ".join(f"SELECT gpu, op, duration_mean_ns FROM s{i}" for i in range(len(tables)))
        got = dict(((g, o), (n, s)) for g, o, n, s in con.execute(
            f"SELECT gpu, op, count(*), round(sum(duration_mean_ns)) FROM ({union}) GROUP BY ALL").fetchall())
        con.register("f", result.op_samples)
        want = dict(((g, o), (n, s)) for g, o, n, s in con.execute(
            "SELECT gpu, op, count(*), round(sum(duration_mean_ns)) FROM f GROUP BY ALL").fetchall())
        assert got == want, folder
        assert (shipped / folder / "LICENSE").is_file()


# -- small files in the sources' layouts (no shared data needed) --------------------------------

def test_vidur_small_file_roundtrip(tmp_path):
    src = db_samples.write_vidur_mlp(tmp_path)
    res = vidur.import_paths([tmp_path])
    assert res.op_samples.num_rows == 3 * 10
    r = _as_dicts(res.op_samples, origin_row=1, kernel_source="attn_post_proj")[0]
    assert (r["m"], r["k"], r["n"], r["tp_size"]) == (1024, 4096 // 2, 4096, 2)
    want_ms = db_samples.vidur_op_ms("attn_post_proj", 1024, 2)
    assert r["duration_median_ns"] == pytest.approx(want_ms * 1e6)
    assert r["origin_file"] == "compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv"
    assert src.exists()


def test_vidur_network_small_file(tmp_path):
    db_samples.write_vidur_network(tmp_path, "a100_pairwise_nvlink", "send_recv")
    t = vidur.import_paths([tmp_path]).op_samples
    got = _as_dicts(t)
    assert [r["message_bytes"] for r in got] == [2048, 1 << 20, 1 << 26]
    assert [r["topology"] for r in got] == ["nvlink_pairwise", "nvlink_pairwise", "nvlink_pairwise_2nodes"]
    assert {r["gpu"] for r in got} == {"a100_sxm_80gb"} and {r["op"] for r in got} == {"send_recv"}


def test_aic_small_files(tmp_path):
    db_samples.write_aic_gemm(tmp_path)
    db_samples.write_aic_nccl(tmp_path)
    res = aiconfigurator.import_paths([tmp_path])
    gemm = _as_dicts(res.op_samples, op="gemm")
    assert len(gemm) == 8 and {r["dtype"] for r in gemm} == {"bf16", "fp8"}
    a2a = _as_dicts(res.op_samples, op="all_to_all")
    assert {(r["dtype"], r["message_bytes"]) for r in a2a} == {
        ("fp16", 512), ("fp16", 2 << 20), ("int8", 256), ("int8", 1 << 20)}
    half = [r for r in _as_dicts(res.op_samples, op="all_reduce") if r["dtype"] == "fp16"]
    assert sorted({r["message_bytes"] for r in half}) == [512, 2 << 20]


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.write_text(p.read_text()[:-40]), "fields, the header has"),
    (lambda p: p.write_text("a,b,c\n1,2,3\n"), "unknown column"),
    (lambda p: p.write_text(p.read_text().replace("num_tokens", "n_tokens")), "unknown column"),
    (lambda p: p.write_text(p.read_text().replace(",num_tokens", "")), "fields"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00"), "not a text CSV"),
    (lambda p: p.write_text(""), "empty file"),
])
def test_vidur_bad_files_name_the_file(tmp_path, mutate, message):
    src = db_samples.write_vidur_mlp(tmp_path)
    mutate(src)
    with pytest.raises(BadInput, match=message) as info:
        vidur.import_paths([src])
    assert str(src) in str(info.value)


def test_vidur_missing_column_and_row_errors(tmp_path):
    src = db_samples.write_vidur_mlp(tmp_path)
    lines = src.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, h in enumerate(header) if h != "num_tokens"]
    src.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines) + "\n")
    with pytest.raises(BadInput, match="missing column.*num_tokens"):
        vidur.import_paths([src])
    src = db_samples.write_vidur_mlp(tmp_path / "b")
    lines = src.read_text().splitlines()
    cells = lines[2].split(",")
    cells[3] = "abc"
    lines[2] = ",".join(cells)
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInput, match=r"row 1 \(line 3\).*not a number"):
        vidur.import_paths([src])


@pytest.mark.parametrize("scale, message", [(1000.0, "not in ms"), (1e-3, "not in ms"), (1e6, "not a plausible time in ms")])
def test_vidur_wrong_unit(tmp_path, scale, message):
    db_samples.write_vidur_mlp(tmp_path, unit_scale=scale)
    with pytest.raises(BadInput, match=message):
        vidur.import_paths([tmp_path])


def test_vidur_single_row_faster_than_peak_names_the_row(tmp_path):
    src = db_samples.write_vidur_mlp(tmp_path, rows=((4096, 1), (4096, 1), (4096, 1), (2048, 1)))
    lines = src.read_text().splitlines()
    cells = lines[4].split(",")
    qkv = [i for i, h in enumerate(lines[0].split(",")) if h.startswith("time_stats.attn_pre_proj.")]
    for i in qkv:
        cells[i] = str(float(cells[i]) / 1000)          # this row in seconds
    lines[4] = ",".join(cells)
    src.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInput, match=r"row 3 \(line 5\): gemm .*TFLOP/s"):
        vidur.import_paths([src])


def test_vidur_missing_path_and_unknown_gpu(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        vidur.import_paths([tmp_path / "absent"])
    db_samples.write_vidur_mlp(tmp_path, gpu="tpu9")
    with pytest.raises(BadInput, match="cannot tell the GPU"):
        vidur.import_paths([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no Vidur profiling files"):
        vidur.import_paths([tmp_path / "empty"])


@pytest.mark.parametrize("mutate, message", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated or not a Parquet"),
    (lambda p: pq.write_table(pq.read_table(p).append_column("bogus", pq.read_table(p).column("m")), p),
     "unknown column.*bogus"),
    (lambda p: pq.write_table(pq.read_table(p).drop(["k"]), p), "missing column.*'k'"),
    (lambda p: pq.write_table(pq.read_table(p).select(["m"]).rename_columns(["x"]), p), "unknown column"),
])
def test_aic_bad_parquet(tmp_path, mutate, message):
    src = db_samples.write_aic_gemm(tmp_path)
    mutate(src)
    with pytest.raises(BadInput, match=message) as info:
        aiconfigurator.import_paths([tmp_path])
    assert str(src) in str(info.value)


def test_aic_latency_in_us_is_rejected(tmp_path):
    db_samples.write_aic_gemm(tmp_path, latency_scale=1000.0)
    with pytest.raises(BadInput, match="not in ms"):
        aiconfigurator.import_paths([tmp_path])


def test_aic_bad_reuse_yaml(tmp_path):
    p = tmp_path / "h100_sxm" / "gemm" / "vllm" / "0.22.0" / "reuse.yaml"
    p.parent.mkdir(parents=True)
    p.write_text("schema_version: 1\nreuse: nope\n")
    with pytest.raises(BadInput, match="reuse"):
        aiconfigurator.import_paths([tmp_path])


def test_write_import_is_all_or_nothing(tmp_path, monkeypatch):
    db_samples.write_vidur_mlp(tmp_path / "src")
    dest = tmp_path / "out"
    common.write_import(vidur.import_paths([tmp_path / "src"]), dest)
    (dest / "README.md").write_text("kept")
    before = {p.name: p.read_bytes() for p in dest.iterdir()}
    db_samples.write_vidur_network(tmp_path / "src")
    result = vidur.import_paths([tmp_path / "src"])
    calls = []

    def failing(table, name, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(table, name, path)

    real = parquet_io.write_table
    monkeypatch.setattr(parquet_io, "write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        common.write_import(result, dest)
    assert {p.name: p.read_bytes() for p in dest.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(parquet_io, "write_table", real)
    common.write_import(result, dest)
    assert (dest / "README.md").read_text() == "kept"
    assert (dest / "op_samples-h100_sxm-collective.parquet").exists()


def test_write_import_refuses_foreign_destination(tmp_path):
    db_samples.write_vidur_mlp(tmp_path / "src")
    result = vidur.import_paths([tmp_path / "src"])
    (tmp_path / "home" / "sub").mkdir(parents=True)
    with pytest.raises(BadInput, match="subfolders"):
        common.write_import(result, tmp_path / "home")
    other = tmp_path / "other"
    db_samples.write_aic_gemm(tmp_path / "aic")
    common.write_import(aiconfigurator.import_paths([tmp_path / "aic"]), other)
    with pytest.raises(BadInput, match="refusing to replace an import of aiconfigurator"):
        common.write_import(result, other)


def test_all_to_all_is_in_the_vocabulary():
    from revati import vocab

    assert vocab.family("all_to_all").kind == "collective"
    assert vocab.bytes_moved("all_to_all", {"message_bytes": 800, "world_size": 8}) == pytest.approx(700)


def test_import_files_are_world_readable(tmp_path):
    db_samples.write_vidur_mlp(tmp_path / "src")
    written = common.write_import(vidur.import_paths([tmp_path / "src"]), tmp_path / "out")
    assert written and all(p.stat().st_mode & 0o777 == 0o644 for p in written)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
