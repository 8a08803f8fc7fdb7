"""Result files: vLLM header keys, revati extras, merging, JSONL records, the summary table."""

from __future__ import annotations

import json
import math

import pytest
from rich.console import Console

from revati.errors import BadInput
from revati.metrics.aggregate import compute_metrics
from revati.metrics.records import RequestRecord, read_jsonl, write_jsonl
from revati.metrics.result import RunExtras, build_result, merge_extras, read_result, write_result
from revati.metrics.summary import print_summary


def _result(**kw):
    recs = [RequestRecord(0, 0.0, send_s=0.0, token_times_s=[0.1, 0.2], prompt_tokens=5, output_tokens=2, success=True)]
    return build_result(compute_metrics(recs, 4.0), backend="openai", model_id="m", num_prompts=1,
                        request_rate=math.inf, burstiness=1.0, max_concurrency=None, **kw)


def test_header_and_extras():
    r = _result(extras=RunExtras(wall_duration_s=0.5, fallback_op_count=3, gpu="h100_sxm", model="llama",
                                 engine_config={"max_num_seqs": 8}, versions={"torch": "2.13"}))
    for key in ("date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
                "request_rate", "burstiness", "max_concurrency", "duration"):
        assert key in r
    assert r["request_rate"] == "inf"          # vLLM writes the string for an infinite rate
    assert r["virtual_duration_s"] == 4.0 and r["speedup"] == pytest.approx(8.0)
    assert r["fallback_op_count"] == 3 and r["engine_config"] == {"max_num_seqs": 8}
    json.dumps(r)                               # serialisable


def test_merge_extras_fills_wall_time(tmp_path):
    path = write_result(_result(), tmp_path / "metrics.json")
    assert read_result(path)["speedup"] is None
    merged = merge_extras(path, RunExtras(wall_duration_s=2.0, gpu="a100"))
    assert merged["speedup"] == pytest.approx(2.0) and read_result(path)["gpu"] == "a100"
    merge_extras(path, RunExtras(fallback_op_count=1))
    assert read_result(path)["gpu"] == "a100"   # unknown new values keep known old ones
    (tmp_path / "x.json").write_text("[1]")
    with pytest.raises(BadInput):
        read_result(tmp_path / "x.json")
    with pytest.raises(ValueError):
        RunExtras(wall_duration_s=0)


def test_jsonl_round_trip(tmp_path):
    recs = [RequestRecord(1, 0.5, send_s=0.6, token_times_s=[0.7, 0.9], done_s=1.0, prompt_tokens=3,
                          output_tokens=2, success=True)]
    path = write_jsonl(recs, tmp_path / "r.jsonl")
    line = json.loads(path.read_text())
    assert line["ttft_ms"] == pytest.approx(100) and line["itl_ms"] == [pytest.approx(200)]
    assert read_jsonl(path) == recs
    assert recs[0].client_queue_s == pytest.approx(0.1)


def test_summary_table_prints_vllm_labels():
    console = Console(record=True, width=100)
    print_summary(_result(goodput_slos_ms={"ttft": 1.0}), console)
    text = console.export_text()
    for label in ("Successful requests", "Benchmark duration (s)", "Mean TTFT (ms)", "P99 ITL (ms)",
                  "Median E2EL (ms)", "Virtual duration (s)"):
        assert label in text
