"""Real SGLang (0.5.23, its CUDA code path) serving under `revati emulate`: HTTP server and
tokenizer manager, scheduler, detokenizer, and the benchmark client, all in virtual time.

Needs the SGLang environment: set REVATI_SGLANG_PYTHON to its interpreter, or build it with
scripts/install_sglang_env.sh (default .venv-sglang). Each run starts a whole server (~30 s).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from engine_envs import engine_python_or_skip

pytestmark = [pytest.mark.sglang]

REPO = Path(__file__).resolve().parent.parent
NUM_PROMPTS, INPUT_LEN, OUTPUT_LEN = 6, 64, 8


SGLANG_PYTHON = engine_python_or_skip("SGLang", "REVATI_SGLANG_PYTHON", ".venv-sglang",
                                      "scripts/install_sglang_env.sh", ("sglang", "sgl_kernel"))


def _port(salt: int) -> int:
    return 20000 + (os.getpid() * 3 + 11 * salt) % 20000


def _server(model: Path, port: int, *args: str) -> list[str]:
    return [SGLANG_PYTHON, "-m", "sglang.launch_server", "--model-path", str(model), "--load-format", "dummy",
            "--port", str(port), "--context-length", "512", *args]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def serve(model: Path, out: Path, gpu: str, salt: int, *sglang_args: str) -> dict:
    """`revati emulate --serve-port P -- python -m sglang.launch_server ...` with revati's client,
    in the repeatable mode; the metrics file it wrote."""
    port = _port(salt)
    cmd = [SGLANG_PYTHON, "-m", "revati", "emulate", "--gpu", gpu, "--no-host-cpu", "--serve-port", str(port),
           "--num-prompts", str(NUM_PROMPTS), "--request-rate", "4", "--random-input-len", str(INPUT_LEN),
           "--random-output-len", str(OUTPUT_LEN), "--result-dir", str(out), "-q",
           "--", *_server(model, port, *sglang_args)]
    proc = _run(cmd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from revati.models_zoo import write_model_dir

    # Llama-2-7B's widths, 2 layers: GPU time dominates a step, and it is quick to emulate
    return write_model_dir("llama-2-7b", tmp_path_factory.mktemp("models") / "wide", num_hidden_layers=2)


@pytest.fixture(scope="module")
def served(model, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sglang-serve")
    return {gpu: serve(model, root / gpu, gpu, i) for i, gpu in enumerate(("h100", "a100"))}


def test_sglang_serves_every_request_with_the_metrics_schema(served):
    m = served["h100"]
    assert m["completed"] == NUM_PROMPTS and m["failed"] == 0
    assert m["total_output_tokens"] == NUM_PROMPTS * OUTPUT_LEN
    for key in ("mean_ttft_ms", "median_tpot_ms", "p99_itl_ms", "mean_e2el_ms", "request_throughput",
                "output_throughput", "virtual_duration_s", "wall_duration_s", "speedup"):
        assert m[key] > 0, key
    assert m["gpu"] == "h100_sxm"


def test_an_a100_serves_the_same_workload_slower_than_an_h100(served):
    h100, a100 = served["h100"], served["a100"]
    assert a100["gpu"].startswith("a100")
    # GPU time only (--no-host-cpu): every step costs more on the A100 (less bandwidth and compute)
    assert a100["mean_tpot_ms"] > 1.2 * h100["mean_tpot_ms"], (a100["mean_tpot_ms"], h100["mean_tpot_ms"])
    assert a100["mean_ttft_ms"] > h100["mean_ttft_ms"]


def test_sglang_bench_serving_as_the_client(model, tmp_path):
    """SGLang's own benchmark client under the same emulation writes its result in its own format."""
    port = _port(5)
    result = tmp_path / "bench.jsonl"
    client = (f"{SGLANG_PYTHON} -m sglang.bench_serving --backend sglang --host 127.0.0.1 --port {port} "
              f"--model {model} --tokenizer {model} --dataset-name random-ids --num-prompts {NUM_PROMPTS} "
              f"--random-input-len {INPUT_LEN} --random-output-len {OUTPUT_LEN} --random-range-ratio 1.0 "
              f"--request-rate 4 --seed 0 --disable-tqdm --output-file {result}")
    cmd = [SGLANG_PYTHON, "-m", "revati", "emulate", "--gpu", "h100", "--no-host-cpu", "--serve-port", str(port),
           "--client", client, "--", *_server(model, port)]
    proc = _run(cmd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    r = json.loads(result.read_text().splitlines()[-1])
    assert r["completed"] == NUM_PROMPTS and r["total_output_tokens"] == NUM_PROMPTS * OUTPUT_LEN
    # virtual time: arrivals at 4/s over ~1.5 s, and a decode step of this model is milliseconds
    assert 0.2 < r["duration"] < 20 and 0 < r["mean_tpot_ms"] < 50, {k: r[k] for k in ("duration", "mean_tpot_ms")}


@pytest.mark.parametrize("flag,schedulers", [("--tp", 2), ("--pp-size", 2), ("--dp", 2)], ids=["tp2", "pp2", "dp2"])
def test_parallel_layouts_on_two_virtual_gpus(tmp_path, flag, schedulers):
    """One scheduler process per virtual GPU (tensor parallel ranks, pipeline stages, or data
    parallel replicas behind SGLang's controller), every request complete."""
    from revati.models_zoo import write_model_dir

    model = write_model_dir("tiny-llama", tmp_path / "tiny")
    port, out, stats = _port(7 + schedulers * len(flag)), tmp_path / "serve", tmp_path / "stats"
    cmd = [SGLANG_PYTHON, "-m", "revati", "emulate", "--gpu", "h100", "--num-gpus", "2", "--serve-port", str(port),
           "--num-prompts", str(NUM_PROMPTS), "--request-rate", "4", "--random-input-len", str(INPUT_LEN),
           "--random-output-len", str(OUTPUT_LEN), "--result-dir", str(out), "--stats-dir", str(stats), "-q",
           "--", *_server(model, port, flag, "2")]
    proc = _run(cmd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["completed"] == NUM_PROMPTS and m["total_output_tokens"] == NUM_PROMPTS * OUTPUT_LEN
    summaries = [json.loads(f.read_text()) for f in stats.glob("process-*.json")]
    # the schedulers are the processes that run the model (and reported, killed as they are)
    on_gpu = [s for s in summaries if s["kernels_launched"] > 0]
    assert len(on_gpu) == schedulers, [(s["process_name"], s["kernels_launched"]) for s in summaries]


def test_a_busy_scheduler_takes_each_request_when_it_was_sent(tmp_path):
    """Note [SGLang's request check is causal]: requests arriving while the scheduler decodes back
    to back get their first token within a few steps, every one of them (the repeatable mode:
    no host time, so the spread is scheduling alone). Llama-2-7B whole: its decode steps (~7 ms
    of GPU time) take longer in virtual time than in real time, so a scheduler that does not wait
    for the others runs ahead of them."""
    from revati.models_zoo import model_dir

    port, out = _port(9), tmp_path / "busy"
    cmd = [SGLANG_PYTHON, "-m", "revati", "emulate", "--gpu", "h100", "--no-host-cpu", "--serve-port", str(port),
           "--num-prompts", "50", "--request-rate", "16", "--random-input-len", str(INPUT_LEN),
           "--random-output-len", "128", "--result-dir", str(out), "-q", "--",
           *_server(model_dir("llama-2-7b"), port)]
    proc = _run(cmd)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    ttfts = sorted(json.loads(ln)["ttft_ms"] for ln in (out / "requests.jsonl").read_text().splitlines())
    m = json.loads((out / "metrics.json").read_text())
    assert m["completed"] == 50
    # no request waits many steps behind the scheduler's clock (before: 186 ms against a median
    # of ~35 ms, Llama-3-8B at 16 req/s)
    assert ttfts[-1] < 2.5 * ttfts[len(ttfts) // 2], ttfts
