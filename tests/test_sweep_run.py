"""Running sweeps for real (each run a process): parallelism, resume, retry, the results table,
the SLO search, and the CLI."""

from __future__ import annotations

import json
import os
import shlex
import sys

import duckdb
import pytest
from click.testing import CliRunner

from revati import parquet_io
from revati.cli import cli
from revati.errors import BadInput
from revati.sweep.config import load_sweep
from revati.sweep.run import run_sweep
from revati.sweep.runner import read_run_state, run_dir_of
from sweep_helpers import SELFTEST, write_sweep


def test_parallel_run_results_table_and_resume(tmp_path):
    cfg = load_sweep(write_sweep(tmp_path / "s.yaml", tmp_path / "out"))
    first = run_sweep(cfg, jobs=2, quiet=True)
    assert len(first.runs) == 4 and not first.failed_ids
    assert sum(len(r.ran) for r in first.reports) == 4
    table = parquet_io.read_table(first.results_path, "sweep_results")
    assert table.num_rows == 4 and set(table.column("status").to_pylist()) == {"ok"}
    # DuckDB sees it; throughput grows with the rate for each max_num_seqs
    rows = duckdb.sql(
        f"SELECT json_extract(config_json, '$.engine.max_num_seqs')::INT AS seqs, request_rate, output_throughput "
        f"FROM read_parquet('{first.results_path}') ORDER BY seqs, request_rate").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(16, 4.0), (16, 16.0), (64, 4.0), (64, 16.0)]
    assert rows[1][2] > rows[0][2] and rows[3][2] > rows[2][2]
    metrics = json.loads(table.column("metrics_json")[0].as_py())
    assert metrics["engine"] == "revati-selftest" and table.column("p99_ttft_ms")[0].as_py() > 0

    again = run_sweep(cfg, jobs=2, quiet=True)
    assert sum(len(r.ran) for r in again.reports) == 0 and len(again.reports[0].skipped_ok) == 4
    # a run whose metrics vanished is not done: only it runs again
    victim = first.runs[1]
    (run_dir_of(cfg.sweep_dir, victim.run_id) / "metrics.json").unlink()
    third = run_sweep(cfg, jobs=2, quiet=True)
    assert [o.run_id for o in third.reports[0].ran] == [victim.run_id]
    assert read_run_state(run_dir_of(cfg.sweep_dir, victim.run_id))["attempts"] == 2


def test_failed_runs_are_retried_only_when_asked(tmp_path):
    marker = tmp_path / "fail-now"
    marker.write_text("x")
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", engine={"max_num_seqs": 8},
                       workload={"request_rate": [4, 8], "num_prompts": 20},
                       command=SELFTEST + f" --fail-if-exists {shlex.quote(str(marker))}")
    cfg = load_sweep(path)
    out = run_sweep(cfg, jobs=2, quiet=True)
    assert len(out.failed_ids) == 2
    state = read_run_state(run_dir_of(cfg.sweep_dir, out.failed_ids[0]))
    assert state["status"] == "failed" and state["exit_code"] == 3
    assert "failing on purpose" in (run_dir_of(cfg.sweep_dir, out.failed_ids[0]) / "stderr.log").read_text()
    table = parquet_io.read_table(out.results_path, "sweep_results")
    assert table.column("status").to_pylist() == ["failed", "failed"]

    marker.unlink()
    skipped = run_sweep(cfg, jobs=2, quiet=True)
    assert len(skipped.reports[0].skipped_failed) == 2 and sum(len(r.ran) for r in skipped.reports) == 0
    retried = run_sweep(cfg, jobs=2, retry_failed=True, quiet=True)
    assert not retried.failed_ids and len(retried.reports[0].ran) == 2
    assert read_run_state(run_dir_of(cfg.sweep_dir, retried.runs[0].run_id))["attempts"] == 2


def test_exit_zero_without_metrics_is_a_failure(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", gpus=[], engine={}, workload={"x": 1},
                       command=f"{shlex.quote(sys.executable)} -c pass")
    out = run_sweep(load_sweep(path), jobs=1, quiet=True)
    assert len(out.failed_ids) == 1
    assert "no metrics.json" in read_run_state(run_dir_of(out.sweep_dir, out.failed_ids[0]))["error"]


