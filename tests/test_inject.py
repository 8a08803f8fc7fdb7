from __future__ import annotations

import json
import subprocess
import sys

from revati import inject


def test_injection_env_puts_sitecustomize_first(tmp_path):
    env = inject.injection_env("trace", {"out": "x"}, base_env={"PYTHONPATH": "/a:/b"})
    first, *rest = env["PYTHONPATH"].split(":")
    assert (inject.sitecustomize_dir() / "sitecustomize.py").exists()
    assert first == str(inject.sitecustomize_dir()) and rest == ["/a", "/b"]
    assert json.loads(env[inject.ENV_CONFIG]) == {"mode": "trace", "out": "x"}


def test_injected_sitecustomize_chains_to_shadowed_one(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['CHAINED'] = '1'\n")
    env = inject.injection_env("trace", {}, base_env={"PYTHONPATH": str(other), "PATH": "/usr/bin:/bin"})
    env.pop(inject.ENV_CONFIG)  # load the file but do not activate a mode
    out = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('CHAINED'))"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_a_process_revati_cannot_load_into_stops_with_one_line(tmp_path):
    # An emulation config the shim rejects: the program must not run without it (it would print
    # "Error in sitecustomize" and go on unemulated).
    env = inject.injection_env("emulate", {"gpu": "no-such-gpu"}, base_env={"PATH": "/usr/bin:/bin"})
    out = subprocess.run([sys.executable, "-c", "print('the program ran')"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    from revati._bootstrap import ACTIVATION_FAILED_EXIT

    assert out.returncode == ACTIVATION_FAILED_EXIT, out
    assert "the program ran" not in out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("revati: could not load into `-c`"), out.stderr
    assert "no-such-gpu" in lines[0] and "Traceback" not in out.stderr
