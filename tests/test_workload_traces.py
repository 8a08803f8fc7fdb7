"""Recorded traces: the shipped Azure tables, Mooncake JSONL, prompts with shared prefixes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from revati import parquet_io
from revati.errors import BadInput
from revati.paths import embedded_traces_dir
from revati.workload import WorkloadRequest
from revati.workload.azure import convert_csv, parse_timestamp_ns
from revati.workload.prompts import PromptBuilder
from revati.workload.traces import (load_request_trace, read_mooncake_jsonl, shipped_traces, trace_requests,
                                    write_mooncake_jsonl)

from pathlib import Path

# shared/ sits beside the repository (CI, worktrees) or at /work/shared (the project machines)
_SPLITWISE = "data/vidur/request_traces/splitwise_conv.csv"
SPLITWISE_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / _SPLITWISE,
                        Path(__file__).resolve().parents[1] / "shared" / _SPLITWISE,
                        Path("/work/shared") / _SPLITWISE]


def test_shipped_azure_traces_and_licence():
    names = shipped_traces()
    assert {"azure_conv_2023", "azure_code_2023"} <= set(names)
    folder = embedded_traces_dir() / "workloads"
    assert "Splitwise" in (folder / "README.md").read_text()
    assert "Attribution 4.0" in (folder / "LICENSE-CC-BY-4.0.txt").read_text(encoding="utf-8-sig")
    t = load_request_trace("azure_conv_2023")
    assert t.num_rows == 19366
    arr = np.asarray(t.column("arrival_ns").to_pylist())
    assert arr[0] == 0 and np.all(np.diff(arr) >= 0)
    assert 3500 < arr[-1] / 1e9 < 3600            # one hour


def test_azure_arrivals_agree_with_vidurs_independent_conversion():
    found = [p for p in SPLITWISE_CANDIDATES if p.exists()]
    if not found:
        pytest.skip("shared/data/vidur not present beside the repository")
    with found[0].open() as fh:
        rows = list(csv.DictReader(fh))[:200]
    ours = trace_requests(load_request_trace("azure_conv_2023"), max_requests=200)
    for mine, theirs in zip(ours, rows):
        assert mine.arrival_s == pytest.approx(float(theirs["arrived_at"]), abs=1e-6)
        assert mine.prompt_tokens == int(theirs["num_prefill_tokens"])


def test_convert_csv_and_timestamp_parsing(tmp_path):
    assert parse_timestamp_ns("2023-11-16 18:17:03.9799600") % 10**9 == 979_960_000
    src = tmp_path / "t.csv"
    src.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                   "2023-11-16 18:00:01.5,10,2\n2023-11-16 18:00:00.25,20,0\n")
    table = convert_csv(src, "x")
    assert table.column("arrival_ns").to_pylist() == [0, 1_250_000_000]
    assert table.column("input_tokens").to_pylist() == [20, 10]
    out = parquet_io.write_table(table, "request_trace", tmp_path / "x.parquet")
    reqs = trace_requests(load_request_trace(out))
    assert reqs[0].output_tokens == 1 and reqs[1].arrival_s == 1.25
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BadInput, match="expected columns"):
        convert_csv(tmp_path / "bad.csv", "x")


def test_mooncake_round_trip_and_prefix_sharing(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"timestamp": 3052, "input_length": 1000, "output_length": 5, "hash_ids": [0, 2]}\n'
        '{"timestamp": 0, "input_length": 600, "output_length": 7, "hash_ids": [0, 1]}\n'
        '{"timestamp": 3052, "input_length": 300, "output_length": 1, "hash_ids": [3]}\n'
    )
    reqs = read_mooncake_jsonl(path)
    assert [r.arrival_s for r in reqs] == [0.0, 3.052, 3.052]
    assert [r.prompt_tokens for r in reqs] == [600, 1000, 300]
    builder = PromptBuilder(vocab_size=1000, seed=5)
    a, b, c = (builder.token_ids(r) for r in reqs)
    assert len(a) == 600 and len(b) == 1000 and len(c) == 300
    assert a[:512] == b[:512]                      # block 0 shared
    assert a[512:600] != b[512:600]                # block 1 vs block 2
    assert builder.token_ids(reqs[0]) == a          # deterministic
    out = write_mooncake_jsonl(reqs, tmp_path / "out.jsonl")
    back = [json.loads(line) for line in out.read_text().splitlines()]
    assert back[1] == {"timestamp": 3052, "input_length": 1000, "output_length": 5, "hash_ids": [0, 2]}


def test_mooncake_bad_lines_are_bad_input(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"timestamp": 1, "input_length": "x"}\n')
    with pytest.raises(BadInput, match="line 1"):
        read_mooncake_jsonl(p)
    with pytest.raises(BadInput, match="no such file"):
        read_mooncake_jsonl(tmp_path / "missing.jsonl")


def test_written_mooncake_without_hashes_gets_unshared_blocks(tmp_path):
    reqs = [WorkloadRequest(0, 0.0, 1025, 4), WorkloadRequest(1, 0.5, 10, 4)]
    lines = [json.loads(x) for x in write_mooncake_jsonl(reqs, tmp_path / "w.jsonl").read_text().splitlines()]
    assert lines[0]["hash_ids"] == [0, 1, 2] and lines[1]["hash_ids"] == [3]
    assert lines[1]["timestamp"] == 500


def test_text_prompts_count_the_special_tokens_the_server_adds(tmp_path):
    # as `vllm bench serve` does: --random-input-len 32 is 32 tokens at the server, BOS included
    transformers = pytest.importorskip("transformers")
    from revati.models_zoo import write_model_dir
    from revati.workload.request import WorkloadRequest

    tok = transformers.AutoTokenizer.from_pretrained(str(write_model_dir("tiny-llama", tmp_path / "m")))
    added = tok.num_special_tokens_to_add()
    assert added == 1    # Llama's BOS
    builder = PromptBuilder(seed=3, tokenizer=tok, added_special_tokens=added)
    for i in range(4):
        text = builder.text(WorkloadRequest(request_id=i, arrival_s=0.0, prompt_tokens=32, output_tokens=4))
        assert len(tok(text)["input_ids"]) == 32
