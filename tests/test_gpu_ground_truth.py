"""The ground-truth scripts' pipeline on the CPU: script -> revati trace -> Parquet -> DuckDB ->
op units -> revati replay. (On a GPU the same commands produce device times: README.md there.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from revati.replay.trace_ops import load_trace_ops
from revati.run_folder import read_run_table

PY = sys.executable
SCRIPTS = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_ground_truth"


def _trace(run: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "revati", "trace", "-q", "-o", str(run), "--warmup-steps", "1", "--",
                           PY, str(SCRIPTS / script), "--device", "cpu", "--tiny", *args],
                          capture_output=True, text=True, timeout=600)


def _replay(run: Path) -> dict:
    out = subprocess.run([PY, "-m", "revati", "replay", str(run), "--gpu", "h100", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_microbench_pipeline(tmp_path):
    run = tmp_path / "gt-micro"
    events = tmp_path / "events.jsonl"
    out = _trace(run, "microbench.py", "--reps", "2", "--out", str(events))
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    samples = [r for r in lines if r["kind"] == "sample"]
    assert lines[0]["kind"] == "header" and lines[-1]["kind"] == "footer"
    assert len(samples) == 10 * 2 and {s["op"] for s in samples} == {"gemm", "attn_prefill", "attn_decode"}

    con = duckdb.connect()
    cases = con.execute(f"""select name, count(*) from read_parquet('{tmp_path}/**/ops*.parquet')
                            where name like 'gemm %' or name like 'attn_%' group by 1""").fetchall()
    assert len(cases) == 10 and all(n == 2 for _, n in cases)  # warm-up pass dropped
    units = load_trace_ops(run).units
    gemms = sorted({tuple(sorted(u.mapped[0].params_dict.items())) for u in units if u.family == "gemm"})
    assert (("k", 64), ("m", 32), ("n", 96)) in gemms and len(gemms) == 6
    decode = next(u for u in units if u.family == "attn_decode")
    assert decode.mapped[0].params_dict["num_kv_heads"] == 2
    report = _replay(run)
    assert report["measured_available"] is False and report["units"] == 20


@pytest.mark.slow
@pytest.mark.hf
def test_hf_generate_pipeline(tmp_path):
    pytest.importorskip("transformers", reason="hf_generate.py needs transformers")
    run = tmp_path / "gt-hf"
    out = _trace(run, "hf_generate.py", "--out", str(tmp_path / "e2e.jsonl"))
    assert out.returncode == 0, out.stderr
    ops = read_run_table(run, "ops").to_pylist()
    assert {o["step"] for o in ops} == {1, 2, 3, 4}  # 4 timed generate calls; warm-up dropped
    fams = {u.family for u in load_trace_ops(run).units}
    assert {"gemm", "attn_prefill", "attn_decode", "embedding"} <= fams
    (row,) = read_run_table(run, "runs").to_pylist()
    assert row["engine"] == "transformers" and row["engine_version"]
    assert _replay(run)["total_predicted_ns"] > 0


def test_vllm_script_documents_itself_without_vllm():
    out = subprocess.run([PY, str(SCRIPTS / "vllm_static.py"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--eager" in out.stdout
