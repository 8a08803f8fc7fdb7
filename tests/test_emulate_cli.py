from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROGRAMS = Path(__file__).parent / "programs"


def _revati(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "revati", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=PROGRAMS)


def test_forked_and_spawned_children_are_shimmed():
    proc = _revati("emulate", "--gpu", "a100", "--", sys.executable, "children.py")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    name = "NVIDIA A100-SXM4-80GB"
    assert out["parent"] == name
    for method in ("fork", "spawn"):
        assert out[method] == {"pid": out[method]["pid"], "cuda": True, "type": "VTensor", "name": name}
    assert "emulated process(es)" in proc.stderr


def test_program_exception_propagates_with_its_own_traceback():
    proc = _revati("emulate", "-q", "--", sys.executable, "children.py", "fail")
    assert proc.returncode == 1
    assert "ValueError: boom from the program" in proc.stderr
    assert 'children.py", line' in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["emulate", "--gpu", "h900", "--", "true"], "unknown GPU 'h900'; known:"),
    (["emulate"], "give a command after --"),
    (["emulate", "--num-gpus", "0", "--", "true"], "num-gpus"),
])
def test_bad_input_is_a_one_line_error(args, message):
    proc = _revati(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_explain_shows_the_injected_setup():
    proc = _revati("emulate", "--explain", "--gpu", "l4", "--", "python", "x.py")
    assert proc.returncode == 0
    env = json.loads(proc.stdout)["environment"]
    assert json.loads(env["REVATI_INJECT"])["gpu"] == "l4"
    assert env["PYTHONPATH"].split(":")[0].endswith("inject")
