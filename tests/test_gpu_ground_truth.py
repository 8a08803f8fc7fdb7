"""The ground-truth scripts' pipeline on the CPU: script -> revati trace -> Parquet -> DuckDB ->
op units -> revati replay. (On a GPU the same commands produce device times: README.md there.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from revati.replay.kernel_db.trace_ops import load_trace_ops
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


@pytest.mark.slow
@pytest.mark.hf
def test_run_all_on_the_cpu_produces_every_phase(tmp_path):
    """The one-command GPU session (run_all.sh), end to end with --tiny on the CPU: the same
    script runs unchanged on a GPU box (traces/gpu/h100-2026-12-05 came from it)."""
    import tarfile

    pytest.importorskip("transformers", reason="the main job and hf_generate.py need transformers")
    dest = tmp_path / "out"
    env = {**__import__("os").environ, "PYTHON": PY, "MAIN_REPEATS": "1", "TMPDIR": str(tmp_path)}
    out = subprocess.run(["bash", str(SCRIPTS / "run_all.sh"), str(dest), "--tiny"], capture_output=True,
                         text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    log = (dest / "run_all.log").read_text()
    for phase in ("calibrate", "main-job-1", "main-busy", "main-gqa", "microbench", "hf-generate"):
        assert f"== {phase}: exit 0" in log, log[-3000:]
    names = {t: tarfile.open(dest / f"{t}.tar.gz").getnames() for t in ("gt-main", "gt-micro", "gt-hf")}
    assert "main/rate4-1/metrics.json" in names["gt-main"] and "main/host_score.json" in names["gt-main"]
    # (op_samples need device time: a GPU run has them, the CPU check has the ops and the events)
    assert "gt-micro/events.jsonl" in names["gt-micro"] and "gt-hf/e2e.jsonl" in names["gt-hf"]
    assert any(n.startswith("gt-micro/ops.") for n in names["gt-micro"])
    with tarfile.open(dest / "gt-main.tar.gz") as tar:
        metrics = json.load(tar.extractfile("main/rate4-1/metrics.json"))
    assert metrics["completed"] == 4 and metrics["gpu"].startswith("native: ")


def test_compare_reads_the_shipped_h100_ground_truth(tmp_path):
    folder = Path(__file__).resolve().parent.parent / "traces" / "gpu" / "h100-2026-12-05"
    out = subprocess.run([PY, str(SCRIPTS / "compare.py"), str(folder), "--json", str(tmp_path / "c.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "== kernels: revati vs traced device time" in out.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    gemm = data["kernels"]["gemm"]
    # the interpolation rung on held-out sweep points of the trace's own stack beats the roofline
    assert gemm["ladder_held_out"]["answered_by"] == {"interpolated": gemm["ladder_held_out"]["n"]}
    assert gemm["ladder_held_out"]["mape_pct"] < gemm["tuned_roofline"]["mape_pct"]
    assert "main-b/rate4-3" in out.stdout
