"""Note [Host-time drift filter] (revati/shim/clock.py): the program's own repeated host work
measures how slow this machine is now, and measured host time is divided by it."""
from __future__ import annotations

import pytest

from revati.shim import clock as clock_mod
from revati.shim.clock import ProcessClock


def _step(clock: ProcessClock, cpu: int, segment_ns: list[int], ops=("mm", "add", "mul", "silu")) -> int:
    """One decode-step-like pass: a top-level op after each host segment; returns the CPU reading."""
    for op, ns in zip(ops, segment_ns):
        cpu += ns
        clock.segment(op, cpu)
    return cpu


def _run(slowdown: float, drift_filter: bool = True) -> tuple[int, float]:
    clock = ProcessClock(start_ns=0)
    clock.drift_filter = drift_filter
    cpu = clock._base_cpu
    base = [100_000, 40_000, 60_000, 30_000]
    for _ in range(200):                      # the machine at its usual speed
        cpu = _step(clock, cpu, base)
    t0 = clock.now_at(cpu)
    for _ in range(1000):                     # then slower by `slowdown`, for the same work
        cpu = _step(clock, cpu, [int(ns * slowdown) for ns in base])
    return clock.now_at(cpu) - t0, clock.drift


def test_the_same_work_costs_the_same_virtual_time_when_the_machine_slows_down():
    fast, _ = _run(1.0)
    slow, drift = _run(1.15)
    assert drift == pytest.approx(1.15, rel=0.01)
    # the factor lags by half a window (the median flips after DRIFT_WINDOW / 2 slow samples):
    # those ~256 of the phase's 4,000 segments are charged at the old factor
    assert slow == pytest.approx(fast, rel=0.02)
    raw_slow, raw_drift = _run(1.15, drift_filter=False)
    assert raw_drift == 1.0 and raw_slow == pytest.approx(1.15 * fast, rel=0.01)


def test_short_segments_are_not_samples_and_the_factor_is_bounded():
    clock = ProcessClock(start_ns=0)
    cpu = clock._base_cpu
    for _ in range(500):
        cpu = _step(clock, cpu, [clock_mod.DRIFT_MIN_NS // 2] * 4)
    assert clock.drift == 1.0 and not clock._seg_ratios
    for _ in range(300):   # short keys stay out even when they run long (their slow tail is no sample)
        cpu = _step(clock, cpu, [clock_mod.DRIFT_MIN_NS * 3] * 4)
    assert clock.drift == 1.0 and not clock._seg_ratios
    long_ops = ("mm2", "add2", "mul2", "silu2")
    for _ in range(50):
        cpu = _step(clock, cpu, [50_000] * 4, long_ops)
    for _ in range(300):
        cpu = _step(clock, cpu, [50_000 * 10] * 4, long_ops)
    assert clock.drift == clock_mod.DRIFT_BOUNDS[1]


def test_the_clock_never_runs_backwards_when_the_factor_changes():
    clock = ProcessClock(start_ns=0)
    cpu = clock._base_cpu
    last = clock.now_at(cpu)
    for i in range(400):
        cpu = _step(clock, cpu, [100_000 * (1 + (i // 50) % 3 // 2)] * 4)
        now = clock.now_at(cpu)
        assert now >= last
        last = now


def test_references_persist_per_program_and_keep_the_fastest(tmp_path, monkeypatch):
    from revati.shim import host_references

    a = host_references.path_for(["vllm", "serve"])
    b = host_references.path_for(["python", "-m"])
    assert a != b and a.parent == b.parent
    host_references.save(a, {("aten.mm.default", "aten.add.Tensor"): 50_000})
    host_references.save(a, {("aten.mm.default", "aten.add.Tensor"): 70_000, ("x", "y"): 30_000})
    assert host_references.load(a) == {("aten.mm.default", "aten.add.Tensor"): 50_000, ("x", "y"): 30_000}
    assert host_references.load(b) == {}

    clock = ProcessClock(start_ns=0)          # a run that starts from them: ratios from its first segment
    clock.references = {("None", "mm"): 100_000, ("mm", "add"): 40_000}
    cpu = clock._base_cpu
    cpu += 110_000
    clock.segment("mm", cpu)
    cpu += 44_000
    clock.segment("add", cpu)
    assert clock._seg_ratios == [pytest.approx(1.1), pytest.approx(1.1)]
    assert clock.segment_references()[("mm", "add")] == 40_000


def test_a_pair_is_looked_up_in_the_references_once_when_the_run_is_slower():
    # the per-op path: a pair slower than its reference used to be looked up by name (two str()
    # calls) on every op, because only a faster time was kept
    class Op:
        names = 0

        def __init__(self, name):
            self.name = name

        def __str__(self):
            Op.names += 1
            return self.name

    mm, add = Op("mm"), Op("add")
    clock = ProcessClock(start_ns=0)
    clock.references = {("mm", "add"): 40_000, ("add", "mm"): 40_000}
    cpu = clock._base_cpu
    clock.segment(mm, cpu)
    for _ in range(10):
        cpu += 60_000
        clock.segment(add, cpu)
        cpu += 60_000
        clock.segment(mm, cpu)
    assert Op.names <= 2 * 3        # (None, mm) once, (mm, add) once, (add, mm) once
    assert clock._seg_ratios[-1] == pytest.approx(1.5)       # still measured against the reference
    assert clock.segment_references()[("mm", "add")] == 40_000
