"""No shim time in the program's clock (DESIGN §4): the first op costs what the tenth does."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

PROGRAMS = Path(__file__).parent / "programs"


def test_first_and_tenth_launch_cost_the_program_the_same():
    # Host CPU counted (the default): before, the first op was charged ~0.5 s of virtual time for
    # torch importing torch.distributed.tensor because a tensor subclass was about.
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--", sys.executable,
                           str(PROGRAMS / "first_op.py")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    durations_ms = json.loads(proc.stdout.strip().splitlines()[-1])
    first, tenth = durations_ms[0], durations_ms[-1]
    assert tenth > 0.1  # an H100 fp16 4096^3 GEMM: ~0.17 ms
    assert abs(first - tenth) < 1.0, durations_ms  # host-time noise only, not a warm-up charge


def test_revati_start_up_is_not_the_programs_time(tmp_path):
    # Activation (torch's CUDA stand-ins, the predictor, the adapters) took ~0.13 s of the
    # program's virtual time before its first line ran.
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--stats-dir", str(tmp_path), "--",
                           sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.glob("process-*.json")]
    assert summary["virtual_now_ns"] < 20_000_000, summary  # interpreter shutdown only


def test_host_share_counts_cpu_but_not_charges_or_jumps():
    from revati.shim.clock import ProcessClock

    clock = ProcessClock(start_ns=1_000)
    sum(i * i for i in range(300_000))  # some host CPU
    host = clock.host_ns()
    assert host > 0
    clock.charge(5_000_000)
    clock.advance_to(clock.now() + 50_000_000)
    assert clock.host_ns() - host < 2_000_000  # the charge and the jump are not host time
    assert ProcessClock(count_host_cpu=False).host_ns() == 0


def test_main_job_reports_its_host_time_share(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "--num-prompts", "2", "--random-output-len", "4",
                           "--result-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["host_time_share"] <= 1
    assert metrics["host_cpu"] == "native" and metrics["host_speed_factor"] == 1.0
    assert "Host CPU share of virtual time" in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]  # names the GPU, the host reference and the share
    assert re.search(r"on 1x h100_sxm; host CPU native, \d+% of virtual time", last), last
