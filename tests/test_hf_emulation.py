"""HF transformers on virtual GPUs: a Llama-2-7B-shaped model, forward, generate, generate_batch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revati import gpus

pytest.importorskip("transformers", reason="needs transformers: pip install 'revati[hf]'")
pytestmark = pytest.mark.hf
PROGRAM = Path(__file__).parent / "programs" / "hf_llama.py"


def _run(gpu: str) -> dict:
    proc = subprocess.run([sys.executable, str(PROGRAM), gpu], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs():
    return {gpu: _run(gpu) for gpu in ("h100", "a100")}


def test_model_is_llama2_7b_shaped_and_accounted_in_memory(runs):
    r = runs["h100"]
    assert r["params"] == 6_738_415_616
    assert r["weights_bytes"] <= r["allocated_bytes"] <= r["weights_bytes"] + (1 << 20)


@pytest.mark.parametrize("gpu", ["h100", "a100"])
def test_decode_step_is_bounded_by_reading_the_weights(runs, gpu):
    r = runs[gpu]
    spec = gpus.get(gpu)
    floor_ms = r["weights_bytes"] / spec.memory_bandwidth_bytes_per_s * 1e3
    steps = [s["virtual_ms"] for s in r["decode_1"]]
    assert all(floor_ms < s < 3 * floor_ms for s in steps), (floor_ms, steps)
    assert max(steps) - min(steps) < 0.01 * min(steps)  # same shape, same time


def test_a100_is_slower_than_h100_by_about_the_bandwidth_ratio(runs):
    h, a = runs["h100"]["decode_1"][-1]["virtual_ms"], runs["a100"]["decode_1"][-1]["virtual_ms"]
    bw = gpus.get("h100").memory_bandwidth_bytes_per_s / gpus.get("a100").memory_bandwidth_bytes_per_s
    assert 1.2 < a / h < bw * 1.2
    assert runs["a100"]["prefill_1x128"]["virtual_ms"] > runs["h100"]["prefill_1x128"]["virtual_ms"]


def test_generate_and_generate_batch_stop_exactly_at_max_new_tokens(runs):
    for r in runs.values():
        assert r["generate"]["shape"] == [2, 64 + 8]
        assert r["generate_batch"]["tokens"] == [8, 8, 8]
        assert r["generate_batch"]["virtual_ms"] > 8 * r["decode_1"][0]["virtual_ms"] / 2
