"""ShareGPT and custom prompt files, read as vllm bench serve reads them (small files written here)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from revati.errors import BadInput
from revati.workload.datasets import read_custom, read_sharegpt
from revati.workload.spec import WorkloadConfig, build_workload


def encode(text: str) -> list[int]:  # a word-level tokenizer: one token per word
    return [len(w) for w in text.split()]


def _sharegpt(path, n=6):
    data = [{"id": str(i), "conversations": [{"from": "human", "value": " ".join(["ask"] * (5 + i))},
                                             {"from": "gpt", "value": " ".join(["answer"] * (10 + i))}]}
            for i in range(n)]
    data += [{"id": "one-turn", "conversations": [{"from": "human", "value": "alone in the conversation here"}]},
             {"id": "short", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "a b c d e"}]},
             {"id": "long", "conversations": [{"from": "human", "value": "w " * 1500}, {"from": "gpt", "value": "a b c d"}]}]
    path.write_text(json.dumps(data))
    return path


def test_sharegpt_keeps_two_turn_pairs_of_sane_length_shuffled_by_seed(tmp_path):
    path = _sharegpt(tmp_path / "sg.json")
    pairs = read_sharegpt(path, encode, num_prompts=6, seed=0)
    assert sorted(len(ids) for ids, _ in pairs) == [5, 6, 7, 8, 9, 10]  # short, long, one-turn left out
    assert all(out == len(ids) + 5 for ids, out in pairs)  # output = the reply's token count
    again = read_sharegpt(path, encode, num_prompts=6, seed=0)
    other = read_sharegpt(path, encode, num_prompts=6, seed=1)
    assert pairs == again and pairs != other
    fixed = read_sharegpt(path, encode, num_prompts=8, seed=0, output_len=3)
    assert len(fixed) == 8 and {out for _, out in fixed} == {3}  # repeated to num_prompts


def test_custom_reads_prompts_in_order_and_repeats_them(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"prompt": "one two"}\n\n{"prompt": "three four five"}\n')
    assert read_custom(path, encode, num_prompts=3, output_len=7) == [([3, 3], 7), ([5, 4, 4], 7), ([3, 3], 7)]


@pytest.mark.parametrize("content, message", [
    ('{"text": "x"}\n', 'line 1: no "prompt" string'),
    ("not json\n", "line 1: not JSON"),
])
def test_custom_bad_lines_name_the_line(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(BadInput, match=message):
        read_custom(path, encode, num_prompts=1)


def test_sharegpt_that_is_not_a_list_or_not_json(tmp_path):
    (tmp_path / "a.json").write_text('{"conversations": []}')
    with pytest.raises(BadInput, match="JSON list"):
        read_sharegpt(tmp_path / "a.json", encode, 1)
    (tmp_path / "b.json").write_text("[{")
    with pytest.raises(BadInput, match="not JSON"):
        read_sharegpt(tmp_path / "b.json", encode, 1)


def test_workload_carries_the_prompts_tokens_and_needs_a_tokenizer(tmp_path):
    path = _sharegpt(tmp_path / "sg.json")
    cfg = WorkloadConfig(dataset_name="sharegpt", dataset_path=str(path), num_prompts=4, request_rate=2.0)
    reqs = build_workload(cfg, encode)
    assert len(reqs) == 4 and all(r.prompt_token_ids and len(r.prompt_token_ids) == r.prompt_tokens for r in reqs)
    assert [r.arrival_s for r in reqs] == sorted(r.arrival_s for r in reqs)
    with pytest.raises(BadInput, match="needs a tokenizer"):
        build_workload(cfg)
    with pytest.raises(ValueError, match="needs dataset_path"):
        WorkloadConfig(dataset_name="custom")


@pytest.mark.hf
def test_main_job_replays_a_sharegpt_file(tmp_path):
    pytest.importorskip("transformers")
    path = _sharegpt(tmp_path / "sg.json")
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "--model", "tiny-llama", "--dataset-name", "sharegpt",
                           "--dataset-path", str(path), "--num-prompts", "4", "--sharegpt-output-len", "6",
                           "--result-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["completed"] == 4 and metrics["total_output_tokens"] == 24
