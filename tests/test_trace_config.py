"""Tracer config validation and step marks (pure Python)."""

from __future__ import annotations

import json

import pytest

from revati.tracer import steps
from revati.tracer.config import TraceConfig


def test_config_roundtrips_through_the_injection_json():
    cfg = TraceConfig(run_id="r1", out_dir="/tmp/x", backends=("kineto", "bpf"), warmup_steps=2, bpf_libs=("/a.so",))
    back = TraceConfig.from_dict(json.loads(json.dumps({"mode": "trace", **cfg.to_dict()})))
    assert back == cfg and back.in_process_backend == "kineto"
    assert TraceConfig(run_id="r", out_dir="/x", backends=("bpf",)).in_process_backend is None


@pytest.mark.parametrize("kwargs, message", [
    ({"backends": ("nvprof",)}, "unknown backend 'nvprof'"),
    ({"backends": ("kineto", "cupti")}, "kineto and cupti"),
    ({"backends": ("bpf", "bpf")}, "listed twice"),
    ({"backends": ()}, "at least one backend"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"run_id": "a/b"}, "run id"),
    ({"run_id": ""}, "run id"),
    ({"out_dir": ""}, "out_dir"),
])
def test_config_rejects(kwargs, message):
    base = {"run_id": "r", "out_dir": "/tmp/x"}
    with pytest.raises(ValueError, match=message):
        TraceConfig(**{**base, **kwargs})


def test_step_calls_mark_the_end_of_each_step():
    assign = steps.StepMarks(marks_ns=[100, 200]).assigner()
    assert [assign(t) for t in (0, 99, 100, 150, 200, 10_000)] == [0, 0, 1, 1, 2, 2]
    assert steps.StepMarks().assigner()(5) is None


def test_step_ranges_number_ranges_and_setup_is_minus_one():
    marks = steps.StepMarks(marks_ns=[5], ranges_ns=[(100, 150), (200, 260)])
    assign = marks.assigner()  # ranges win over step() marks
    assert [assign(t) for t in (50, 100, 170, 200, 999)] == [-1, 0, 0, 1, 1]
    assert marks.count == 2


def test_mark_files_merge_across_processes_and_survive_a_cut_line(tmp_path):
    steps.append_mark_line(tmp_path, 11, {"kind": "mark", "t_ns": 10})
    steps.append_mark_line(tmp_path, 12, {"kind": "range", "start_ns": 20, "end_ns": 30})
    with open(tmp_path / "steps.12.jsonl", "a") as fh:
        fh.write('{"kind": "mark", "t_')  # a process killed mid-write
    merged = steps.read_run_marks(tmp_path)
    assert merged.marks_ns == [10] and merged.ranges_ns == [(20, 30)]
    assert steps.read_run_marks(tmp_path, exclude_pid=12).ranges_ns == []


def test_step_api_is_a_no_op_outside_tracing():
    import revati.tracer as rt

    assert rt.is_tracing() is False and rt.step() is None
    with rt.step_range():
        pass
