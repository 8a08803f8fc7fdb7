"""revati's benchmark client against a real OpenAI-compatible server: ``transformers serve``
(HF transformers' FastAPI/uvicorn server) with a tiny random Llama built in a temp folder, on CPU.

transformers serve accepts only text prompts and rejects unknown fields (so vLLM's
``ignore_eos`` gets a 422); the client fixes output lengths there with a ``generation_config``
(min = max new tokens), which the tests check token by token.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("transformers", reason="needs transformers")
try:
    from transformers.utils.import_utils import is_serve_available
except ImportError:  # pragma: no cover - very old transformers
    is_serve_available = None
if is_serve_available is None or not is_serve_available():
    pytest.skip("transformers serve needs its serving extra: pip install 'revati[hf]'", allow_module_level=True)

from revati.bench.client import ClientConfig, wait_until_ready  # noqa: E402
from revati.bench.serve import BenchConfig, run_bench  # noqa: E402
from revati.metrics.aggregate import MetricsConfig  # noqa: E402
from revati.metrics.records import read_jsonl  # noqa: E402
from revati.workload import WorkloadConfig  # noqa: E402
from tiny_llama import make_tiny_llama  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.hf]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model_dir = make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
    port = _free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "w+")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
         "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        if not asyncio.run(wait_until_ready(base_url, timeout_s=120)):
            log.seek(0)
            pytest.fail(f"transformers serve did not start:\n{log.read()[-3000:]}")
        yield base_url, model_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_completions_cli_fixed_lengths_and_metrics(server, tmp_path):
    base_url, model_dir = server
    out = tmp_path / "res"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "revati", "bench", "serve", "--base-url", base_url, "--model", str(model_dir),
         "--num-prompts", "6", "--random-input-len", "24", "--random-output-len", "7", "--request-rate", "20",
         "--max-concurrency", "4", "--length-control", "hf_generation_config",
         "--goodput", "ttft:60000", "tpot:60000", "--result-dir", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["completed"] == 6 and m["failed"] == 0
    assert m["total_input_tokens"] == 6 * 24          # word-level tokenizer: text prompts are exact
    assert m["total_output_tokens"] == 6 * 7           # ignore-EOS via min_new_tokens held
    assert m["request_goodput"] == pytest.approx(m["request_throughput"])
    assert 0 < m["p50_ttft_ms"] <= m["p99_ttft_ms"] <= m["p99_e2el_ms"]
    assert m["max_concurrent_requests"] <= 4
    assert m["workload"]["prompt_format"] == "text" and m["tokenizer_id"] == str(model_dir)
    assert m["duration"] < time.perf_counter() - t0    # outside emulation: a real, shorter span
    recs = read_jsonl(out / "requests.jsonl")
    assert [r.output_tokens for r in recs] == [7] * 6
    for r in recs:
        assert r.success and 1 <= len(r.token_times_s) <= 7
        assert r.send_s >= r.scheduled_s and r.token_times_s[0] > r.send_s


def test_chat_completions(server):
    base_url, model_dir = server
    cfg = BenchConfig(
        client=ClientConfig(base_url, str(model_dir), backend="openai-chat", length_control="hf_generation_config"),
        workload=WorkloadConfig(num_prompts=3, random_input_len=10, random_output_len=5, seed=1),
        metrics=MetricsConfig(percentiles=(50.0,)), quiet=True)
    m = run_bench(cfg)
    assert m["completed"] == 3 and m["total_output_tokens"] == 15
    assert m["endpoint_type"] == "openai-chat"


def test_vllm_ignore_eos_is_rejected_by_transformers_and_recorded(server):
    base_url, model_dir = server
    cfg = BenchConfig(client=ClientConfig(base_url, str(model_dir)),
                      workload=WorkloadConfig(num_prompts=2, random_input_len=5, random_output_len=3), quiet=True)
    m = run_bench(cfg)
    assert m["completed"] == 0 and m["failed"] == 2
