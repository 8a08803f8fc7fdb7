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
