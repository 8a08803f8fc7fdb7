"""`revati trace` on real torch programs (CPU build, no GPU): the Kineto backend end to end.

Program -> injected tracer -> Parquet run folder -> DuckDB -> replay."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import duckdb
import pytest

from revati.replay.kernel_db.trace_ops import load_trace_ops
from revati.run_folder import read_proc_metas, read_run_table

PY = sys.executable

PROGRAM = """
import torch
import revati.tracer as rt

x = torch.randn(8, 64)
w = torch.randn(128, 64)
q = torch.randn(1, 4, 16, 32)
for i in range(4):
    y = torch.nn.functional.linear(x, w)
    torch.softmax(y, -1).sum()
    torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    rt.step()
print("steps", rt.step.__module__, rt.is_tracing())
"""


def _trace(tmp_path, program: str, *extra: str, name: str = "run"):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(program))
    run = tmp_path / name
    out = subprocess.run([PY, "-m", "revati", "trace", "-o", str(run), *extra, "--", PY, str(script)],
                         capture_output=True, text=True, timeout=300)
    return run, out


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kineto_e2e")
    run, out = _trace(tmp, PROGRAM, "--warmup-steps", "1")
    assert out.returncode == 0, out.stderr
    return run, out


def test_no_device_timing_is_said_plainly(cpu_run):
    run, out = cpu_run
    assert "no device timing" in out.stderr and "host-side ops only" in out.stderr
    assert "steps revati.tracer True" in out.stdout  # the program ran traced, output untouched
    (row,) = read_run_table(run, "runs").to_pylist()
    assert "no device timing" in row["notes"] and row["backends"] == ["kineto"]
    assert row["torch_version"].startswith("2.") and row["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert row["cmdline"].endswith("prog.py") and row["gpu"] is None
    assert read_run_table(run, "kernels").num_rows == 0


def test_host_ops_with_shapes_steps_and_warmup(cpu_run):
    run, _ = cpu_run
    ops = read_run_table(run, "ops").to_pylist()
    linears = [o for o in ops if o["name"] == "aten::linear"]
    assert len(linears) == 3  # 4 steps, the first dropped as warm-up
    assert {o["step"] for o in linears} == {1, 2, 3}
    assert linears[0]["input_dims"][:2] == [[8, 64], [128, 64]] and linears[0]["input_dtypes"][:2] == ["float", "float"]
    mm = next(o for o in ops if o["name"] == "aten::mm")
    parent = next(o for o in ops if o["op_id"] == mm["parent_op_id"])
    assert parent["name"] in ("aten::matmul", "aten::linear") and mm["depth"] > parent["depth"]
    (meta,) = read_proc_metas(run)
    assert meta["steps_marked"] == 4 and meta["dropped_warmup_rows"] > 0 and meta["cuda_activity"] is False
    assert (run / f"steps.{meta['pid']}.jsonl").exists()


def test_readable_by_duckdb_and_mapped_to_the_vocabulary(cpu_run):
    run, _ = cpu_run
    con = duckdb.connect()
    names = dict(con.execute(f"select name, count(*) from read_parquet('{run}/**/ops*.parquet') group by 1").fetchall())
    assert names["aten::linear"] == 3
    units = load_trace_ops(run).units
    fams = {u.family for u in units}
    assert {"gemm", "attn_prefill"} <= fams
    gemm = next(u for u in units if u.family == "gemm")
    assert gemm.mapped[0].params_dict == {"m": 8, "n": 128, "k": 64} and gemm.measured_ns is None


def test_replay_reports_predicted_only(cpu_run):
    run, _ = cpu_run
    out = subprocess.run([PY, "-m", "revati", "replay", str(run), "--gpu", "h100", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["measured_available"] is False and data["total_measured_ns"] is None
    assert data["total_predicted_ns"] > 0 and any("no device timing" in n for n in data["notes"])


def test_processes_that_never_import_torch_write_nothing(tmp_path):
    run, out = _trace(tmp_path, "print('hello')")
    assert out.returncode == 0, out.stderr
    assert read_proc_metas(run) == []
    (row,) = read_run_table(run, "runs").to_pylist()
    assert "no traced Python process imported torch" in row["notes"]


def test_exit_status_passes_through_and_tables_are_still_written(tmp_path):
    import gzip

    run, out = _trace(tmp_path, "import torch\ntorch.ones(3).sum()\nraise SystemExit(3)", "--keep-raw",
                      "--run-id", "exit-3")
    assert out.returncode == 3 and "exited with status 3" in out.stderr
    ops = read_run_table(run, "ops")
    assert ops.num_rows > 0 and set(ops.column("run_id").to_pylist()) == {"exit-3"}
    (raw,) = (run / "raw").glob("kineto.*.json.gz")
    events = json.loads(gzip.decompress(raw.read_bytes()))["traceEvents"]
    assert any(e.get("name") == "aten::sum" for e in events)


MULTIPROC = """
import multiprocessing as mp
import torch

def work(n):
    torch.ones(n, n).mm(torch.ones(n, n))

if __name__ == "__main__":
    work(4)
    for method in ("fork", "spawn"):
        p = mp.get_context(method).Process(target=work, args=(8 if method == "fork" else 16,))
        p.start()
        p.join()
"""


@pytest.mark.slow
def test_every_process_writes_its_own_tables(tmp_path):
    run, out = _trace(tmp_path, MULTIPROC)
    assert out.returncode == 0, out.stderr
    metas = read_proc_metas(run)
    assert len(metas) == 3 and sum(1 for m in metas if m["forked_child"]) == 1
    mms = [o for o in read_run_table(run, "ops").to_pylist() if o["name"] == "aten::mm"]
    assert sorted(o["input_dims"][0][0] for o in mms) == [4, 8, 16]
    assert len({o["pid"] for o in mms}) == 3


SLEEPER = """
import sys, time, torch
torch.ones(4).sum()
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm-to-revati", "ctrl-c-to-the-group"])
def test_interrupted_runs_still_write_their_tables(tmp_path, how):
    import os
    import signal

    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    run = tmp_path / "run"
    proc = subprocess.Popen([PY, "-m", "revati", "trace", "-q", "-o", str(run), "--", PY, str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if how == "sigterm-to-revati":
            proc.send_signal(signal.SIGTERM)
        else:  # what a terminal does on Ctrl-C: the whole foreground group gets SIGINT
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (128 + signal.SIGTERM if how == "sigterm-to-revati" else 1)
    assert any(o["name"] == "aten::sum" for o in read_run_table(run, "ops").to_pylist())
    assert (run / "runs.parquet").exists()
