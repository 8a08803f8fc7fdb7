"""Traced runs into the models: timed units, op_samples (source='trace') and `revati replay`."""

from __future__ import annotations

import json

import duckdb
import pytest
from click.testing import CliRunner

from kineto_traces import write_gpu_run
from revati import parquet_io, schema
from revati.cli import cli
from revati.replay.trace_replay import replay as replay_mod
from revati.replay.prediction.predictor import Predictor
from revati.replay.kernel_db.trace_ops import load_trace_ops
from revati.replay.kernel_db.trace_samples import derive_op_samples, write_op_samples
from revati.run_folder import read_run_table


@pytest.fixture()
def gpu_run(tmp_path):
    return write_gpu_run(tmp_path / "gpu-run", steps_count=3)


def test_runs_row_metadata(gpu_run):
    (run,) = read_run_table(gpu_run, "runs").to_pylist()
    assert (run["gpu"], run["sm_count"], run["engine"], run["engine_version"]) == ("h100_sxm", 132, "vllm", "0.11.0")
    assert run["cuda_version"] == "12.8" and run["clocks_locked"] is False and run["backends"] == ["kineto"]
    assert dict(run["env"]) == {"NCCL_DEBUG": "WARN"} and run["cmdline"] == "python serve.py"
    assert run["software"].startswith("vllm 0.11.0, torch 2.9.0+cu128")


def test_units_sum_the_kernels_below_the_framework_op(gpu_run):
    ops = load_trace_ops(gpu_run)
    by_name = {}
    for u in ops.units:
        by_name.setdefault(u.name, []).append(u)
    linear = by_name["aten::linear"][0]
    assert linear.family == "gemm" and linear.mapped[0].params_dict == {"m": 8, "n": 11008, "k": 4096}
    assert linear.measured_ns == 30_000 and linear.kernels == 1  # the addmm kernel, one level down
    sdpa = by_name["aten::scaled_dot_product_attention"][0]
    assert sdpa.family == "attn_prefill" and sdpa.measured_ns == 25_000
    ar = by_name["c10d::allreduce_"][0]
    assert ar.family == "all_reduce" and ar.mapped[0].params_dict == {"message_bytes": 65536, "world_size": 2}
    assert ar.measured_ns == 50_000
    assert by_name["aten::softmax"][0].family == "other"   # roofline only
    assert by_name["aten::copy_"][0].measured_ns == 3_000    # a memcpy counts as device time
    assert len(by_name["aten::linear"]) == 3 and ops.unattributed_count == 0


def test_op_samples_from_a_trace(gpu_run):
    table = derive_op_samples(gpu_run)
    schema.validate(table, "op_samples")
    rows = {r["op"]: r for r in table.to_pylist()}
    gemm = rows["gemm"]
    assert (gemm["source"], gemm["gpu"], gemm["samples"], gemm["m"], gemm["n"], gemm["k"]) == (
        "trace", "h100_sxm", 3, 8, 11008, 4096)
    assert gemm["duration_median_ns"] == 30_000.0 and gemm["duration_std_ns"] == 0.0
    assert gemm["kernel_source"] == "cutlass::Kernel" and gemm["dtype"] == "bf16"
    assert rows["all_reduce"]["message_bytes"] == 65536 and rows["all_reduce"]["world_size"] == 2
    assert write_op_samples(gpu_run) == table.num_rows
    back = parquet_io.read_table(gpu_run / "op_samples.parquet", "op_samples")
    assert back.num_rows == table.num_rows


def test_run_folder_is_readable_by_duckdb_globs(gpu_run):
    write_op_samples(gpu_run)
    root = gpu_run.parent
    con = duckdb.connect()
    n_kernels = con.execute(f"select count(*) from read_parquet('{root}/**/kernels*.parquet')").fetchone()[0]
    n_ops = con.execute(f"select count(*) from read_parquet('{root}/**/ops*.parquet')").fetchone()[0]
    joined = con.execute(f"""
        select o.name, sum(k.duration_ns) from read_parquet('{root}/**/op_kernels*.parquet') l
        join read_parquet('{root}/**/ops*.parquet') o using (run_id, pid, op_id)
        join read_parquet('{root}/**/kernels*.parquet') k using (run_id, pid, correlation_id)
        group by 1 order by 2 desc""").fetchall()
    assert n_kernels == 15 and n_ops == len(read_run_table(gpu_run, "ops"))
    assert joined[0] == ("record_param_comms", 150_000)
    gpu = con.execute(f"select gpu from read_parquet('{root}/**/runs*.parquet')").fetchone()[0]
    assert gpu == "h100_sxm"


def test_replay_predicted_vs_measured(gpu_run):
    report = replay_mod.replay_run(gpu_run, gpu="h100")
    fams = {f.family: f for f in report.families}
    assert report.measured_available and report.gpu == "h100_sxm" and report.traced_gpu == "h100_sxm"
    assert fams["gemm"].measured_ns == 90_000 and fams["gemm"].ops == 3
    predictor = Predictor("h100_sxm")
    expected = 3 * predictor.predict_ns("gemm", {"m": 8, "n": 11008, "k": 4096}, "bf16")
    assert fams["gemm"].predicted_ns == pytest.approx(expected)
    assert fams["gemm"].error_pct == pytest.approx((expected - 90_000) / 90_000 * 100)
    assert report.total_measured_ns == sum(f.measured_ns for f in report.families)
    assert report.total_predicted_ns == pytest.approx(sum(f.predicted_ns for f in report.families))
    assert report.roofline_fallbacks  # no fitted models here: every prediction is a counted fallback


def test_replay_on_another_gpu_says_so(gpu_run):
    report = replay_mod.replay_run(gpu_run, gpu="a100")
    assert any("measured on h100_sxm, predicted for a100_sxm_80gb" in n for n in report.notes)


def test_replay_cli_json_and_table(gpu_run):
    out = CliRunner().invoke(cli, ["replay", str(gpu_run), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["gpu"] == "h100_sxm" and data["measured_available"] is True
    assert {f["family"] for f in data["families"]} >= {"gemm", "attn_prefill", "all_reduce"}
    assert data["total_error_pct"] is not None
    table = CliRunner().invoke(cli, ["replay", str(gpu_run), "--gpu", "h100"])
    assert table.exit_code == 0 and "gemm" in table.output and "total" in table.output


def test_warmup_dropped_run_keeps_consistent_links(tmp_path):
    run = write_gpu_run(tmp_path / "warm", steps_count=3, warmup_steps=1)
    ops = load_trace_ops(run)
    assert len([u for u in ops.units if u.name == "aten::linear"]) == 2 and ops.unattributed_count == 0
