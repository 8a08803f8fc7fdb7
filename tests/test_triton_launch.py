"""Triton launches on virtual tensors (revati.shim.engines.triton_launch): charged, never compiled."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from revati import gpus

PROGRAM = Path(__file__).parent / "programs" / "triton_launch.py"


def _python_with_triton() -> str | None:
    if importlib.util.find_spec("triton") is not None:
        return sys.executable
    env = os.environ.get("REVATI_VLLM_PYTHON")
    default = Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"
    candidate = Path(env) if env else default
    return str(candidate) if candidate.is_file() else None


PYTHON = _python_with_triton()
pytestmark = pytest.mark.skipif(PYTHON is None, reason="needs triton (the vLLM environment has it: "
                                                         "scripts/install_vllm_env.sh or REVATI_VLLM_PYTHON)")


def test_triton_kernels_are_charged_by_the_bytes_they_touch():
    proc = subprocess.run([PYTHON, str(PROGRAM), "h100"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["launches"] == {"add_kernel": 3, "tuned_kernel": 1}   # autotuned: launched once, not benchmarked
    assert r["kernels"] == 3   # the launch inside an engine's attention is counted, not charged
    assert r["big_in_attention_ms"] < 0.05
    floor_ms = 3 * 2 * (1 << 28) / gpus.get("h100").memory_bandwidth_bytes_per_s * 1e3
    assert floor_ms < r["big_ms"] < 2 * floor_ms
    assert r["small_ms"] < 0.05