def test_slo_search_brackets_the_highest_rate(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", engine={"max_num_seqs": 16},
                       workload={"num_prompts": 40, "random_input_len": 256, "random_output_len": 32},
                       slo_search={"ttft_ms": 100, "tpot_ms": 15, "rate_low": 1, "rate_high": 256, "iterations": 3})
    out = run_sweep(load_sweep(path), jobs=2, quiet=True)
    (res,) = out.slo_results
    assert res["max_rate"] is not None and not res["at_upper_bound"]
    lo, hi = res["bracket"]
    assert lo < hi
    by_rate = {p["request_rate"]: p for p in res["probes"]}
    assert by_rate[lo]["meets"] and not by_rate[hi]["meets"]
    assert by_rate[lo]["p99_ttft_ms"] <= 100 and by_rate[lo]["p99_tpot_ms"] <= 15
    assert len(res["probes"]) == 2 + 3
    saved = json.loads((out.sweep_dir / "slo_search.json").read_text())
    assert saved[0]["max_rate"] == res["max_rate"]
    table = parquet_io.read_table(out.results_path, "sweep_results")
    assert sorted(table.column("request_rate").to_pylist()) == sorted(by_rate)


def test_cli_dry_run_and_failure_exit(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out")
    res = CliRunner().invoke(cli, ["sweep", path, "--dry-run"])
    assert res.exit_code == 0 and res.output.count("revati.bench.selftest") == 4
    bad = write_sweep(tmp_path / "b.yaml", tmp_path / "out2", gpus=[], engine={}, workload={"x": 1},
                      command=f"{shlex.quote(sys.executable)} -c 'raise SystemExit(5)'")
    res = CliRunner().invoke(cli, ["sweep", bad, "-q", "-j", "1"])
    assert res.exit_code == 1 and "1 run(s) failed" in res.output
    res = CliRunner().invoke(cli, ["sweep", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 1 and "no such file" in res.output and "Traceback" not in res.output


def test_default_sweep_dir_is_seen_by_the_db_glob(tmp_path, isolated_home):
    path = write_sweep(tmp_path / "s.yaml", None, engine={"max_num_seqs": 8},
                       workload={"request_rate": 4, "num_prompts": 10})
    out = run_sweep(load_sweep(path), jobs=1, quiet=True)
    assert out.results_path == isolated_home / "traces" / "sweeps" / "t" / "sweep_results.parquet"
    # the glob revati db's sweep_results view reads under $REVATI_HOME/traces
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{isolated_home}/traces/**/sweep_results*.parquet') "
                   "WHERE status = 'ok'").fetchall()[0][0]
    assert n == 1


def test_a_sweep_of_real_emulations_orders_the_gpus(tmp_path):
    """Each run is `revati emulate` running the main job (HF continuous batching, tiny model):
    the sweep table holds the emulations' metrics, and the A100 is slower than the H100 (host
    CPU time not counted: a tiny model's steps are host-bound and this machine is noisy)."""
    command = (f"{shlex.quote(sys.executable)} -m revati emulate -q --no-host-cpu --gpu {{gpu}} --model tiny-llama "
               "--result-dir {run_dir} {workload_args}")
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", gpus=["h100", "a100"], command=command,
                       engine={},
                       workload={"request_rate": 8, "num_prompts": 6, "random_input_len": 64,
                                 "random_output_len": 8})
    cfg = load_sweep(path)
    out = run_sweep(cfg, jobs=2, quiet=True)
    assert not out.failed_ids, [read_run_state(run_dir_of(cfg.sweep_dir, r)) for r in out.failed_ids]
    table = parquet_io.read_table(out.results_path, "sweep_results").to_pylist()
    by_gpu = {row["gpu"]: row for row in table}
    assert set(by_gpu) == {"h100", "a100"} and all(r["status"] == "ok" for r in table)
    assert all(r["completed"] == 6 for r in table)
    assert by_gpu["a100"]["mean_tpot_ms"] > by_gpu["h100"]["mean_tpot_ms"] > 0


# -- every key checked before the first run (issue 15, item 4) -----------------------------------

def _one_line(res, *needles: str) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error:"), res.output
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("over, needles", [
    # argparse would take --num-prompt as --num-prompts, and --request-rat as --request-rate
    ({"workload": {"request_rat": [4, 16], "num_prompts": 40}},
     ["workload key 'request_rat'", "revati.bench.selftest", "did you mean request_rate?", "valid keys:",
      "num_prompts"]),
    ({"workload": {"request_rate": 4, "num_prompt": 40}}, ["workload key 'num_prompt'", "did you mean num_prompts?"]),
    ({"engine": {"max_num_seq": [16, 64]}}, ["engine key 'max_num_seq'", "did you mean max_num_seqs?"]),
    ({"workload": {"request_rate": 4, "colour": "red"}}, ["workload key 'colour'", "valid keys:"]),
])
def test_misspelt_keys_fail_before_any_run(tmp_path, over, needles):
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", **over)
    for extra in ([], ["--dry-run"]):
        _one_line(CliRunner().invoke(cli, ["sweep", path, "-q", *extra]), str(path), *needles)
    assert not (tmp_path / "out").exists()                 # nothing ran, nothing was written
    with pytest.raises(BadInput, match="is not a flag of"):
        run_sweep(load_sweep(path), jobs=1, quiet=True)     # the library checks too


def test_default_command_workload_keys_are_flags_of_revati_emulate(tmp_path):
    """The default command passes {workload_args} to `revati emulate` (its ignore_unknown_options
    would take a misspelt flag for the program to run)."""
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", command=None, engine_command="my-server --port 8000",
                       engine={"max_num_seqs": 8}, workload={"request_rate": 4, "num_prompt": 10})
    _one_line(CliRunner().invoke(cli, ["sweep", path, "--dry-run"]), "workload key 'num_prompt'",
              "`revati emulate`", "did you mean num_prompts?")
    ok = write_sweep(tmp_path / "ok.yaml", tmp_path / "out", command=None, engine_command="my-server --port 8000",
                     engine={"max_num_seqs_typo": 8}, workload={"request_rate": 4, "num_prompts": 10})
    res = CliRunner().invoke(cli, ["sweep", ok, "--dry-run"])       # an unknown engine program: not asked
    assert res.exit_code == 0 and "--max-num-seqs-typo 8" in res.output, res.output


