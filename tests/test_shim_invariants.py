"""One test per invariant of virtual time (DESIGN §4), measured by tests/programs/invariants.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from revati import gpus

PROGRAMS = Path(__file__).parent / "programs"


@pytest.fixture(scope="module")
def measured():
    proc = subprocess.run([sys.executable, str(PROGRAMS / "invariants.py"), "h100"], cwd=PROGRAMS,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_synchronize_moves_clock_by_sum_of_kernel_times(measured):
    c = measured["chain"]
    assert c["sync_ns"] == 5 * round(c["gemm_ns"])
    assert c["gemm_ns"] > 10_000  # a 2048x4096x4096 fp16 GEMM is tens of microseconds on an H100


def test_a_generic_torch_event_waits_for_the_virtual_gpu(measured):
    assert measured["generic_event"]["sync_ns"] == 3 * round(measured["chain"]["gemm_ns"])
    assert measured["generic_event"]["query"] is True


def test_launch_without_sync_moves_clock_only_by_launch_overhead(measured):
    c = measured["chain"]
    assert c["launch_ns"] == 5 * c["overhead_ns"]


@pytest.mark.parametrize("which", ["sleep", "asyncio_sleep"])
def test_sleep_is_virtual(measured, which):
    assert measured[which]["virtual_s"] == pytest.approx(30.0, abs=1e-4)  # + modelled zero-timeout polls
    assert measured[which]["wall_s"] < 0.5


def test_early_bound_clock_is_virtual(measured):
    assert measured["early_bound"]["module_delta_s"] == pytest.approx(2.0, abs=1e-6)


def test_out_of_memory_where_the_real_gpu_would(measured):
    assert measured["oom"].startswith("CUDA out of memory. Tried to allocate")
    mem = measured["memory"]
    assert mem["total"] == gpus.get("h100").memory_bytes
    assert mem["allocated"] == 64 << 20 and mem["reserved"] >= mem["allocated"]
    assert mem["free"] < mem["total"] - mem["reserved"] + 1


def test_graph_replay_charges_the_captured_total(measured):
    g = measured["graph"]
    assert g["kernels"] == 2
    assert g["replay_sync_ns"] == g["captured_ns"] > 0
