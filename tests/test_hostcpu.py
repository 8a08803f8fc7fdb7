"""Host-speed calibration (Note [Host-speed calibration] in revati/hostcpu.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from revati import hostcpu, parquet_io, paths
from revati.errors import BadInput
from revati import tables


def test_a_measurement_is_the_fastest_of_its_repeats():
    score = hostcpu.measure(repeats=3)
    assert 0.001 < score.score_s < 10
    assert score.spread >= 0
    assert score.repeats == 3 and score.cpu_model


def test_the_score_is_cached_per_machine(monkeypatch):
    calls = []
    real = hostcpu.measure

    def counting(repeats=hostcpu.DEFAULT_REPEATS):
        calls.append(repeats)
        return real(1)

    monkeypatch.setattr(hostcpu, "measure", counting)
    first = hostcpu.cached_score()
    second = hostcpu.cached_score()
    assert first == second and len(calls) == 1
    assert (paths.revati_home() / hostcpu.CACHE_FILE).exists()
    hostcpu.cached_score(remeasure=True)
    assert len(calls) == 2


def _here(score_s: float) -> hostcpu.HostScore:
    return hostcpu.HostScore(score_s, 0.0, 1, "test cpu", "3.11", "2")


def test_reference_target_scales_by_the_ratio_of_scores():
    ref = hostcpu.REFERENCE_HOSTS["revati-ci-vm"]
    target = hostcpu.resolve_target("revati-ci-vm", here=_here(ref.score_s * 2))
    assert target.speed_factor == pytest.approx(2.0)  # twice as slow here: host time halved
    assert hostcpu.resolve_target("native").speed_factor == 1.0


def test_unknown_target_names_the_known_ones():
    with pytest.raises(BadInput, match="revati-ci-vm"):
        hostcpu.resolve_target("pentium-pro", here=_here(1.0))


def test_auto_uses_the_score_traced_on_the_target_gpus_box():
    from revati.replay.kernel_db.db import traced_host_score

    def auto(gpu):
        return hostcpu.resolve_target("auto", here=_here(0.3), traced=traced_host_score(gpu))

    assert auto("a40").speed_factor == 1.0     # no trace of an A40's box records its host
    # the embedded H100 ground-truth runs (traces/gpu/h100-*) record their box's score
    assert auto("h100_sxm").speed_factor == pytest.approx(0.3 / hostcpu.REFERENCE_HOSTS["h100-box"].score_s, rel=0.01)
    row = {"run_id": "calib-test", "started_at_ns": 1, "gpu": "h100_sxm", "host": "gpu-box-1",
           "host_cpu_model": "Xeon Platinum", "host_score_s": 0.1}
    out = paths.user_traces_dir() / "calib-test" / "runs.parquet"
    parquet_io.write_table(tables.rows_to_table("runs", [row]), "runs", out)
    target = auto("h100_sxm")
    assert target.speed_factor == pytest.approx(3.0)
    assert "gpu-box-1" in target.name
    assert auto("a100_sxm_80gb").speed_factor == 1.0


BUSY = "import time\nt0 = time.perf_counter()\nsum(i * i for i in range(3_000_000))\nprint(time.perf_counter() - t0)"


def _busy_virtual_s(*args: str) -> float:
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", *args, "--", sys.executable, "-c", BUSY],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stdout.strip().splitlines()[-1])


def test_host_speed_scales_measured_host_time():
    native = _busy_virtual_s()
    faster = _busy_virtual_s("--host-speed", "4")
    assert 2.5 < native / faster < 6.0, (native, faster)


def test_calibrate_command_prints_the_score_and_the_references():
    proc = subprocess.run([sys.executable, "-m", "revati", "calibrate", "--repeats", "1", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["score_s"] > 0
    proc = subprocess.run([sys.executable, "-m", "revati", "calibrate", "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)
    assert "--host-cpu revati-ci-vm" in proc.stdout


def test_emulate_names_the_host_cpu_and_refuses_both_options(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "--host-cpu", "revati-ci-vm", "--",
                           sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "host CPU revati-ci-vm" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "--host-cpu", "revati-ci-vm", "--host-speed",
                           "2", "--", sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "not both" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "--host-cpu", "nope", "--",
                           sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "unknown host CPU 'nope'" in proc.stderr and "Traceback" not in proc.stderr