def test_vllm_engine_keys_are_checked_against_its_full_help(tmp_path, monkeypatch):
    """vLLM lists its engine flags under --help=all; a fake `vllm` on PATH stands in for it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "vllm"
    fake.write_text("#!/bin/sh\n"
                    "if [ \"$3\" = \"--help=all\" ]; then\n"
                    "  printf 'usage: vllm serve [model_tag] [options]\\n\\noptions:\\n  -h, --help  show this\\n"
                    "  --max-num-seqs MAX_NUM_SEQS\\n                        Maximum sequences.\\n"
                    "  --enable-prefix-caching, --no-enable-prefix-caching\\n"
                    "                        Cache prefixes, e.g. --max-num-batched-tokens 8192.\\n'\n"
                    "else\n"
                    "  printf 'usage: vllm serve [model_tag] [options]\\n  -h, --help  show this\\n"
                    "Use --help=all to show all options.\\n'\n"
                    "fi\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", command=None, engine_command="vllm serve /m",
                       engine={"max_num_seqs": 8, "enable_prefix_caching": True, "max_num_batched_tokens": 8192},
                       workload={"request_rate": 4})
    _one_line(CliRunner().invoke(cli, ["sweep", path, "--dry-run"]), "engine key 'max_num_batched_tokens'",
              "`vllm serve /m`", "valid keys: enable_prefix_caching, max_num_seqs, no_enable_prefix_caching")
    ok = write_sweep(tmp_path / "ok.yaml", tmp_path / "out", command=None, engine_command="vllm serve /m",
                     engine={"max_num_seqs": 8, "enable_prefix_caching": True}, workload={"request_rate": 4})
    assert CliRunner().invoke(cli, ["sweep", ok, "--dry-run"]).exit_code == 0


@pytest.mark.parametrize("content, needle", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
    (b"gpus: [h100, h900]\nworkload: {request_rate: 1}\n", "unknown GPU 'h900'"),
])
def test_cli_binary_file_or_unknown_gpu_is_one_line(tmp_path, content, needle):
    path = tmp_path / "s.yaml"
    path.write_bytes(content)
    _one_line(CliRunner().invoke(cli, ["sweep", str(path)]), str(path), needle)


def test_a_fresh_sweep_with_an_slo_search_says_nothing_was_already_done(tmp_path):
    from revati.sweep.run import outcome_line

    path = write_sweep(tmp_path / "s.yaml", tmp_path / "out", engine={"max_num_seqs": 32},
                       workload={"request_rate": [2, 8], "num_prompts": 20, "random_output_len": 8},
                       slo_search={"ttft_ms": 200, "tpot_ms": 20, "rate_low": 2, "rate_high": 8, "iterations": 1})
    first = run_sweep(load_sweep(path), jobs=2, quiet=True)
    assert ", 0 already done by an earlier invocation" in outcome_line(first), outcome_line(first)
    again = run_sweep(load_sweep(path), jobs=2, quiet=True)
    line = outcome_line(again)
    assert " 0 ran, " in line and f"{len(again.runs)} already done" in line, line
